"""The TransformerLens engine: mkt's own decoding loop over a ``TransformerBridge``."""

from __future__ import annotations

import hashlib

from mkt.engines.base import Engine
from mkt.generation import Generation, GenerationRequest, run
from mkt.models import ModelIdentity, model_identity


class TransformerLensEngine(Engine):
    """Generation through :func:`mkt.generation.generate` on a bridge (hooks at ``hook_resid_post``).

    Args:
        model: a TransformerBridge (``mkt.load_model``).
    """

    name = "transformer_lens"

    def __init__(self, model) -> None:
        self.model = model
        self.tokenizer = model.tokenizer

    @property
    def identity(self) -> ModelIdentity:
        return model_identity(self.model)

    def run(self, prompts: list[str], request: GenerationRequest) -> list[Generation]:
        return run(self.model, prompts, request)

    def weights_digest(self) -> str:
        # every parameter's name, shape and first values: cheap on a 14B model, and different for other weights
        weights = hashlib.sha256()
        for name, param in self.model.named_parameters():
            flat = param.detach().reshape(-1)[:64].float().cpu()
            weights.update(f"{name}:{tuple(param.shape)}".encode())
            weights.update(flat.numpy().tobytes())
        return weights.hexdigest()[:16]


def as_engine(model) -> Engine:
    """An engine as is; a TransformerLens bridge wrapped in the TransformerLens engine."""
    return model if isinstance(model, Engine) else TransformerLensEngine(model)
