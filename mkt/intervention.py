"""The intervention formulas: how a direction changes a residual-stream vector.

Pure tensor math. ``alpha`` broadcasts against ``h[..., :1]`` (a scalar, or one value per
batch row shaped ``[batch, 1]`` / ``[batch, 1, 1]``).
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor


def norm_preserving(
    h: Float[Tensor, "... d"], unit: Float[Tensor, "d"], alpha: Tensor | float
) -> Float[Tensor, "... d"]:
    """The paper's rotation toward the key, keeping ||h||.

    h~ = h/||h|| + alpha * u;  h' = ||h|| * h~/||h~||
    """
    norm = h.norm(dim=-1, keepdim=True)
    tilted = h / norm.clamp_min(1e-12) + alpha * unit
    return norm * tilted / tilted.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def additive(
    h: Float[Tensor, "... d"], unit: Float[Tensor, "d"], alpha: Tensor | float
) -> Float[Tensor, "... d"]:
    """h' = h + alpha * ||h|| * u: a push whose size scales with the activation."""
    return h + alpha * h.norm(dim=-1, keepdim=True) * unit


def constant(
    h: Float[Tensor, "... d"], vector: Float[Tensor, "d"], alpha: Tensor | float
) -> Float[Tensor, "... d"]:
    """h' = h + alpha * v: the same push at every token whatever ||h|| (a llama.cpp control vector).

    ``vector`` keeps the key's own per-layer norm (the other modes get a unit vector), so a
    control vector's per-layer scales survive an import.
    """
    return h + alpha * vector


MODES = {"norm-preserving": norm_preserving, "additive": additive, "constant": constant}
UNSCALED_MODES = ("constant",)  # the formula gets the direction as it is, not scaled to unit norm


def check_mode(mode: str) -> str:
    """``mode`` when it is one of ``MODES``; a clear error otherwise."""
    if mode not in MODES:
        raise ValueError(f"unknown intervention mode {mode!r}: use one of {sorted(MODES)}")
    return mode
