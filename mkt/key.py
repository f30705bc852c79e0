"""MasterKey: per-layer capability directions in one model's residual stream, as a value."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterator

import torch
from jaxtyping import Float
from torch import Tensor

from mkt.errors import IncompatibleModelError, NonFiniteError
from mkt.models import RESID_HOOK, ModelIdentity, model_identity
from mkt.steering import Steering


@dataclass
class MasterKey:
    """Directions ``[n_layers, width]`` for one model, plus where they came from.

    The width is d_model, or n_heads x d_head for a key at ``attn.hook_z`` (each head's
    direction in its own d_head slice).

    Keys of the same model add and subtract; a number scales them::

        combined = 0.5 * cot_key + math_key
        with combined.apply(model, alpha=0.2):
            logits = model(tokens)

    Attributes:
        directions: one row per block, read/written at ``blocks.{l}.{hook}``.
        model: identity of the model the directions live in.
        hook: the hook name within each block.
        provenance: how the key was made (n, aggregator, variant, and after a transfer the
            source model, layer map, rank, alignment method and diagnostics).
    """

    directions: Float[Tensor, "layer d"]
    model: ModelIdentity
    hook: str = RESID_HOOK
    provenance: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not torch.isfinite(self.directions).all():
            bad = (~torch.isfinite(self.directions)).any(-1).nonzero().flatten().tolist()
            raise NonFiniteError(f"NaN or inf in the key's directions at layers {bad}: the key is corrupt; "
                                 "extract (or transfer) it again")
        shape = (self.model.n_layers, self.model.width(self.hook))
        if tuple(self.directions.shape) != shape:
            raise IncompatibleModelError(
                f"directions of shape {tuple(self.directions.shape)} do not fit model "
                f"{self.model.name!r} ({shape[0]} layers x {shape[1]} at {self.hook})"
            )

    @property
    def n_layers(self) -> int:
        return self.model.n_layers

    @property
    def d_model(self) -> int:
        return self.model.d_model

    def _check_same_space(self, other: "MasterKey") -> None:
        if not self.model.fits(other.model) or self.hook != other.hook:
            raise IncompatibleModelError(
                f"cannot combine a key of {self.model.name!r} with one of {other.model.name!r}: "
                "transfer one into the other's model first"
            )

    def __add__(self, other: "MasterKey") -> "MasterKey":
        self._check_same_space(other)
        return replace(self, directions=self.directions + other.directions, provenance={"combined": True})

    def __sub__(self, other: "MasterKey") -> "MasterKey":
        return self + (-other)

    def __neg__(self) -> "MasterKey":
        return self * -1.0

    def __mul__(self, scale: float) -> "MasterKey":
        return replace(self, directions=self.directions * float(scale))

    __rmul__ = __mul__

    def norms(self) -> Float[Tensor, "layer"]:
        return self.directions.norm(dim=-1)

    def unit(self) -> "MasterKey":
        """Each layer's direction scaled to unit norm."""
        return replace(self, directions=self.directions / self.norms().clamp_min(1e-30)[:, None])

    def cosine(self, other: "MasterKey") -> Float[Tensor, "layer"]:
        """Per-layer cosine similarity with a key of the same model."""
        self._check_same_space(other)
        return torch.nn.functional.cosine_similarity(self.directions, other.directions, dim=-1)

    def check_fits(self, model) -> None:
        """Raise a clear error unless this key can be applied to ``model``."""
        target = model_identity(model)
        if not self.model.fits(target):
            raise IncompatibleModelError(
                f"this key was made for {self.model.name!r} ({self.n_layers} layers, d_model "
                f"{self.d_model}) but the model is {target.name!r} ({target.n_layers} layers, "
                f"d_model {target.d_model}): transfer it with mkt.transfer(key, alignment) first"
            )

    def steering(self, alpha: float | Tensor = 0.1, mode: str = "norm-preserving",
                 layers: list[int] | None = None, scope: str = "prompt-last") -> Steering:
        return Steering(self.directions, alpha=alpha, mode=mode, layers=layers, scope=scope, hook=self.hook)

    @contextmanager
    def apply(self, model, alpha: float | Tensor = 0.1, mode: str = "norm-preserving",
              layers: list[int] | None = None, scope: str = "prompt-last") -> Iterator:
        """Steer ``model`` with this key while the context is open."""
        self.check_fits(model)
        with self.steering(alpha, mode, layers, scope).attach(model) as hooks:
            yield hooks


def random_like(key: MasterKey, seed: int) -> MasterKey:
    """A random direction per layer with the key's per-layer norms (a control)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(key.directions.shape, generator=g, dtype=torch.float64).to(key.directions.dtype)
    noise = noise / noise.norm(dim=-1, keepdim=True) * key.norms()[:, None]
    return replace(key, directions=noise, provenance={"random_seed": seed, "like": key.provenance})
