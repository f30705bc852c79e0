"""repeng reads mkt's control vectors back (``ControlVector.import_gguf``) with the same layers,
values and model hint."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from mkt.interop.control_vector import export_control_vector
from mkt.key import MasterKey
from mkt.models import ModelIdentity
from mkt.pack import CapabilityPack


@pytest.mark.skipif(importlib.util.find_spec("repeng") is None, reason="repeng is not importable: pip install repeng")
def test_repeng_imports_mkt_files(tmp_path):
    if not hasattr(np, "float_"):  # repeng 0.4.0 annotates with np.float_, gone in NumPy 2
        np.float_ = np.float64
    from repeng import ControlVector

    ident = ModelIdentity("SmolLM2-135M-Instruct", "LlamaForCausalLM", 5, 48, 100)
    directions = torch.randn(5, 48, generator=torch.Generator().manual_seed(4))
    pack = CapabilityPack(MasterKey(directions, ident), 0.5, "constant", "all", [1, 2, 4])
    vector = ControlVector.import_gguf(str(export_control_vector(pack, tmp_path / "k.gguf")))
    assert vector.model_type == "llama" and sorted(vector.directions) == [1, 2, 4]
    for n in (1, 2, 4):
        np.testing.assert_array_equal(vector.directions[n], (0.5 * directions[n].double()).float().numpy())
