"""Cross-model subspace alignment: a low-rank linear map from Source to Target layers.

For target layer l_t and its relative-depth source layer l_s, with X_s (n x d_s) and X_t
(n x d_t) the two models' last-token states on the same prompts::

    V_sk, V_tk = top-k right singular vectors of X_s, X_t
    M          = fit(X_s V_sk -> X_t V_tk)          (k x k)
    T          = V_sk M V_tk^T                        (d_s x d_t, never materialised)
    r~_{l_t}   = r_{l_s} T

``fit`` is the paper's least squares (``lstsq``), orthogonal Procrustes with a scale
(``procrustes``) or ridge regression (``ridge``); ``center=True`` is the zero-centred
variant. Pure tensor math, no model I/O; saved as safetensors + JSON.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
from jaxtyping import Float
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import Tensor

from mkt.artifacts import (
    check_tensor,
    identity_from_record,
    is_count,
    is_int,
    json_text,
    make_directory,
    read_bytes,
    replace_atomically,
)
from mkt.errors import CorruptArtifactError, IncompatibleModelError, NonFiniteError
from mkt.key import MasterKey
from mkt.models import HOOK_POINTS, PER_HEAD_HOOKS, RESID_HOOK, ModelIdentity
from mkt.positions import check_position

METHODS = ("lstsq", "procrustes", "ridge", "identity")
FORMAT_VERSION = 2  # 2: the metadata holds a sha256 of the tensors
TENSOR_FIELDS = ("source_bases", "cores", "target_bases", "source_means", "target_means")
KIND = "mkt.SubspaceAlignment"
REFIT = "fit the alignment again with `mkt align`"


def _tensor_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over the tensors' names, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def relative_depth_map(n_source_layers: int, n_target_layers: int) -> list[int]:
    """Source layer for each target layer: l_s = min(floor((L_s-1) l_t / (L_t-1)), L_s-1)."""
    if n_source_layers < 1 or n_target_layers < 1:
        raise ValueError("both models need at least one layer")
    if n_target_layers == 1:
        return [n_source_layers - 1]
    return [
        min((n_source_layers - 1) * lt // (n_target_layers - 1), n_source_layers - 1)
        for lt in range(n_target_layers)
    ]


def _top_right_singular(x: Tensor, k: int) -> Tensor:
    return torch.linalg.svd(x, full_matrices=False).Vh[:k].T  # d x k


def fit_core(p_s: Float[Tensor, "n k"], p_t: Float[Tensor, "n k"], method: str, ridge: float) -> Tensor:
    """The k x k map between projected activations."""
    if method == "lstsq":
        return torch.linalg.pinv(p_s) @ p_t
    if method == "procrustes":
        u, s, vh = torch.linalg.svd(p_s.T @ p_t)
        scale = s.sum() / (p_s**2).sum().clamp_min(1e-30)
        return scale * (u @ vh)
    if method == "ridge":
        if not (ridge >= 0 and math.isfinite(ridge)):
            raise ValueError(f"ridge strength must be a finite number >= 0, got {ridge}")
        gram = p_s.T @ p_s
        lam = ridge * torch.trace(gram) / gram.shape[0]
        return torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), p_s.T @ p_t)
    raise ValueError(f"unknown alignment method {method!r}: use one of {METHODS}")


@dataclass
class SubspaceAlignment:
    """Per-target-layer factored maps ``V_sk M V_tk^T`` from a Source into a Target.

    Attributes:
        source, target: the two models' identities.
        layer_map: source layer of each target layer.
        source_bases: ``[L_t, d_s, k]``; cores ``[L_t, k, k]``; target_bases ``[L_t, d_t, k]``
            (all None for the identity alignment of a model to itself).
        source_means, target_means: ``[L_t, d]`` centring offsets (zeros when uncentred).
        diagnostics: fit-time numbers (relative error on the fitting prompts, ...).
    """

    source: ModelIdentity
    target: ModelIdentity
    layer_map: list[int]
    method: str
    k: int
    n: int
    center: bool
    source_bases: Tensor | None = None
    cores: Tensor | None = None
    target_bases: Tensor | None = None
    source_means: Tensor | None = None
    target_means: Tensor | None = None
    diagnostics: dict = field(default_factory=dict)
    hook: str = RESID_HOOK  # where both models' states were read: keys at another hook do not fit
    position: str = "last"  # at which prompt positions (mkt.positions): keys read elsewhere do not fit

    def __post_init__(self) -> None:
        bad = [name for name in TENSOR_FIELDS if getattr(self, name) is not None
               and not torch.isfinite(getattr(self, name)).all()]
        if bad:
            raise NonFiniteError(f"NaN or inf in the alignment's {', '.join(bad)}: fit it again (check --ridge and "
                                 "the activations' dtype)")

    @classmethod
    def identity(cls, model: ModelIdentity, hook: str = RESID_HOOK) -> "SubspaceAlignment":
        """A model aligned to itself: keys at ``hook`` pass through unchanged."""
        return cls(model, model, list(range(model.n_layers)), "identity", model.width(hook), 0, False, hook=hook)

    @property
    def is_identity(self) -> bool:
        return self.method == "identity"

    def map_directions(self, directions: Float[Tensor, "layer_s d_s"]) -> Float[Tensor, "layer_t d_t"]:
        """Map per-source-layer row vectors into the Target: r~_{l_t} = r_{l_s} T."""
        expected = (self.source.n_layers, self.source.width(self.hook))
        if tuple(directions.shape) != expected:
            raise IncompatibleModelError(
                f"directions of shape {tuple(directions.shape)} do not fit this alignment's Source "
                f"{self.source.name!r} {expected}: use a key extracted from that model"
            )
        r = directions[self.layer_map]
        if self.is_identity:
            return r.clone()
        dtype = torch.promote_types(r.dtype, self.source_bases.dtype)  # no upcast of large bases
        coords = torch.einsum("ld,ldk->lk", r.to(dtype), self.source_bases.to(dtype))
        coords = torch.einsum("lk,lkj->lj", coords, self.cores.to(dtype))
        return torch.einsum("lj,ldj->ld", coords, self.target_bases.to(dtype)).to(directions.dtype)

    def map_activations(self, x_s: Float[Tensor, "n layer_s d_s"]) -> Float[Tensor, "n layer_t d_t"]:
        """Predicted target activations: (x_s - mu_s) T + mu_t at every target layer."""
        x = x_s[:, self.layer_map].double()
        if self.is_identity:
            return x.float()
        x = x - self.source_means.double()
        coords = torch.einsum("nld,ldk->nlk", x, self.source_bases.double())
        coords = torch.einsum("nlk,lkj->nlj", coords, self.cores.double())
        pred = torch.einsum("nlj,ldj->nld", coords, self.target_bases.double())
        return (pred + self.target_means.double()).float()

    def relative_error(
        self, x_s: Float[Tensor, "n layer_s d_s"], x_t: Float[Tensor, "n layer_t d_t"]
    ) -> Float[Tensor, "layer_t"]:
        """||pred - X_t||_F / ||X_t - mean(X_t)||_F per target layer (use held-out prompts).

        The denominator is the targets' spread about their own mean, so 1.0 means "no
        better than predicting the mean", whether or not the map is centred.
        """
        _check_pair(x_s, x_t, self.source, self.target, self.hook)
        pred = self.map_activations(x_s).double()
        t = x_t.double()
        return ((pred - t).norm(dim=(0, 2)) / (t - t.mean(0)).norm(dim=(0, 2)).clamp_min(1e-30)).float()

    def coverage(self, directions: Float[Tensor, "layer_s d_s"]) -> Float[Tensor, "layer_t"]:
        """Share of each mapped source direction's norm inside the Source's top-k subspace.

        Near 0 means the alignment prompts carried no variance along the key and the
        transferred key will be mostly lost.
        """
        r = directions[self.layer_map]
        if self.is_identity:
            return torch.ones(len(self.layer_map))
        dtype = torch.promote_types(r.dtype, self.source_bases.dtype)
        r = r.to(dtype)
        inside = torch.einsum("ld,ldk->lk", r, self.source_bases.to(dtype)).norm(dim=-1)
        return (inside / r.norm(dim=-1).clamp_min(1e-30)).float()

    # --- persistence -------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write ``path`` (a ``.safetensors`` file whose header holds the JSON metadata), after the
        checks ``load`` makes; the file is replaced atomically."""
        path = Path(path)
        _check_alignment(self, f"alignment for {path}")
        meta = dict(
            format_version=FORMAT_VERSION, kind=KIND, source=self.source.to_dict(),
            target=self.target.to_dict(), layer_map=self.layer_map, method=self.method, k=self.k,
            n=self.n, center=self.center, diagnostics=self.diagnostics, hook=self.hook, position=self.position,
        )
        tensors = {name: getattr(self, name).contiguous().cpu() for name in TENSOR_FIELDS
                   if getattr(self, name) is not None}
        if not tensors:  # safetensors needs one tensor; the identity map has none
            tensors = {"layer_map": torch.tensor(self.layer_map)}
        meta["sha256"] = _tensor_digest(tensors)
        data = save(tensors, metadata={"mkt": json_text(meta, f"alignment for {path}: the metadata")})
        if path.is_dir():
            raise CorruptArtifactError(f"cannot write an alignment at {path}: it is a directory; pass a file path")
        make_directory(path.parent, "an alignment")
        replace_atomically(path, data)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SubspaceAlignment":
        """Read an alignment, verifying its format, hash, metadata, and every tensor's presence,
        dtype, shape (against the identities) and finiteness.

        Raises:
            FileNotFoundError: no file at ``path``.
            CorruptArtifactError: naming the file and what is wrong with it.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no alignment file at {path}: pass the file `mkt align --out` wrote")
        data = read_bytes(path, "an alignment file", REFIT)
        try:
            tensors = load(data)
            header = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")])
            meta = json.loads(header["__metadata__"]["mkt"])
        except (SafetensorError, KeyError, TypeError, ValueError, RecursionError) as err:
            raise CorruptArtifactError(f"{path} is not a readable mkt alignment ({type(err).__name__}: "
                                       f"{str(err)[:120]}); {REFIT}") from None
        if not isinstance(meta, dict) or meta.get("kind") != KIND:
            kind = meta.get("kind") if isinstance(meta, dict) else None
            raise CorruptArtifactError(f"{path} is not an mkt alignment (kind={kind!r}); {REFIT}")
        version = meta.get("format_version")
        if not is_int(version) or version != FORMAT_VERSION:
            raise CorruptArtifactError(
                f"{path} has alignment format version {version!r}, not {FORMAT_VERSION}: "
                "fit it again with this mkt (`mkt align`)"
            )
        if _tensor_digest(tensors) != meta.get("sha256"):
            raise CorruptArtifactError(f"{path}: the tensors do not match the hash in its metadata (corrupt or "
                                       "tampered); fit the alignment again")
        source, target = (identity_from_record(meta.get(side), str(path), side) for side in ("source", "target"))
        fields = dict(method=meta.get("method"), k=meta.get("k"), n=meta.get("n"), center=meta.get("center"),
                      diagnostics=meta.get("diagnostics", {}), hook=meta.get("hook", RESID_HOOK),
                      position=meta.get("position", "last"))
        alignment = cls.__new__(cls)  # checked before __post_init__ touches the tensors
        alignment.__dict__.update(source=source, target=target, layer_map=meta.get("layer_map"), **fields,
                                  **{name: tensors.get(name) for name in TENSOR_FIELDS})
        _check_alignment(alignment, str(path))
        return alignment

    def summary(self) -> dict:
        return dict(
            source=self.source.name, target=self.target.name, method=self.method, k=self.k, n=self.n,
            center=self.center, layer_map=self.layer_map, **self.diagnostics,
        )


def _check_alignment(al: SubspaceAlignment, where: str) -> None:
    """Everything ``map_directions``, ``map_activations`` and ``transfer`` rely on: field types, the
    layer map, and each tensor present, floating point, finite and shaped by the identities.

    Raises:
        CorruptArtifactError: naming ``where`` and the first bad field or tensor.
    """
    def bad(field: str, why: str) -> CorruptArtifactError:
        return CorruptArtifactError(f"{where}: field {field!r} {why}; {REFIT}")

    source, target = al.source, al.target
    if not (isinstance(al.layer_map, list) and len(al.layer_map) == target.n_layers
            and all(is_int(x) and 0 <= x < source.n_layers for x in al.layer_map)):
        raise bad("layer_map", f"must list a source layer for each of the {target.n_layers} target layers")
    for name, ok, rule in (("method", isinstance(al.method, str) and al.method in METHODS, f"one of {METHODS}"),
                           ("k", is_count(al.k), "a whole number >= 1"),
                           ("n", is_int(al.n) and al.n >= 0, "a whole number >= 0"),
                           ("center", isinstance(al.center, bool), "true or false"),
                           ("diagnostics", isinstance(al.diagnostics, dict), "an object"),
                           ("hook", isinstance(al.hook, str) and al.hook in HOOK_POINTS, f"one of {HOOK_POINTS}"),
                           ("position", _is_position(al.position), "last, mean or last-N")):
        if not ok:
            raise bad(name, f"is missing or of the wrong type (must be {rule}, got {getattr(al, name)!r})")
    try:
        d_s, d_t = source.width(al.hook), target.width(al.hook)
    except IncompatibleModelError as err:
        raise CorruptArtifactError(f"{where}: {err}") from None
    tensors = {name: getattr(al, name) for name in TENSOR_FIELDS}
    if al.is_identity:
        if not (source.fits(target) and al.layer_map == list(range(target.n_layers))):
            raise bad("method", "is 'identity' but the source and target differ or the layer map is not 0, 1, ...")
        extra = [name for name, t in tensors.items() if t is not None]
        if extra:
            raise CorruptArtifactError(f"{where}: an identity alignment holds no tensors, but this one holds "
                                       f"{', '.join(extra)}; {REFIT}")
        return
    if al.k > min(d_s, d_t):
        raise bad("k", f"is {al.k}, above the widths {d_s} and {d_t} at {al.hook}")
    L, k = target.n_layers, al.k
    for name, shape in (("source_bases", (L, d_s, k)), ("cores", (L, k, k)), ("target_bases", (L, d_t, k)),
                        ("source_means", (L, d_s)), ("target_means", (L, d_t))):
        check_tensor(tensors[name], name, shape, where, REFIT)


def _check_pair(x_s: Tensor, x_t: Tensor, source: ModelIdentity, target: ModelIdentity, hook: str = RESID_HOOK
                ) -> None:
    if x_s.ndim != 3 or x_t.ndim != 3:
        raise ValueError("activations must be [n_prompts, n_layers, width]")
    if x_s.shape[0] != x_t.shape[0]:
        raise ValueError(
            f"Source and Target activations come from {x_s.shape[0]} and {x_t.shape[0]} prompts: "
            "run both models on the same prompts"
        )
    for name, x, ident in (("Source", x_s, source), ("Target", x_t, target)):
        if tuple(x.shape[1:]) != (ident.n_layers, ident.width(hook)):
            raise IncompatibleModelError(
                f"{name} activations are {tuple(x.shape[1:])} per prompt but {ident.name!r} has "
                f"{ident.n_layers} layers x {ident.width(hook)} at {hook}"
            )
    if not (torch.isfinite(x_s).all() and torch.isfinite(x_t).all()):
        raise NonFiniteError("NaN or inf in the alignment activations: check the models' dtype")


def fit_alignment(
    x_s: Float[Tensor, "n layer_s d_s"],
    x_t: Float[Tensor, "n layer_t d_t"],
    source: ModelIdentity,
    target: ModelIdentity,
    k: int,
    method: str = "lstsq",
    center: bool = False,
    layer_map: list[int] | None = None,
    ridge: float = 1e-2,
    hook: str = RESID_HOOK,
    position: str = "last",
) -> SubspaceAlignment:
    """Fit the per-layer maps from activations of both models on the same prompts.

    Args:
        x_s, x_t: last-token residuals ``[n, L, d]`` of Source and Target, same prompts.
        k: rank, 1 <= k <= min(n, d_s, d_t).
        method: ``lstsq`` (paper), ``procrustes`` or ``ridge``.
        center: zero-centre both sides before the SVD (the paper's centred variant).
        layer_map: source layer per target layer; default ``relative_depth_map``.
        ridge: ridge strength relative to the mean eigenvalue of P_s^T P_s.
        hook: where both sets of states were read (``mkt.models.HOOK_POINTS``); only keys
            at the same hook transfer through the result. A per-head hook's states are the
            heads side by side (n_heads x d_head wide), mapped like any other.
        position: the prompt positions the states were read at (``mkt.positions``), recorded
            like the hook.
    """
    if method not in METHODS or method == "identity":
        raise ValueError(f"unknown alignment method {method!r}: use one of {METHODS[:-1]}")
    _check_pair(x_s, x_t, source, target, hook)
    n, d_s, d_t = x_s.shape[0], source.width(hook), target.width(hook)
    limit = min(n, d_s, d_t)
    if not 1 <= k <= limit:
        raise ValueError(
            f"rank k={k} is out of range: it must be between 1 and min(n={n}, d_s={d_s}, "
            f"d_t={d_t}) = {limit}; lower k or use more alignment prompts"
        )
    layer_map = relative_depth_map(source.n_layers, target.n_layers) if layer_map is None else list(layer_map)
    if len(layer_map) != target.n_layers or not all(0 <= ls < source.n_layers for ls in layer_map):
        raise ValueError(
            f"layer_map must give a source layer in 0..{source.n_layers - 1} for each of the "
            f"{target.n_layers} target layers"
        )
    bases_s, cores, bases_t, means_s, means_t = [], [], [], [], []
    for lt, ls in enumerate(layer_map):
        a, b = x_s[:, ls].double(), x_t[:, lt].double()
        mu_s = a.mean(0) if center else torch.zeros(a.shape[1], dtype=a.dtype)
        mu_t = b.mean(0) if center else torch.zeros(b.shape[1], dtype=b.dtype)
        a, b = a - mu_s, b - mu_t
        v_s, v_t = _top_right_singular(a, k), _top_right_singular(b, k)
        cores.append(fit_core(a @ v_s, b @ v_t, method, ridge))
        bases_s.append(v_s), bases_t.append(v_t), means_s.append(mu_s), means_t.append(mu_t)
    alignment = SubspaceAlignment(
        source, target, layer_map, method, k, n, center,
        source_bases=torch.stack(bases_s).float(), cores=torch.stack(cores).float(),
        target_bases=torch.stack(bases_t).float(), source_means=torch.stack(means_s).float(),
        target_means=torch.stack(means_t).float(), hook=hook, position=position,
    )
    alignment.diagnostics["fit_relative_error"] = alignment.relative_error(x_s, x_t).tolist()
    return alignment


def _shape(model: ModelIdentity, hook: str) -> str:
    heads = f", {model.n_heads} heads x {model.d_head}" if hook in PER_HEAD_HOOKS else ""
    return f"{model.n_layers} layers x {model.d_model}{heads}"


def _is_position(position) -> bool:
    try:
        check_position(position)
    except (ValueError, TypeError):
        return False
    return True


def transfer(key: MasterKey, alignment: SubspaceAlignment) -> MasterKey:
    """The key mapped into the alignment's Target, with coverage recorded in its provenance."""
    position = key.provenance.get("position", alignment.position)  # random directions record none
    if (key.hook, position) != (alignment.hook, alignment.position):
        raise IncompatibleModelError(
            f"the key was read at {key.hook}, position {position!r}, but the alignment was fitted on states at "
            f"{alignment.hook}, position {alignment.position!r}: fit it on states read where the key was "
            f"(mkt.activations.prompt_states(..., hook={key.hook!r}, position={position!r}))"
        )
    if not key.model.fits(alignment.source):
        raise IncompatibleModelError(
            f"the key belongs to {key.model.name!r} ({_shape(key.model, key.hook)}) but the alignment "
            f"starts from {alignment.source.name!r} ({_shape(alignment.source, key.hook)}): fit the alignment "
            "from the key's model"
        )
    provenance = dict(
        key.provenance, source_model=key.model.to_dict(), layer_map=alignment.layer_map,
        k=alignment.k, alignment_method=alignment.method, alignment_center=alignment.center,
        alignment_n=alignment.n, coverage=alignment.coverage(key.directions).tolist(),
        **{f"alignment_{name}": value for name, value in alignment.diagnostics.items()},
    )
    return MasterKey(alignment.map_directions(key.directions), alignment.target, key.hook, provenance)


def heldout_error_by_rank(
    x_s: Float[Tensor, "n layer_s d_s"], x_t: Float[Tensor, "n layer_t d_t"],
    x_s_held: Float[Tensor, "m layer_s d_s"], x_t_held: Float[Tensor, "m layer_t d_t"], layer_map: list[int],
    ks: list[int], method: str = "lstsq", center: bool = False, ridges: list[float] = (1e-2,),
) -> Float[Tensor, "k ridge layer_t"]:
    """Held-out relative error of the map of every rank in ``ks`` and ridge in ``ridges``, per target layer.

    The maps are those ``fit_alignment`` fits on ``x_s, x_t`` and the errors those
    ``SubspaceAlignment.relative_error`` gives on ``x_s_held, x_t_held``, but each layer's SVD
    is taken once, at the largest k, and sliced for the others.
    """
    out = torch.zeros(len(ks), len(ridges), len(layer_map), dtype=torch.float64)
    for lt, ls in enumerate(layer_map):
        a, b = x_s[:, ls].double(), x_t[:, lt].double()
        mu_s = a.mean(0) if center else torch.zeros(a.shape[1], dtype=a.dtype)
        mu_t = b.mean(0) if center else torch.zeros(b.shape[1], dtype=b.dtype)
        a, b = a - mu_s, b - mu_t
        v_s, v_t = _top_right_singular(a, max(ks)), _top_right_singular(b, max(ks))
        h_s, h_t = x_s_held[:, ls].double() - mu_s, x_t_held[:, lt].double()
        spread = (h_t - h_t.mean(0)).norm().clamp_min(1e-30)
        for i, k in enumerate(ks):
            for j, r in enumerate(ridges):
                core = fit_core(a @ v_s[:, :k], b @ v_t[:, :k], method, r)
                out[i, j, lt] = ((h_s @ v_s[:, :k]) @ core @ v_t[:, :k].T + mu_t - h_t).norm() / spread
    return out


@dataclass(frozen=True)
class RankSelection:
    """The (k, ridge) with the lowest cross-validated held-out error, and every candidate's error.

    Attributes:
        k, ridge: the chosen rank and ridge strength (``ridge`` only matters for ``method="ridge"``).
        error: the chosen pair's mean held-out relative error (1.0 = no better than the mean).
        errors: ``{(k, ridge): error}`` for every candidate, errors per target layer averaged.
        folds: how many folds the alignment questions were split into.
    """

    k: int
    ridge: float
    error: float
    errors: dict[tuple[int, float], float]
    folds: int

    @property
    def beats_mean(self) -> bool:
        return self.error < 1.0

    def to_dict(self) -> dict:
        return dict(k=self.k, ridge=self.ridge, cv_error=self.error, cv_folds=self.folds,
                    cv_errors=[dict(k=k, ridge=r, error=e) for (k, r), e in sorted(self.errors.items())])


def cross_validate_rank(
    x_s: Float[Tensor, "n layer_s d_s"], x_t: Float[Tensor, "n layer_t d_t"], source: ModelIdentity,
    target: ModelIdentity, ks: list[int], method: str = "lstsq", center: bool = False,
    ridges: list[float] = (1e-2,), folds: int = 5, groups: list[int] | None = None, seed: int = 0,
    hook: str = RESID_HOOK,
) -> RankSelection:
    """Choose k (and ridge) by ``folds``-fold cross-validated held-out error on the alignment prompts.

    Each fold's maps and errors are ``heldout_error_by_rank``'s; the errors are averaged over
    folds, then over target layers. Ranks above what the smallest fitting fold allows are dropped.

    Args:
        x_s, x_t: ``[n, L, d]`` states of the two models on the same alignment prompts.
        ks: candidate ranks; ridges: candidate ridge strengths (only ``method="ridge"`` uses them).
        method, center, hook: as in ``fit_alignment``.
        folds: number of folds (2 <= folds <= number of groups).
        groups: a group id per prompt (e.g. its question, when one question gives several
            prompts): a group is never split between fit and held-out; default one per prompt.
        seed: the shuffle of groups into folds.

    Returns:
        The ``RankSelection``.

    Raises:
        ValueError: too few prompts for the folds, or no candidate rank fits.
    """
    _check_pair(x_s, x_t, source, target, hook)
    if method not in METHODS or method == "identity":
        raise ValueError(f"unknown alignment method {method!r}: use one of {METHODS[:-1]}")
    if not ridges:
        raise ValueError("give at least one ridge strength")
    n = x_s.shape[0]
    groups = list(range(n)) if groups is None else list(groups)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} ids for {n} prompts: give one per prompt")
    ids = sorted(set(groups))
    if not 2 <= folds <= len(ids):
        raise ValueError(f"cross-validation needs 2 <= folds <= the number of questions ({len(ids)}), got "
                         f"folds={folds}: use more alignment questions or fewer folds")
    random.Random(seed).shuffle(ids)
    fold_of = {g: i % folds for i, g in enumerate(ids)}
    fold = torch.tensor([fold_of[g] for g in groups])
    smallest_fit = min(int((fold != f).sum()) for f in range(folds))
    kept = sorted({int(k) for k in ks if 1 <= int(k) <= min(smallest_fit, source.width(hook), target.width(hook))})
    if not kept:
        raise ValueError(f"no candidate rank in {list(ks)} fits {smallest_fit} fitting prompts per fold: use more "
                         "alignment questions or smaller ranks")
    ridges = [float(r) for r in ridges] if method == "ridge" else [float(ridges[0])]  # the others ignore it
    layer_map = relative_depth_map(source.n_layers, target.n_layers)
    ratio = sum(heldout_error_by_rank(x_s[fold != f], x_t[fold != f], x_s[fold == f], x_t[fold == f], layer_map,
                                      kept, method, center, ridges) for f in range(folds)) / folds
    errors = {(k, r): float(ratio[i, j].mean()) for i, k in enumerate(kept) for j, r in enumerate(ridges)}
    best = min(errors, key=errors.get)
    return RankSelection(best[0], best[1], errors[best], errors, folds)


def select_rank(
    x_s: Tensor, x_t: Tensor, x_s_dev: Tensor, x_t_dev: Tensor, source: ModelIdentity,
    target: ModelIdentity, ks: list[int], method: str = "lstsq", center: bool = False, hook: str = RESID_HOOK,
) -> tuple[int, dict[int, float]]:
    """The rank with the lowest mean held-out relative error on ``x_s_dev, x_t_dev``, and every rank's error."""
    _check_pair(x_s, x_t, source, target, hook), _check_pair(x_s_dev, x_t_dev, source, target, hook)
    limit = min(x_s.shape[0], source.width(hook), target.width(hook))
    bad = [k for k in ks if not 1 <= k <= limit]
    if bad:
        raise ValueError(f"ranks {bad} are out of range: each must be between 1 and min(n, d_s, d_t) = {limit}")
    by_rank = heldout_error_by_rank(x_s, x_t, x_s_dev, x_t_dev, relative_depth_map(source.n_layers, target.n_layers),
                                    list(ks), method, center)
    errors = {k: float(by_rank[i, 0].mean()) for i, k in enumerate(ks)}
    return min(errors, key=errors.get), errors

