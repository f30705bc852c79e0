"""Aggregating per-query Unlocked-minus-Locked differences into one direction per layer.

Pure tensor math: no model here.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from mkt.errors import NonFiniteError


def _check(diffs: Tensor) -> None:
    if diffs.ndim != 3:
        raise ValueError(f"differences must be [n, n_layers, d_model], got shape {tuple(diffs.shape)}")
    if diffs.shape[0] == 0:
        raise ValueError("empty prompt set: the key needs at least one query")
    if not torch.isfinite(diffs).all():
        raise NonFiniteError("NaN or inf in the activation differences: check the model's dtype")


def mean_difference(diffs: Float[Tensor, "n layer d"]) -> Float[Tensor, "layer d"]:
    """r_l = (1/n) sum_i [h_l^U(x_i) - h_l^L(x_i)]."""
    _check(diffs)
    return diffs.double().mean(0).to(diffs.dtype)


def pca_direction(diffs: Float[Tensor, "n layer d"]) -> Float[Tensor, "layer d"]:
    """First principal direction of the centred differences, per layer (unit norm).

    The sign is fixed so that <r_l, mean difference_l> >= 0 (the research code leaves it
    unfixed, which makes the key's sign arbitrary).
    """
    _check(diffs)
    if diffs.shape[0] < 2:
        raise ValueError("the PCA aggregator needs at least 2 queries (got 1); use 'mean' or add queries")
    d = diffs.double().transpose(0, 1)  # layer n d
    mean = d.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(d - mean, full_matrices=False)
    first = vh[:, 0, :]
    sign = torch.sign((first * mean[:, 0, :]).sum(-1, keepdim=True))
    sign[sign == 0] = 1.0
    return (first * sign).to(diffs.dtype)


AGGREGATORS = {"mean": mean_difference, "pca": pca_direction}


def aggregate(diffs: Float[Tensor, "n layer d"], aggregator: str) -> Float[Tensor, "layer d"]:
    """One direction per layer from per-prompt differences, by the named aggregator (``AGGREGATORS``)."""
    if aggregator not in AGGREGATORS:
        raise ValueError(f"unknown aggregator {aggregator!r}: use one of {sorted(AGGREGATORS)}")
    return AGGREGATORS[aggregator](diffs)
