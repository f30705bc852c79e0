"""Null keys: what a transferred key must beat before anyone believes it.

Each function returns keys in the Target's space that share everything with the transferred
key except the one thing under test, so that "the key worked" can be told apart from "any
direction pushed the same way would have worked":

- ``subspace_matched_null``: random *Source* directions with the key's per-layer norms,
  pushed through the very same alignment. They live in the same top-k subspace and get the
  same map, so they reproduce whatever the map alone does to any vector (the failure of the
  first organisms, where a Locked-only map sent every direction toward one nuisance axis).
- ``isotropic_null``: random *Target* directions with the transferred key's norms, or unit
  norms (the weakest control: it only rules out "any push at all").
- a nuisance contrast (``mkt.extract.extract_contrast_key`` on the Source, then
  ``mkt.transfer``): a direction known to be beside the point, e.g. long minus short
  questions.
- ``target_principal_keys``: the Target's own top principal directions of its Locked
  states, both signs, for a dev-chosen search (``mkt.significance``'s ``searches``). It
  needs no Source at all: when the capability axis is a top axis of Locked variance, this
  search finds it, and a transfer that does no better has added at most a sign;
  ``principal_keys_like`` scales them to a key's norms.
- ``top_principal_directions``: each layer's own top principal directions of some states
  (a Target-only family for ablations and patching).
- ``size_matched_noise``: isotropic vectors with the row norms of a set of differences.

Pure tensor math over keys, alignments and activations, no model I/O.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from jaxtyping import Float
from torch import Tensor

from mkt.alignment import SubspaceAlignment, transfer
from mkt.key import MasterKey, random_like
from mkt.models import RESID_HOOK, ModelIdentity


def subspace_matched_null(source_key: MasterKey, alignment: SubspaceAlignment, n: int = 20,
                          seed: int = 0) -> list[MasterKey]:
    """``n`` random Source keys with the key's per-layer norms, transferred by ``alignment``."""
    if n < 1:
        raise ValueError(f"a null needs at least one draw, got n={n}")
    return [
        transfer(replace(random_like(source_key, seed + i), provenance=dict(null="subspace-matched", seed=seed + i)),
                 alignment)
        for i in range(n)
    ]


def isotropic_null(target_key: MasterKey, n: int = 5, seed: int = 0, unit: bool = False) -> list[MasterKey]:
    """``n`` random Target keys with the transferred key's per-layer norms, or with ``unit`` of norm 1 per layer.

    Unit draws depend on the key's shape only (not its values): for a steering mode that
    scales every direction to unit norm they steer as the key-normed ones do, and they are the
    same draws for every Source of one Target.
    """
    if n < 1:
        raise ValueError(f"a null needs at least one draw, got n={n}")
    if unit:
        like = torch.ones_like(target_key.directions) / target_key.directions.shape[-1] ** 0.5
        target_key = replace(target_key, directions=like, provenance={})
    return [replace(random_like(target_key, seed + i), provenance=dict(null="isotropic", seed=seed + i))
            for i in range(n)]


def target_principal_keys(x_locked: Float[Tensor, "n layer d"], model: ModelIdentity,
                          m: int = 8, hook: str = RESID_HOOK) -> dict[str, MasterKey]:
    """``+PC i`` and ``-PC i`` (i = 1..m) of the Target's centred Locked states, as keys.

    A rank-k map fitted on Locked prompts can only produce directions inside the Target's
    top-k Locked subspace, so the larger ``m`` (up to k), the stronger this control.

    Principal directions have arbitrary signs and can swap order between layers, so they
    are defined once, at the middle layer, and carried through depth by the prompts'
    scores: at every layer, the direction whose projection covaries with the middle
    layer's PC i scores (``X_l^T s``). ``+PC i`` is then one property of the prompts,
    read at every layer, rather than an unrelated axis per layer.
    """
    width = model.width(hook)
    if x_locked.ndim != 3 or tuple(x_locked.shape[1:]) != (model.n_layers, width):
        raise ValueError(f"x_locked must be [n, {model.n_layers}, {width}] activations of {model.name!r} at {hook}")
    if not 1 <= m <= min(x_locked.shape[0], width):
        raise ValueError(f"m={m} principal directions need 1 <= m <= min(n, width)")
    x = x_locked.double() - x_locked.double().mean(0)
    reference = x[:, model.n_layers // 2]
    pcs = torch.linalg.svd(reference, full_matrices=False).Vh[:m]  # [m, d]
    keys = {}
    for i in range(m):
        scores = reference @ pcs[i]  # [n]
        d = torch.einsum("nld,n->ld", x, scores)
        d = (d / d.norm(dim=-1, keepdim=True).clamp_min(1e-30)).float()
        for sign, label in ((1.0, "+"), (-1.0, "-")):
            keys[f"{label}PC{i + 1}"] = MasterKey(sign * d, model, hook, provenance=dict(
                control="target-principal", pc=i + 1, sign=label, reference_layer=model.n_layers // 2))
    return keys


def principal_keys_like(key: MasterKey, x_locked: Float[Tensor, "n layer d"], m: int = 8) -> dict[str, MasterKey]:
    """``+PC i`` / ``-PC i`` (``target_principal_keys``) scaled to ``key``'s per-layer norms."""
    pcs = target_principal_keys(x_locked, key.model, m, key.hook)
    return {name: replace(pc, directions=pc.directions * key.norms()[:, None].to(pc.directions.dtype))
            for name, pc in pcs.items()}


def top_principal_directions(states: Float[Tensor, "n layer d"], k: int) -> Float[Tensor, "k layer d"]:
    """The top ``k`` principal directions (unit vectors) of ``states`` per layer, centred over the n rows.

    Signs are fixed so that each direction's largest-magnitude coordinate is positive.
    """
    x = states.double() - states.double().mean(0)
    _, _, vh = torch.linalg.svd(x.transpose(0, 1), full_matrices=False)  # [layer, min(n, d), d]
    pcs = vh[:, :k].transpose(0, 1)  # [k, layer, d]
    sign = torch.sign(pcs.gather(-1, pcs.abs().argmax(-1, keepdim=True)))
    return (pcs * sign).float()


def size_matched_noise(diff: Float[Tensor, "n d"], seed: int) -> Float[Tensor, "n d"]:
    """Random (isotropic) vectors with the row norms of ``diff``."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(diff.shape, generator=g, dtype=torch.float64)
    return (noise / noise.norm(dim=-1, keepdim=True) * diff.double().norm(dim=-1, keepdim=True)).to(diff.dtype)
