"""Capability packs as lm-evaluation-harness ``steered`` files (``lm_eval/models/hf_steered.py``).

lm-eval's ``steered`` model reads a ``.pt`` dict ``{hookpoint: {"steering_vector", "steering_coefficient",
"action", "bias", "head_index"}}``; action ``add`` adds ``coefficient x vector`` to the output of
the module named ``hookpoint`` under the HF model's ``base_model`` at every position. A decoder
layer's output is TransformerLens's ``blocks.N.hook_resid_post``, so a pack in mode ``constant``
with scope ``all`` (``mkt.interop.constant_vectors``) is exact: one ``add`` entry per steered layer.
The format is a pickle (lm-eval loads it with ``torch.load``); mkt writes only tensors, floats,
strings and None into it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mkt.interop.constant_vectors import constant_vectors
from mkt.pack import CapabilityPack

LAYER_MODULE = "layers.{layer}"  # the decoder layers under base_model in Llama, Qwen2, Gemma, Mistral, OLMo ...


def steered_config(pack: CapabilityPack, layer_module: str = LAYER_MODULE) -> dict[str, dict]:
    """lm-eval's steer config for ``pack``: ``layer_module`` names block N's module (``h.{layer}`` for GPT-2)."""
    return {layer_module.format(layer=layer): dict(steering_vector=torch.from_numpy(vector.copy()),
                                                   steering_coefficient=1.0, action="add", bias=None,
                                                   head_index=None)
            for layer, vector in constant_vectors(pack, "lm-eval's steered model").items()}


def export_lm_eval_steered(pack: CapabilityPack, path: str | Path, layer_module: str = LAYER_MODULE) -> Path:
    """Write ``pack`` as an lm-eval ``steered`` ``.pt`` file (``--model steered --model_args steer_path=...``)."""
    path = Path(path)
    if path.suffix not in (".pt", ".pth"):
        raise ValueError(f"{path}: lm-eval reads steer files ending in .pt or .pth only: name it {path.stem}.pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(steered_config(pack, layer_module), path)
    return path
