"""lm-eval's steered file: lm-eval's own ``steer`` hooks on the plain HF model reproduce mkt's steering."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mkt.interop.lm_eval_steered import export_lm_eval_steered
from mkt.key import MasterKey
from mkt.models import model_identity
from mkt.pack import CapabilityPack
from tests.conftest import PROMPTS


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                    reason="lm_eval is not importable: pip install 'mkt[lm-eval]'")
def test_lm_eval_steer_hooks_match_mkt(tiny_models, tiny_dirs, tmp_path):
    from lm_eval.models.hf_steered import SteeredModel, steer
    from transformers import AutoModelForCausalLM

    model = tiny_models["qwen2"]
    ident = model_identity(model)
    directions = torch.randn(ident.n_layers, ident.d_model, generator=torch.Generator().manual_seed(2)) * 3
    pack = CapabilityPack(MasterKey(directions, ident), 0.8, "constant", "all", [0, 2])
    config = torch.load(export_lm_eval_steered(pack, tmp_path / "s.pt"), weights_only=True)
    assert sorted(config) == ["layers.0", "layers.2"]
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs["qwen2"], dtype=torch.float32)
    hooks = {name: lambda acts, v=c["steering_vector"] * c["steering_coefficient"]: SteeredModel.add(acts, v, None)
             for name, c in config.items()}
    ids = model.to_tokens(PROMPTS[2])
    with torch.no_grad(), steer(hf, hooks):
        expected = hf(ids).logits
    with torch.no_grad():
        plain = hf(ids).logits
    with pack.apply(model):
        steered = model(ids)
    assert (expected - plain).abs().max() > 1e-2
    torch.testing.assert_close(steered, expected, atol=1e-4, rtol=1e-4)


def test_refuses_other_suffix(tiny_models, tmp_path):
    ident = model_identity(tiny_models["qwen2"])
    pack = CapabilityPack(MasterKey(torch.ones(ident.n_layers, ident.d_model), ident), 1.0, "constant", "all")
    with pytest.raises(ValueError, match="s.pt"):
        export_lm_eval_steered(pack, tmp_path / "s.bin")
