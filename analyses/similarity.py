"""Subspace similarity between a Source and a Target: how alike are their residual streams?

METHOD.md section 5 asks for "subspace similarity between models/families (principal
angles, CKA, alignment error vs rank and vs n, spectral entropy of the difference
matrix)". This module answers it in three layers, kept apart:

* the statistics, pure tensor functions in ``analyses.similarity_stats`` (principal
  angles, plain and debiased CKA with their permutation null, spectral entropy, the share
  along the mean difference, the shuffled-pairs reference, the sign-flip null and an isotropic Gaussian reference);
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
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from analyses._common import ModelOptions, pyplot, relative_depth
from analyses.contract import Analysis
from analyses.similarity_stats import (
    aligned_principal_angles,
    cka_matrix,
    derangement,
    isotropic_entropy,
    mean_direction_share,
    permuted_cka,
    sign_flip,
    spectral_entropy,
)
from mkt.alignment import fit_alignment, relative_depth_map
from mkt.cliargs import add_model_arguments, fraction, model_loading, nonnegative_int, positive_int
from mkt.models import ModelIdentity

RESULT_FILE = "similarity.json"
PLOT_FILE = "similarity.png"
DEFAULT_KS = (1, 2, 4, 8, 16, 32)


# --- collect (the only model I/O) -----------------------------------------------------------------


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


# --- compute -----------------------------------------------------------------------------


@dataclass
class SimilarityResult:
    """Every similarity measure between a Source and a Target, as numpy arrays.

    Attributes:
        source_layers, target_layers: layer indices, ``[L_s]`` and ``[L_t]``.
        layer_map: relative-depth source layer of each target layer, ``[L_t]``.
        cka: ``[L_s, L_t]`` linear CKA of the Locked activations over all layer pairs.
        cka_debiased: ``[L_s, L_t]`` the same from the unbiased HSIC (no finite-n inflation).
        cka_null_q95, cka_debiased_null_q95: ``[L_t]`` 95th percentile of each CKA at the
            matched pairs with the Target's prompts permuted (``n_perm`` draws): the value
            reached with no prompt-to-prompt correspondence at all.
        mean_angle_deg: ``[L_t]`` mean aligned principal angle (degrees) at matched pairs.
        error_vs_k: ``{k: [L_t]}`` held-out relative alignment error at matched pairs.
        error_vs_n: ``{n: [L_t]}`` the same at rank ``k_for_n`` with ``n`` fitting prompts.
        spectral_entropy_source, spectral_entropy_target: ``[L_s]``, ``[L_t]`` entropy of
            each model's Unlocked-minus-Locked difference matrix per layer.
        mean_share_source, mean_share_target: share of the differences' energy along the
            mean difference (the mean-aggregated key), per layer.
        *_shuffled_*: the same statistics on shuffled pairs (each Locked prompt against
            another prompt's Unlocked state; ``n_shuffles`` derangements), mean and the 5th
            (entropy: lower is the effect) or 95th (share: higher is the effect) percentile.
            Shuffling keeps the mean difference and adds between-prompt variance, so it is
            no null for the share along the mean (it cannot fail); it is kept as a reference.
        *_signflip_*: the same on the sign-flip null (each row of the difference matrix times
            a random +-1, ``n_shuffles`` draws): per-prompt energy and uncentred spectrum kept,
            no common direction. The share along the mean is tested against this one.
        spectral_entropy_isotropic_*: the entropy of a standard Gaussian matrix of the same
            n and d (per layer, the same value): what no structure at all gives.
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
    cka_debiased: np.ndarray
    cka_null_q95: np.ndarray
    cka_debiased_null_q95: np.ndarray
    spectral_entropy_shuffled_source: np.ndarray
    spectral_entropy_shuffled_target: np.ndarray
    spectral_entropy_shuffled_q05_source: np.ndarray
    spectral_entropy_shuffled_q05_target: np.ndarray
    mean_share_source: np.ndarray
    mean_share_target: np.ndarray
    mean_share_shuffled_source: np.ndarray
    mean_share_shuffled_target: np.ndarray
    mean_share_shuffled_q95_source: np.ndarray
    mean_share_shuffled_q95_target: np.ndarray
    spectral_entropy_signflip_source: np.ndarray
    spectral_entropy_signflip_target: np.ndarray
    spectral_entropy_signflip_q05_source: np.ndarray
    spectral_entropy_signflip_q05_target: np.ndarray
    spectral_entropy_isotropic_source: np.ndarray
    spectral_entropy_isotropic_target: np.ndarray
    mean_share_signflip_source: np.ndarray
    mean_share_signflip_target: np.ndarray
    mean_share_signflip_q95_source: np.ndarray
    mean_share_signflip_q95_target: np.ndarray
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
    n_perm: int
    n_shuffles: int
    notes: list[str] = field(default_factory=list)

    _PER_MODEL = ("spectral_entropy", "spectral_entropy_shuffled", "spectral_entropy_shuffled_q05", "mean_share",
                  "mean_share_shuffled", "mean_share_shuffled_q95", "spectral_entropy_signflip",
                  "spectral_entropy_signflip_q05", "spectral_entropy_isotropic", "mean_share_signflip",
                  "mean_share_signflip_q95")
    _ARRAYS = ("source_layers", "target_layers", "layer_map", "cka", "cka_debiased", "cka_null_q95",
               "cka_debiased_null_q95", "mean_angle_deg", "ks", "ns") + tuple(
        f"{stat}_{side}" for stat in _PER_MODEL for side in ("source", "target"))
    _SCALARS = ("source_name", "target_name", "k_for_n", "k_angles", "n_prompts", "n_train",
                "n_heldout", "center", "method", "seed", "n_perm", "n_shuffles")

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
            mean_matched_cka=mean(matched), mean_matched_cka_null_q95=mean(self.cka_null_q95),
            mean_matched_cka_debiased=mean(self.cka_debiased[self.layer_map, self.target_layers]),
            mean_matched_cka_debiased_null_q95=mean(self.cka_debiased_null_q95),
            mean_angle_deg=mean(self.mean_angle_deg),
            error_vs_k={int(k): mean(v) for k, v in self.error_vs_k.items()},
            error_vs_n={int(n): mean(v) for n, v in self.error_vs_n.items()},
            **{f"mean_{stat}_{side}": mean(getattr(self, f"{stat}_{side}"))
               for stat in self._PER_MODEL for side in ("source", "target")},
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
    n_perm: int = 50,
    n_shuffles: int = 20,
) -> SimilarityResult:
    """All similarity measures from last-token residuals of both models on the same prompts.

    The Locked activations are the alignment set (as in the paper's protocol); the
    Unlocked ones only enter the difference matrices. The prompts are split once, with
    ``seed``: alignment maps and angles are fitted on the train part, errors are measured
    on the held-out part. CKA and spectral entropy use every prompt (nothing is fitted).

    Every statistic comes with the same statistic under a null drawn on the same prompts:
    CKA with the Target's prompts permuted (``n_perm`` draws), and the difference-matrix
    statistics on shuffled pairs (``n_shuffles`` derangements of the Unlocked rows).

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
        n_perm: permutations for the CKA null.
        n_shuffles: shuffled pairings for the difference-matrix references and sign-flip nulls (draws of each).
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

    cka, cka_debiased = cka_matrix(xs, xt).numpy(), cka_matrix(xs, xt, debiased=True).numpy()

    def cka_null_q95(debiased: bool) -> np.ndarray:
        return np.array([float(permuted_cka(xs[:, ls], xt[:, lt], n_perm, seed + lt, debiased).quantile(0.95))
                         for lt, ls in enumerate(layer_map)])

    per_model = {}
    for side, locked, unlocked in (("source", x_s_locked, x_s_unlocked), ("target", x_t_locked, x_t_unlocked)):
        locked, unlocked = locked.double(), unlocked.double()
        shuffles = [derangement(n, seed + i) for i in range(n_shuffles)]
        diffs = unlocked - locked
        nulls = {"shuffled": lambda layer, i: unlocked[shuffles[i], layer] - locked[:, layer],
                 "signflip": lambda layer, i: sign_flip(diffs[:, layer], seed + i)}
        for stat, fn, tail in (("spectral_entropy", lambda d: spectral_entropy(d, center), 0.05),
                               ("mean_share", mean_direction_share, 0.95)):
            per_model[f"{stat}_{side}"] = np.array([fn(diffs[:, layer]) for layer in range(locked.shape[1])])
            for null_name, draw in nulls.items():
                null = np.array([[fn(draw(layer, i)) for layer in range(locked.shape[1])]
                                 for i in range(n_shuffles)])  # [n_shuffles, L]
                per_model[f"{stat}_{null_name}_{side}"] = null.mean(0)
                per_model[f"{stat}_{null_name}_q{round(100 * tail):02d}_{side}"] = np.quantile(null, tail, axis=0)
        per_model[f"spectral_entropy_isotropic_{side}"] = np.full(
            locked.shape[1], isotropic_entropy(n, locked.shape[-1], center, seed))
    return SimilarityResult(
        source_name=source_name, target_name=target_name,
        source_layers=np.arange(n_ls), target_layers=np.arange(n_lt), layer_map=np.array(layer_map),
        cka=cka, mean_angle_deg=np.array(angles), error_vs_k=error_vs_k, error_vs_n=error_vs_n,
        cka_debiased=cka_debiased, cka_null_q95=cka_null_q95(False), cka_debiased_null_q95=cka_null_q95(True),
        ks=np.array(kept_ks, dtype=int), ns=np.array(kept_ns, dtype=int), k_for_n=int(k_for_n),
        k_angles=int(k_angles), n_prompts=int(n), n_train=int(n_train), n_heldout=int(n_held),
        center=bool(center), method=method, seed=int(seed), n_perm=int(n_perm), n_shuffles=int(n_shuffles),
        notes=notes, **per_model,
    )


# --- plotting ----------------------------------------------------------------------------


def _depth_ticks(n_layers: int, max_ticks: int = 8) -> tuple[np.ndarray, list[str]]:
    ticks = np.unique(np.linspace(0, n_layers - 1, min(n_layers, max_ticks)).round().astype(int))
    return ticks, [f"{t / max(n_layers - 1, 1):.2f}" for t in ticks]


def plot_similarity(result: SimilarityResult, path: str | Path) -> Path:
    """One PNG, six panels: debiased CKA heatmap; matched-pair CKA against its permutation null;
    aligned angles; held-out error vs k; spectral entropy and mean-direction share, each
    against its shuffled-pairs reference, its sign-flip null and (entropy) an isotropic Gaussian."""
    plt = pyplot()

    r = result
    fig, axes = plt.subplots(2, 3, figsize=(16, 9), constrained_layout=True)
    fig.suptitle(
        f"Subspace similarity: {r.source_name} -> {r.target_name} "
        f"({r.n_prompts} prompts, {r.n_train} fit / {r.n_heldout} held out)"
    )
    n_ls, n_lt = len(r.source_layers), len(r.target_layers)
    depth_s, depth_t = relative_depth(n_ls), relative_depth(n_lt)

    ax = axes[0, 0]
    im = ax.imshow(r.cka_debiased, origin="lower", aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis")
    ax.plot(r.target_layers, r.layer_map, "o", mfc="white", mec="black", ms=5, ls="none",
            label="relative-depth pairs")
    for axis, n_layers in ((ax.xaxis, n_lt), (ax.yaxis, n_ls)):
        ticks, labels = _depth_ticks(n_layers)
        axis.set_ticks(ticks, labels)
    ax.set_xlabel(f"{r.target_name} layer (relative depth)")
    ax.set_ylabel(f"{r.source_name} layer (relative depth)")
    ax.set_title("Debiased linear CKA, Locked prompts, all layer pairs")
    ax.legend(loc="upper left", fontsize=8)
    fig.colorbar(im, ax=ax, label="debiased CKA")

    ax = axes[0, 1]
    matched = (r.layer_map, r.target_layers)
    for values, null, style, label in ((r.cka, r.cka_null_q95, "o-", "plain CKA"),
                                       (r.cka_debiased, r.cka_debiased_null_q95, "s-", "debiased CKA")):
        line = ax.plot(depth_t, values[matched], style, label=label)[0]
        ax.plot(depth_t, null, ":", color=line.get_color(), label=f"{label}, prompts permuted (95th pct)")
    ax.set_ylim(-0.1, 1.05)
    ax.set_xlabel(f"{r.target_name} relative depth")
    ax.set_ylabel("CKA at relative-depth pairs")
    ax.set_title(f"CKA vs its permutation null on the same n={r.n_prompts}")
    ax.legend(fontsize=7)

    ax = axes[0, 2]
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
        ax.fill_between(r.ks, np.nanmin(errors, axis=1), np.nanmax(errors, axis=1), alpha=0.2,
                        label="range over target layers")
        ax.plot(r.ks, np.nanmean(errors, axis=1), "o-", lw=2, label="mean over target layers")
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

    for ax, stat, ylabel, title in (
        (axes[1, 1], "spectral_entropy", "spectral entropy of Unlocked - Locked (nats)",
         "How many directions the change spans (lower: fewer)"),
        (axes[1, 2], "mean_share", "share of difference energy along the mean",
         "How much of the change lies along the mean key"),
    ):
        q = "q05" if stat == "spectral_entropy" else "q95"
        for side, depth, style in (("source", depth_s, "o-"), ("target", depth_t, "s-")):
            name = r.source_name if side == "source" else r.target_name
            line = ax.plot(depth, getattr(r, f"{stat}_{side}"), style, label=f"{side}: {name}")[0]
            ax.plot(depth, getattr(r, f"{stat}_shuffled_{side}"), ":", color=line.get_color(),
                    label=f"{side}, shuffled pairs (mean)")
            ax.plot(depth, getattr(r, f"{stat}_signflip_{q}_{side}"), "--", color=line.get_color(),
                    label=f"{side}, sign-flip null ({'5th' if q == 'q05' else '95th'} pct)")
            if stat == "spectral_entropy":
                ax.plot(depth, getattr(r, f"spectral_entropy_isotropic_{side}"), "-.", color="grey", lw=1,
                        label="isotropic Gaussian, same n and d" if side == "source" else None)
        ax.set_xlabel("relative depth")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=7)
    axes[1, 1].secondary_yaxis("right", functions=(np.exp, lambda e: np.log(np.clip(e, 1e-12, None)))).set_ylabel(
        "effective rank")
    axes[1, 2].set_ylim(0, 1.02)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- command line ------------------------------------------------------------------------


@dataclass(frozen=True)
class SimilarityOptions(ModelOptions):
    """The similarity analysis's options (``add_arguments``): the two models, the questions and the grids."""

    batch_size: int
    source: str
    target: str
    n: int
    out: str
    questions: str | None
    field: str
    locked: str | None
    unlocked: str | None
    ks: list[int]
    ns: list[int] | None
    k_for_n: int
    heldout_fraction: float
    seed: int
    method: str
    n_perm: int
    n_shuffles: int
    center: bool


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The analysis's flags, the shared model-loading group (``--device``, ``--dtype``, ``--batch-size`` ...) among them."""
    parser.add_argument("--source", required=True, help="Source model: hub name, HF dir or organism:NAME")
    parser.add_argument("--target", required=True, help="Target model: hub name, HF dir or organism:NAME")
    parser.add_argument("--n", type=positive_int, default=256, help="number of questions (default 256)")
    parser.add_argument("--out", default="runs/similarity", help="output folder (default runs/similarity)")
    parser.add_argument("--questions", default=None,
                        help="questions file (text or JSONL); default: the organism task's train problems")
    parser.add_argument("--field", default="question", help="JSONL field holding the question")
    parser.add_argument("--locked", default=None, help="Locked template with {question} (default: organism's)")
    parser.add_argument("--unlocked", default=None, help="Unlocked template with {question} (default: organism's)")
    parser.add_argument("--ks", type=positive_int, nargs="+", default=list(DEFAULT_KS), help="alignment ranks")
    parser.add_argument("--ns", type=positive_int, nargs="+", default=None, help="fitting-prompt counts (default doubling)")
    parser.add_argument("--k-for-n", type=positive_int, default=8, help="rank for the error-vs-n curve (default 8)")
    parser.add_argument("--heldout-fraction", type=fraction, default=0.25, help="held-out share (default 0.25)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train / held-out split")
    parser.add_argument("--method", choices=["lstsq", "procrustes", "ridge"], default="lstsq",
                        help="alignment fit (default lstsq, the paper's)")
    parser.add_argument("--n-perm", type=nonnegative_int, default=50, help="permutations for the CKA null (default 50)")
    parser.add_argument("--n-shuffles", type=nonnegative_int, default=20,
                        help="draws of the shuffled-pairs reference and of the sign-flip null of the difference matrix (default 20)")
    parser.add_argument("--no-center", dest="center", action="store_false",
                        help="the paper's uncentred map and subspaces (default: centred)")
    add_model_arguments(parser)
    return parser


def _questions_and_templates(options: SimilarityOptions) -> tuple[list[str], str, str]:
    from mkt.eval.organism_task import LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, problems
    from mkt.prompts import read_questions

    if options.questions is None:
        real = [m for m in (options.source, options.target) if not str(m).startswith("organism:")]
        if real:
            raise ValueError(f"{real[0]} is not an organism: pass --questions FILE with --locked and --unlocked "
                             "templates (the organism task's questions mean nothing to a real model)")
        questions = [p.question for p in problems(options.n, "train", seed=3)]
        return questions, options.locked or LOCKED_TEMPLATE, options.unlocked or UNLOCKED_TEMPLATE
    if not (options.locked and options.unlocked):
        raise ValueError("with --questions FILE also give --locked TEMPLATE and --unlocked TEMPLATE")
    return read_questions(options.questions, options.field)[: options.n], options.locked, options.unlocked


def run(options: SimilarityOptions) -> SimilarityResult:
    """Load both models, collect activations, analyse, write JSON and PNG, print a summary."""
    from mkt.models import load_model, model_identity

    def load(name: str):
        return load_model(name, **model_loading(options))

    questions, locked, unlocked = _questions_and_templates(options)
    source, target = load(options.source), load(options.target)
    acts = collect_activations(source, target, questions, locked, unlocked,
                               batch_size=options.batch_size, progress=True)
    result = subspace_similarity(
        *acts, model_identity(source).name, model_identity(target).name, ks=options.ks, ns=options.ns,
        k_for_n=options.k_for_n, heldout_fraction=options.heldout_fraction, seed=options.seed,
        center=options.center, method=options.method, n_perm=options.n_perm, n_shuffles=options.n_shuffles,
    )
    json_path = result.save(options.out)
    png_path = plot_similarity(result, Path(options.out) / PLOT_FILE)
    s = result.summary()
    print(f"similarity {s['source']} -> {s['target']} on {s['n_prompts']} prompts "
          f"({result.n_train} fit / {result.n_heldout} held out)")
    print(f"  CKA at relative-depth pairs (mean): plain {s['mean_matched_cka']:.3f} (prompts permuted, 95th pct: "
          f"{s['mean_matched_cka_null_q95']:.3f}); debiased {s['mean_matched_cka_debiased']:.3f} (null "
          f"{s['mean_matched_cka_debiased_null_q95']:.3f})")
    print(f"  aligned principal angle, top-{result.k_angles} (mean): {s['mean_angle_deg']:.1f} deg")
    print("  held-out error vs k: " + "  ".join(f"k={k}: {e:.3f}" for k, e in s["error_vs_k"].items()))
    print("  held-out error vs n: " + "  ".join(f"n={m}: {e:.3f}" for m, e in s["error_vs_n"].items()))
    for side in ("source", "target"):
        print(f"  {side} Unlocked-Locked (means over layers): spectral entropy "
              f"{s[f'mean_spectral_entropy_{side}']:.2f} "
              f"nats (shuffled pairs {s[f'mean_spectral_entropy_shuffled_{side}']:.2f}, sign-flip "
              f"{s[f'mean_spectral_entropy_signflip_{side}']:.2f}, isotropic Gaussian "
              f"{s[f'mean_spectral_entropy_isotropic_{side}']:.2f}); share along the mean "
              f"{s[f'mean_mean_share_{side}']:.3f} (sign-flip null 95th pct "
              f"{s[f'mean_mean_share_signflip_q95_{side}']:.3f}; shuffled pairs, which keep the mean, "
              f"{s[f'mean_mean_share_shuffled_{side}']:.3f})")
    print(f"wrote {json_path} and {png_path}")
    return result



ANALYSIS = Analysis("similarity", __doc__, add_arguments, SimilarityOptions, run)

if __name__ == "__main__":
    ANALYSIS.main()
