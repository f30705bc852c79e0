"""Which prompt positions a key is read from: pure tensor math over left-padded batches.

``last`` is the paper's (the last prompt token, where the answer is decided); ``mean`` is
the mean over the prompt's tokens; ``last-N`` the mean over its last N tokens. A leading BOS
is never averaged in: real models park a huge attention-sink state there that would
outweigh every other token of the mean.
"""

from __future__ import annotations

import re

import torch
from jaxtyping import Float, Int
from torch import Tensor

_LAST_N = re.compile(r"last-([1-9][0-9]*)")


def check_position(position: str) -> str:
    """``position`` if it is ``last``, ``mean`` or ``last-N`` (N >= 1); a clear error otherwise."""
    if position in ("last", "mean") or _LAST_N.fullmatch(position):
        return position
    raise ValueError(f"unknown position {position!r}: use 'last' (the paper's), 'mean', or 'last-N' (e.g. last-4)")


def position_weights(
    mask: Int[Tensor, "batch pos"], ids: Int[Tensor, "batch pos"], bos_id: int | None, position: str
) -> Float[Tensor, "batch pos"]:
    """Averaging weights over positions for each row (each row sums to 1).

    Args:
        mask: 1 on real tokens, 0 on left padding.
        ids: the token ids (to find a leading BOS).
        bos_id: the tokenizer's BOS id, or None.
        position: ``last``, ``mean`` or ``last-N``.
    """
    check_position(position)
    real = mask.bool().clone()
    width = real.shape[1]
    first = width - real.sum(1)  # the first real position of each row (left padding)
    if position == "last":
        w = torch.zeros_like(real, dtype=torch.float32)
        w[:, -1] = 1.0
        return w
    rows = torch.arange(real.shape[0])
    if bos_id is not None:
        has_bos = (ids[rows, first.clamp_max(width - 1)] == bos_id) & (real.sum(1) > 1)
        real[rows[has_bos], first[has_bos]] = False
    if position != "mean":
        n = int(_LAST_N.fullmatch(position).group(1))
        real &= torch.arange(width)[None, :] >= width - n
    w = real.float()
    return w / w.sum(1, keepdim=True)


def pool(acts: Float[Tensor, "batch pos d"], weights: Float[Tensor, "batch pos"]) -> Float[Tensor, "batch d"]:
    """The weighted mean of each row's states (float32)."""
    return torch.einsum("bpd,bp->bd", acts.float(), weights.to(acts.device))
