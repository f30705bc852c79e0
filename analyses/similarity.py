"""Subspace similarity between a Source and a Target: how alike are their residual streams?

METHOD.md section 5 asks for "subspace similarity between models/families (principal
angles, CKA, alignment error vs rank and vs n, spectral entropy of the difference
matrix)". This module answers it in three layers, kept apart:

* pure tensor math (float64 inside, no models): ``principal_angles``, ``top_subspace``,
  ``subspace_angles``, ``aligned_principal_angles``, ``linear_cka``, ``cka_matrix``,
  ``spectral_entropy``, ``effective_rank``;
* the analysis on activations (``subspace_similarity`` -> ``SimilarityResult``), which
  runs on any ``[n_prompts, n_layers, d_model]`` tensors, plus ``collect_activations``,
  the only function that touches models;
* plotting (``plot_similarity``) and the command line (``main``; ``add_arguments`` and
  ``run`` for reuse by ``mkt analyze similarity``)::

    python -m analyses.similarity --source organism:source-base \\
        --target organism:target-base --n 256 --out runs/similarity

Principal angles only make sense between subspaces of one space. Two models of different
widths share none, so the cross-model angle is taken in the Target's space after the
paper's alignment map (``aligned_principal_angles``); same-width models can also be
compared directly (``subspace_angles``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from analyses._common import relative_depth
from mkt.alignment import fit_alignment, relative_depth_map
from mkt.models import ModelIdentity

RESULT_FILE = "similarity.json"
PLOT_FILE = "similarity.png"
DEFAULT_KS = (1, 2, 4, 8, 16, 32)


# --- pure math ------------------------------------------------------------------------


def _orthonormal(a: Tensor, name: str) -> Tensor:
    """Orthonormal basis (QR) of the columns of ``a``, refusing dependent columns.

    Householder QR always returns orthonormal columns, but for dependent input the extra
    ones are arbitrary, so angles against them would be meaningless: refuse instead.
    """
    if a.ndim != 2 or a.shape[1] < 1:
        raise ValueError(f"basis {name} must be a 2-D [d, k] tensor with k >= 1, got shape {tuple(a.shape)}")
    a = a.double()
    if not torch.isfinite(a).all():
        raise ValueError(f"basis {name} holds NaN or inf")
    q, r = torch.linalg.qr(a)
    diag = r.diagonal().abs()
    tol = max(a.shape) * torch.finfo(torch.float64).eps * max(float(diag.max()), 1e-300) * 1e3
    if a.shape[1] > a.shape[0] or bool((diag <= tol).any()):
        rank = int(torch.linalg.matrix_rank(a))
        raise ValueError(
            f"basis {name} has {a.shape[1]} columns but spans only {rank} dimensions: pass linearly "
            "independent columns"
        )
    return q


def principal_angles(a: Float[Tensor, "d k1"], b: Float[Tensor, "d k2"]) -> Float[Tensor, "k"]:
    """Principal angles (radians, ascending) between the column spans of ``a`` and ``b``.

    Both bases are orthonormalised with QR first, so any basis of a subspace gives the same
    answer. Small angles come from the sines and large ones from the cosines (Knyazev and
    Argentati 2002), because ``arccos`` of a cosine near 1 loses half the digits.

    Args:
        a: ``[d, k1]`` basis, columns linearly independent.
        b: ``[d, k2]`` basis of a subspace of the same space.

    Returns:
        float64 tensor of ``min(k1, k2)`` angles in ``[0, pi/2]``, smallest first.

    Raises:
        ValueError: the bases live in spaces of different widths (for two models, use
            ``aligned_principal_angles``), or a basis has dependent columns.
    """
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"bases must be 2-D [d, k]; got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"the bases live in different spaces (d={a.shape[0]} vs d={b.shape[0]}): principal angles "
            "need one space; for two models of different widths use aligned_principal_angles"
        )
    qa, qb = _orthonormal(a, "a"), _orthonormal(b, "b")
    if qa.shape[1] < qb.shape[1]:  # the residual below must be taken from the smaller basis
        qa, qb = qb, qa
    cross = qa.T @ qb
    cosines = torch.linalg.svdvals(cross).clamp(0.0, 1.0)  # descending: smallest angle first
    residual = qb - qa @ cross  # part of the smaller basis outside the larger span
    sines = torch.linalg.svdvals(residual).clamp(0.0, 1.0).flip(0)  # ascending: smallest angle first
    return torch.where(cosines**2 >= 0.5, torch.arcsin(sines), torch.arccos(cosines))


def top_subspace(x: Float[Tensor, "n d"], k: int, center: bool = True) -> Float[Tensor, "d k"]:
    """Top-``k`` right singular vectors of ``x`` (float64, orthonormal columns).

    Args:
        x: ``[n, d]`` samples in rows.
        k: subspace dimension, ``1 <= k <= min(n, d)``.
        center: subtract the column means first, so the subspace describes variation across
            samples rather than the shared offset (which residual streams have in plenty).
    """
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D [n, d], got shape {tuple(x.shape)}")
    limit = min(x.shape)
    if not 1 <= k <= limit:
        raise ValueError(f"k={k} is out of range: it must be between 1 and min(n, d) = {limit}")
    x = x.double()
    if center:
        x = x - x.mean(0)
    return torch.linalg.svd(x, full_matrices=False).Vh[:k].T


def subspace_angles(
    x_a: Float[Tensor, "n d"], x_b: Float[Tensor, "m d"], k: int, center: bool = True
) -> Float[Tensor, "k"]:
    """Principal angles between the top-``k`` subspaces of two same-width activation sets.

    For two layers of one model, or two models of the same width, where "the same
    coordinates" is meaningful. Different widths raise; use ``aligned_principal_angles``.
    """
    if x_a.shape[-1] != x_b.shape[-1]:
        raise ValueError(
            f"activations of widths {x_a.shape[-1]} and {x_b.shape[-1]} share no space: use "
            "aligned_principal_angles to compare models of different widths"
        )
    return principal_angles(top_subspace(x_a, k, center), top_subspace(x_b, k, center))


def _single_pair_identities(x_s: Tensor, x_t: Tensor) -> tuple[ModelIdentity, ModelIdentity]:
    return (
        ModelIdentity("source", "unknown", 1, int(x_s.shape[1]), 0),
        ModelIdentity("target", "unknown", 1, int(x_t.shape[1]), 0),
    )


def aligned_principal_angles(
    x_s: Float[Tensor, "n d_s"],
    x_t: Float[Tensor, "n d_t"],
    k: int,
    align_k: int | None = None,
    center: bool = True,
    method: str = "lstsq",
) -> Float[Tensor, "k"]:
    """Principal angles between the Target's top-k subspace and the mapped Source top-k.

    Fits the paper's map ``T = V_sK M V_tK^T`` (``mkt.alignment.fit_alignment``) on one
    layer pair, maps the Source's top-``k`` directions into the Target's space as rows
    ``v T`` (exactly as keys are transferred), and measures the angles between their span
    and the Target's own top-``k`` subspace.

    The map is fitted at a rank ``align_k`` larger than ``k`` on purpose: the image of
    ``T`` always lies in the Target's top-``align_k`` subspace, so at ``align_k == k`` the
    angles would be zero by construction whatever the models. With the default (the
    largest rank the data allow) the mapped direction ``v_i`` is the Target activity that
    the Source's i-th principal component predicts, so small angles mean the two models'
    dominant axes of variation correspond, and large angles mean the Source's main axes
    land on minor directions of the Target.

    Args:
        x_s, x_t: ``[n, d]`` activations of the two models on the same prompts (one layer each).
        k: dimension of the compared subspaces.
        align_k: rank of the fitted map, ``k <= align_k <= min(n, d_s, d_t)``; default the maximum.
        center: the zero-centred variant (map and subspaces about the mean).
        method: alignment fit, as in ``fit_alignment`` (``lstsq`` is the paper's).

    Returns:
        float64 tensor of ``k`` angles in radians, smallest first.
    """
    if x_s.ndim != 2 or x_t.ndim != 2:
        raise ValueError(f"x_s and x_t must be 2-D [n, d]; got {tuple(x_s.shape)} and {tuple(x_t.shape)}")
    if x_s.shape[0] != x_t.shape[0]:
        raise ValueError(
            f"x_s and x_t come from {x_s.shape[0]} and {x_t.shape[0]} prompts: use the same prompts"
        )
    limit = min(x_s.shape[0], x_s.shape[1], x_t.shape[1])
    align_k = limit if align_k is None else align_k
    if not 1 <= k <= align_k <= limit:
        raise ValueError(
            f"need 1 <= k <= align_k <= min(n, d_s, d_t) = {limit}; got k={k}, align_k={align_k}"
        )
    ident_s, ident_t = _single_pair_identities(x_s, x_t)
    alignment = fit_alignment(
        x_s[:, None].float(), x_t[:, None].float(), ident_s, ident_t, align_k, method=method, center=center
    )
    v_s = top_subspace(x_s, k, center)
    image = torch.stack([alignment.map_directions(v[None].float())[0] for v in v_s.T], dim=1)
    return principal_angles(image, top_subspace(x_t, k, center))


def _centered_gram(x: Tensor) -> Tensor:
    x = x.double()
    x = x - x.mean(0)
    return x @ x.T


def linear_cka(x: Float[Tensor, "n d1"], y: Float[Tensor, "n d2"]) -> float:
    """Linear CKA (Kornblith et al. 2019) between two feature sets on the same samples.

    ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` on column-centred features. Invariant to
    orthogonal transforms and isotropic scaling of either side, and defined across widths,
    which is why it can compare a layer of one model with a layer of another.

    Returns:
        A value in [0, 1]; NaN when one side has no variance (CKA is undefined there).
    """
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"x and y must be 2-D [n, d]; got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y hold {x.shape[0]} and {y.shape[0]} samples: CKA needs the same samples")
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    # The feature-space and sample-space forms are equal; use whichever has smaller products.
    if x.shape[0] <= max(x.shape[1], y.shape[1]):
        k, l = x @ x.T, y @ y.T
        num, den = (k * l).sum(), k.norm() * l.norm()
    else:
        num, den = (y.T @ x).norm() ** 2, (x.T @ x).norm() * (y.T @ y).norm()
    if float(den) == 0.0:
        return float("nan")
    return float(num / den)


def cka_matrix(
    x: Float[Tensor, "n layer_a d_a"], y: Float[Tensor, "n layer_b d_b"]
) -> Float[Tensor, "layer_a layer_b"]:
    """Linear CKA between every layer of ``x`` and every layer of ``y`` (float64).

    Each layer's centred Gram matrix is built once and normalised, so the whole heatmap is
    one matrix product instead of ``L_a * L_b`` CKA calls.
    """
    if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must be [n, layers, d] on the same n prompts; got {tuple(x.shape)} and {tuple(y.shape)}"
        )

    def unit_grams(acts: Tensor) -> Tensor:
        grams = torch.stack([_centered_gram(acts[:, layer]).flatten() for layer in range(acts.shape[1])])
        norms = grams.norm(dim=1, keepdim=True)
        return torch.where(norms > 0, grams / norms.clamp_min(1e-300), torch.full_like(grams, float("nan")))

    return unit_grams(x) @ unit_grams(y).T


def spectral_entropy(diffs: Float[Tensor, "n d"], center: bool = True) -> float:
    """Shannon entropy (nats) of the normalised squared singular values of ``diffs``.

    Applied to the Unlocked-minus-Locked difference matrix it says how many directions the
    capability change spreads over: 0 when every difference lies on one line (a single
    master key explains it), ``log r`` for ``r`` equally strong orthogonal directions.

    Args:
        diffs: ``[n, d]`` rows ``h^U(x_i) - h^L(x_i)``.
        center: subtract the mean difference first (as the PCA aggregator does), so the
            entropy describes how the differences vary around the mean key. Note that a
            difference identical on every prompt then leaves nothing (NaN).

    Returns:
        The entropy; NaN when the (centred) matrix is zero.
    """
    if diffs.ndim != 2:
        raise ValueError(f"diffs must be 2-D [n, d], got shape {tuple(diffs.shape)}")
    d = diffs.double()
    if center:
        d = d - d.mean(0)
    power = torch.linalg.svdvals(d) ** 2
    total = power.sum()
    if float(total) == 0.0 or not torch.isfinite(total):
        return float("nan")
    p = power / total
    p = p[p > 0]  # 0 log 0 = 0
    return float(-(p * p.log()).sum()) + 0.0  # + 0.0 turns -0.0 (all terms zero) into 0.0


def effective_rank(diffs: Float[Tensor, "n d"], center: bool = True) -> float:
    """``exp(spectral_entropy)`` (Roy and Vetterli 2007): 1 for rank one, r for r equal directions."""
    return math.exp(spectral_entropy(diffs, center))


# --- analysis on activations ------------------------------------------------------------


@dataclass
class SimilarityResult:
    """Every similarity measure between a Source and a Target, as numpy arrays.

    Attributes:
        source_layers, target_layers: layer indices, ``[L_s]`` and ``[L_t]``.
        layer_map: relative-depth source layer of each target layer, ``[L_t]``.
        cka: ``[L_s, L_t]`` linear CKA of the Locked activations over all layer pairs.
        mean_angle_deg: ``[L_t]`` mean aligned principal angle (degrees) at matched pairs.
        error_vs_k: ``{k: [L_t]}`` held-out relative alignment error at matched pairs.
        error_vs_n: ``{n: [L_t]}`` the same at rank ``k_for_n`` with ``n`` fitting prompts.
        spectral_entropy_source, spectral_entropy_target: ``[L_s]``, ``[L_t]`` entropy of
            each model's Unlocked-minus-Locked difference matrix per layer.
        ks, ns: the ranks and prompt counts actually measured.
    """

    source_name: str
    target_name: str
    source_layers: np.ndarray
    target_layers: np.ndarray
    layer_map: np.ndarray
    cka: np.ndarray
    mean_angle_deg: np.ndarray
    error_vs_k: dict[int, np.ndarray]
    error_vs_n: dict[int, np.ndarray]
    spectral_entropy_source: np.ndarray
    spectral_entropy_target: np.ndarray
    ks: np.ndarray
    ns: np.ndarray
    k_for_n: int
    k_angles: int
    n_prompts: int
    n_train: int
    n_heldout: int
    center: bool
    method: str
    seed: int
    notes: list[str] = field(default_factory=list)

    _ARRAYS = ("source_layers", "target_layers", "layer_map", "cka", "mean_angle_deg",
               "spectral_entropy_source", "spectral_entropy_target", "ks", "ns")
    _SCALARS = ("source_name", "target_name", "k_for_n", "k_angles", "n_prompts", "n_train",
                "n_heldout", "center", "method", "seed")

    def to_json(self) -> dict:
        """Plain lists and numbers; NaN becomes None (strict JSON has no NaN)."""

        def clean(x):
            if isinstance(x, list):
                return [clean(v) for v in x]
            return None if isinstance(x, float) and not math.isfinite(x) else x

        out = {name: getattr(self, name) for name in self._SCALARS}
        out.update({name: clean(np.asarray(getattr(self, name)).tolist()) for name in self._ARRAYS})
        for name in ("error_vs_k", "error_vs_n"):
            out[name] = {str(k): clean(np.asarray(v).tolist()) for k, v in getattr(self, name).items()}
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "SimilarityResult":
        def nan_for_none(x):
            return [nan_for_none(v) for v in x] if isinstance(x, list) else (np.nan if x is None else x)

        def arr(v, dtype=float) -> np.ndarray:
            return np.array(nan_for_none(v), dtype=float).astype(dtype)

        ints = {"source_layers", "target_layers", "layer_map", "ks", "ns"}
        kwargs = {name: data[name] for name in cls._SCALARS}
        kwargs.update({name: arr(data[name], int if name in ints else float) for name in cls._ARRAYS})
        for name in ("error_vs_k", "error_vs_n"):
            kwargs[name] = {int(k): arr(v) for k, v in data[name].items()}
        return cls(notes=list(data.get("notes", [])), **kwargs)

    def save(self, directory: str | Path) -> Path:
        """Write ``similarity.json`` into ``directory``; returns its path."""
        path = Path(directory) / RESULT_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=1))
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "SimilarityResult":
        path = Path(directory)
        path = path / RESULT_FILE if path.is_dir() else path
        return cls.from_json(json.loads(path.read_text()))

    def summary(self) -> dict:
        """A few headline numbers (means over target layers)."""
        matched = self.cka[self.layer_map, self.target_layers]

        def mean(a) -> float:
            return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")

        return dict(
            source=self.source_name, target=self.target_name, n_prompts=self.n_prompts,
            mean_matched_cka=mean(matched), mean_angle_deg=mean(self.mean_angle_deg),
            error_vs_k={int(k): mean(v) for k, v in self.error_vs_k.items()},
            error_vs_n={int(n): mean(v) for n, v in self.error_vs_n.items()},
            mean_entropy_source=mean(self.spectral_entropy_source),
            mean_entropy_target=mean(self.spectral_entropy_target),
        )


def _check_inputs(x_s_locked, x_t_locked, x_s_unlocked, x_t_unlocked) -> None:
    named = dict(x_s_locked=x_s_locked, x_t_locked=x_t_locked, x_s_unlocked=x_s_unlocked,
                 x_t_unlocked=x_t_unlocked)
    for name, x in named.items():
        if x.ndim != 3:
            raise ValueError(f"{name} must be [n_prompts, n_layers, d_model], got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} holds NaN or inf: check the model's dtype")
    if x_s_locked.shape != x_s_unlocked.shape or x_t_locked.shape != x_t_unlocked.shape:
        raise ValueError(
            "Locked and Unlocked activations of one model must have the same shape (same prompts): "
            f"Source {tuple(x_s_locked.shape)} vs {tuple(x_s_unlocked.shape)}, "
            f"Target {tuple(x_t_locked.shape)} vs {tuple(x_t_unlocked.shape)}"
        )
    if x_s_locked.shape[0] != x_t_locked.shape[0]:
        raise ValueError(
            f"Source and Target activations come from {x_s_locked.shape[0]} and {x_t_locked.shape[0]} "
            "prompts: run both models on the same prompts"
        )


def default_ns(n_train: int, k: int) -> list[int]:
    """Prompt counts doubling from ``k`` (the least a rank-k fit needs) up to ``n_train``."""
    ns, n = [], k
    while n < n_train:
        ns.append(n)
        n *= 2
    return ns + [n_train]


def subspace_similarity(
    x_s_locked: Float[Tensor, "n layer_s d_s"],
    x_t_locked: Float[Tensor, "n layer_t d_t"],
    x_s_unlocked: Float[Tensor, "n layer_s d_s"],
    x_t_unlocked: Float[Tensor, "n layer_t d_t"],
    source_name: str = "source",
    target_name: str = "target",
    ks: tuple[int, ...] | list[int] = DEFAULT_KS,
    ns: tuple[int, ...] | list[int] | None = None,
    k_for_n: int = 8,
    heldout_fraction: float = 0.25,
    seed: int = 0,
    k_angles: int | None = None,
    center: bool = True,
    method: str = "lstsq",
) -> SimilarityResult:
    """All similarity measures from last-token residuals of both models on the same prompts.

    The Locked activations are the alignment set (as in the paper's protocol); the
    Unlocked ones only enter the difference matrices. The prompts are split once, with
    ``seed``: alignment maps and angles are fitted on the train part, errors are measured
    on the held-out part. CKA and spectral entropy use every prompt (nothing is fitted).

    Args:
        x_s_locked, x_s_unlocked: Source ``[n, L_s, d_s]`` under the Locked / Unlocked template.
        x_t_locked, x_t_unlocked: Target ``[n, L_t, d_t]``, same prompts in the same order.
        source_name, target_name: labels for the result and the plot.
        ks: alignment ranks for ``error_vs_k``; ranks above ``min(n_train, d_s, d_t)`` are
            skipped with a warning.
        ns: fitting-prompt counts for ``error_vs_n`` (nested subsets of the train split);
            default doubles from ``k_for_n`` up to the train size.
        k_for_n: rank used for ``error_vs_n`` (lowered with a warning if the data allow less).
        heldout_fraction: share of prompts held out, in (0, 1).
        seed: seed of the split.
        k_angles: dimension of the subspaces compared by principal angles; default ``k_for_n``.
        center: zero-centred alignment and subspaces (default), so every measure is about
            variation across prompts rather than the large shared mean of the residual
            stream; ``False`` gives the paper's uncentred map.
        method: alignment fit (``lstsq``, ``procrustes``, ``ridge``).
    """
    _check_inputs(x_s_locked, x_t_locked, x_s_unlocked, x_t_unlocked)
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    n, n_ls, d_s = x_s_locked.shape
    _, n_lt, d_t = x_t_locked.shape
    n_held = int(round(heldout_fraction * n))
    n_train = n - n_held
    if n_held < 2 or n_train < 2:  # the error's denominator is the held-out spread: needs 2 rows
        raise ValueError(
            f"{n} prompts split {n_train} train / {n_held} held out: both parts need at least 2 "
            "prompts; use more prompts or change heldout_fraction"
        )
    notes: list[str] = []

    def note(msg: str) -> None:
        warnings.warn(msg, stacklevel=3)
        notes.append(msg)

    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train, held = perm[:n_train], perm[n_train:]
    xs, xt = x_s_locked.float(), x_t_locked.float()
    ident_s = ModelIdentity(source_name, "unknown", n_ls, d_s, 0)
    ident_t = ModelIdentity(target_name, "unknown", n_lt, d_t, 0)
    layer_map = relative_depth_map(n_ls, n_lt)
    limit = min(n_train, d_s, d_t)

    def heldout_error(idx: Tensor, k: int) -> np.ndarray:
        al = fit_alignment(xs[idx], xt[idx], ident_s, ident_t, k, method=method, center=center,
                           layer_map=layer_map)
        return al.relative_error(xs[held], xt[held]).double().numpy()

    kept_ks = [int(k) for k in ks if 1 <= int(k) <= limit]
    if len(kept_ks) < len(ks):
        note(f"skipped ranks {[k for k in ks if int(k) not in kept_ks]}: k must be in 1..min(n_train="
             f"{n_train}, d_s={d_s}, d_t={d_t}) = {limit}")
    error_vs_k = {k: heldout_error(train, k) for k in kept_ks}

    if k_for_n > limit:
        note(f"k_for_n={k_for_n} lowered to {limit} = min(n_train, d_s, d_t)")
        k_for_n = limit
    requested_ns = default_ns(n_train, k_for_n) if ns is None else [int(m) for m in ns]
    kept_ns = [m for m in requested_ns if k_for_n <= m <= n_train]
    if len(kept_ns) < len(requested_ns):
        note(f"skipped prompt counts {[m for m in requested_ns if m not in kept_ns]}: n must be in "
             f"k_for_n={k_for_n}..n_train={n_train}")
    error_vs_n = {m: heldout_error(train[:m], k_for_n) for m in kept_ns}

    k_angles = k_for_n if k_angles is None else min(int(k_angles), limit)
    angles = []
    for lt, ls in enumerate(layer_map):
        try:
            theta = aligned_principal_angles(xs[train, ls], xt[train, lt], k_angles, center=center, method=method)
            angles.append(float(torch.rad2deg(theta).mean()))
        except ValueError as err:  # e.g. the map collapses source directions: no angle to report
            note(f"no principal angles at target layer {lt}: {err}")
            angles.append(float("nan"))

    diffs_s = (x_s_unlocked - x_s_locked).double()
    diffs_t = (x_t_unlocked - x_t_locked).double()
    return SimilarityResult(
        source_name=source_name, target_name=target_name,
        source_layers=np.arange(n_ls), target_layers=np.arange(n_lt), layer_map=np.array(layer_map),
        cka=cka_matrix(xs, xt).numpy(), mean_angle_deg=np.array(angles),
        error_vs_k=error_vs_k, error_vs_n=error_vs_n,
        spectral_entropy_source=np.array([spectral_entropy(diffs_s[:, layer], center) for layer in range(n_ls)]),
        spectral_entropy_target=np.array([spectral_entropy(diffs_t[:, layer], center) for layer in range(n_lt)]),
        ks=np.array(kept_ks, dtype=int), ns=np.array(kept_ns, dtype=int), k_for_n=int(k_for_n),
        k_angles=int(k_angles), n_prompts=int(n), n_train=int(n_train), n_heldout=int(n_held),
        center=bool(center), method=method, seed=int(seed), notes=notes,
    )


# --- model I/O ---------------------------------------------------------------------------


class Activations(NamedTuple):
    """Last-token residuals ``[n, L, d]`` of both models under both templates."""

    x_s_locked: Tensor
    x_t_locked: Tensor
    x_s_unlocked: Tensor
    x_t_unlocked: Tensor


def collect_activations(
    source_model, target_model, questions: list[str], locked_template, unlocked_template,
    batch_size: int = 32, progress: bool = False,
) -> Activations:
    """Run both models on the Locked and Unlocked prompts of ``questions``.

    Returns the four tensors in ``subspace_similarity``'s argument order, so
    ``subspace_similarity(*collect_activations(...), ...)`` works.
    """
    from mkt.activations import last_token_resid
    from mkt.prompts import PromptTemplate

    locked = PromptTemplate.of(locked_template).format_all(questions)
    unlocked = PromptTemplate.of(unlocked_template).format_all(questions)

    def acts(model, prompts):
        return last_token_resid(model, prompts, batch_size=batch_size, progress=progress)

    return Activations(acts(source_model, locked), acts(target_model, locked),
                       acts(source_model, unlocked), acts(target_model, unlocked))


# --- plotting ----------------------------------------------------------------------------


def _depth_ticks(n_layers: int, max_ticks: int = 8) -> tuple[np.ndarray, list[str]]:
    ticks = np.unique(np.linspace(0, n_layers - 1, min(n_layers, max_ticks)).round().astype(int))
    return ticks, [f"{t / max(n_layers - 1, 1):.2f}" for t in ticks]


def plot_similarity(result: SimilarityResult, path: str | Path) -> Path:
    """One PNG with four panels: CKA heatmap, aligned angles, held-out error vs k, entropy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = result
    fig, axes = plt.subplots(2, 2, figsize=(12, 9.5), constrained_layout=True)
    fig.suptitle(
        f"Subspace similarity: {r.source_name} -> {r.target_name} "
        f"({r.n_prompts} prompts, {r.n_train} fit / {r.n_heldout} held out)"
    )
    n_ls, n_lt = len(r.source_layers), len(r.target_layers)
    depth_t = relative_depth(n_lt)

    ax = axes[0, 0]
    im = ax.imshow(r.cka, origin="lower", aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis")
    ax.plot(r.target_layers, r.layer_map, "o", mfc="white", mec="black", ms=5, ls="none",
            label="relative-depth pairs")
    for axis, n_layers in ((ax.xaxis, n_lt), (ax.yaxis, n_ls)):
        ticks, labels = _depth_ticks(n_layers)
        axis.set_ticks(ticks, labels)
    ax.set_xlabel(f"{r.target_name} layer (relative depth)")
    ax.set_ylabel(f"{r.source_name} layer (relative depth)")
    ax.set_title("Linear CKA, Locked prompts, all layer pairs")
    ax.legend(loc="upper left", fontsize=8)
    fig.colorbar(im, ax=ax, label="linear CKA")

    ax = axes[0, 1]
    ax.plot(depth_t, r.mean_angle_deg, "o-", label=f"mean of {r.k_angles} angles")
    ax.axhline(90.0, color="grey", ls=":", lw=1, label="orthogonal (90°)")
    ax.set_ylim(0, 95)
    ax.set_xlabel(f"{r.target_name} relative depth")
    ax.set_ylabel("mean principal angle (degrees)")
    ax.set_title(f"Target top-{r.k_angles} subspace vs mapped Source top-{r.k_angles}")
    ax.legend(fontsize=8)

    ax = axes[1, 0]
    if len(r.ks):
        errors = np.stack([r.error_vs_k[int(k)] for k in r.ks])  # [n_k, L_t]
        mean = np.nanmean(errors, axis=1)
        ax.fill_between(r.ks, np.nanmin(errors, axis=1), np.nanmax(errors, axis=1), alpha=0.2,
                        label="range over target layers")
        ax.plot(r.ks, mean, "o-", lw=2, label="mean over target layers")
        for lt in sorted({0, n_lt // 2, n_lt - 1}):
            ax.plot(r.ks, errors[:, lt], "--", lw=1,
                    label=f"target layer {lt} (depth {depth_t[lt]:.2f}) <- source {r.layer_map[lt]}")
        ax.set_xscale("log", base=2)
        ax.set_xticks(r.ks, [str(k) for k in r.ks])
    ax.axhline(1.0, color="grey", ls=":", lw=1, label="predicting the mean")
    ax.set_xlabel("alignment rank k")
    ax.set_ylabel("held-out relative error")
    ax.set_title(f"Alignment error vs rank ({r.method}{', centred' if r.center else ''})")
    ax.legend(fontsize=7)

    ax = axes[1, 1]
    ax.plot(relative_depth(n_ls), r.spectral_entropy_source, "o-", label=f"Source: {r.source_name}")
    ax.plot(depth_t, r.spectral_entropy_target, "s-", label=f"Target: {r.target_name}")
    ax.set_xlabel("relative depth")
    ax.set_ylabel("spectral entropy of Unlocked - Locked (nats)")
    ax.set_title("How many directions the capability change spans")
    ax.secondary_yaxis("right", functions=(np.exp, lambda e: np.log(np.clip(e, 1e-12, None)))).set_ylabel(
        "effective rank"
    )
    ax.legend(fontsize=8)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- command line ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The analysis's own flags. Model-loading flags (``--device``, ``--dtype``,
    ``--batch-size`` ...) are the caller's: ``main`` adds ``mkt.cli``'s, and ``run`` falls back
    to defaults for any that are missing."""
    parser.add_argument("--source", required=True, help="Source model: hub name, HF dir or organism:NAME")
    parser.add_argument("--target", required=True, help="Target model: hub name, HF dir or organism:NAME")
    parser.add_argument("--n", type=int, default=256, help="number of questions (default 256)")
    parser.add_argument("--out", default="runs/similarity", help="output folder (default runs/similarity)")
    parser.add_argument("--questions", default=None,
                        help="questions file (text or JSONL); default: the organism task's train problems")
    parser.add_argument("--field", default="question", help="JSONL field holding the question")
    parser.add_argument("--locked", default=None, help="Locked template with {question} (default: organism's)")
    parser.add_argument("--unlocked", default=None, help="Unlocked template with {question} (default: organism's)")
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="alignment ranks")
    parser.add_argument("--ns", type=int, nargs="+", default=None, help="fitting-prompt counts (default doubling)")
    parser.add_argument("--k-for-n", type=int, default=8, help="rank for the error-vs-n curve (default 8)")
    parser.add_argument("--heldout-fraction", type=float, default=0.25, help="held-out share (default 0.25)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train / held-out split")
    parser.add_argument("--method", choices=["lstsq", "procrustes", "ridge"], default="lstsq",
                        help="alignment fit (default lstsq, the paper's)")
    parser.add_argument("--no-center", dest="center", action="store_false",
                        help="the paper's uncentred map and subspaces (default: centred)")
    return parser


def _questions_and_templates(args) -> tuple[list[str], str, str]:
    from mkt.organisms.task import LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, problems
    from mkt.prompts import read_questions

    if args.questions is None:
        questions = [p.question for p in problems(args.n, "train", seed=3)]
        return questions, args.locked or LOCKED_TEMPLATE, args.unlocked or UNLOCKED_TEMPLATE
    if not (args.locked and args.unlocked):
        raise SystemExit("similarity: with --questions FILE also give --locked TEMPLATE and --unlocked TEMPLATE")
    return read_questions(args.questions, args.field)[: args.n], args.locked, args.unlocked


def run(args: argparse.Namespace) -> SimilarityResult:
    """Load both models, collect activations, analyse, write JSON and PNG, print a summary."""
    from mkt.models import load_model, model_identity

    def load(name: str):
        return load_model(name, device=getattr(args, "device", None), dtype=getattr(args, "dtype", "float32"),
                          device_map=getattr(args, "device_map", None), n_devices=getattr(args, "n_devices", None),
                          trust_remote_code=getattr(args, "trust_remote_code", False))

    questions, locked, unlocked = _questions_and_templates(args)
    source, target = load(args.source), load(args.target)
    acts = collect_activations(source, target, questions, locked, unlocked,
                               batch_size=getattr(args, "batch_size", 32), progress=True)
    result = subspace_similarity(
        *acts, model_identity(source).name, model_identity(target).name, ks=args.ks, ns=args.ns,
        k_for_n=args.k_for_n, heldout_fraction=args.heldout_fraction, seed=args.seed,
        center=args.center, method=args.method,
    )
    json_path = result.save(args.out)
    png_path = plot_similarity(result, Path(args.out) / PLOT_FILE)
    s = result.summary()
    print(f"similarity {s['source']} -> {s['target']} on {s['n_prompts']} prompts "
          f"({result.n_train} fit / {result.n_heldout} held out)")
    print(f"  CKA at relative-depth pairs (mean): {s['mean_matched_cka']:.3f}")
    print(f"  aligned principal angle, top-{result.k_angles} (mean): {s['mean_angle_deg']:.1f} deg")
    print("  held-out error vs k: " + "  ".join(f"k={k}: {e:.3f}" for k, e in s["error_vs_k"].items()))
    print("  held-out error vs n: " + "  ".join(f"n={m}: {e:.3f}" for m, e in s["error_vs_n"].items()))
    print(f"  spectral entropy of Unlocked-Locked (mean, nats): source {s['mean_entropy_source']:.2f}, "
          f"target {s['mean_entropy_target']:.2f}")
    print(f"wrote {json_path} and {png_path}")
    return result


def main(argv: list[str] | None = None) -> SimilarityResult:
    from mkt.cli import _model_args

    parser = argparse.ArgumentParser(
        prog="python -m analyses.similarity",
        description="Subspace similarity between two models: CKA, aligned principal angles, "
        "alignment error vs rank and n, spectral entropy of the Unlocked-Locked differences.",
    )
    add_arguments(parser)
    _model_args(parser)
    return run(parser.parse_args(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
