"""The statistics of the similarity analysis: pure tensor functions, float64 inside, no models.

* subspaces: ``principal_angles``, ``top_subspace``, ``subspace_angles``,
  ``aligned_principal_angles`` (angles in the Target's space after the paper's map);
* CKA: ``linear_cka`` and ``cka_matrix``, each plain (Kornblith et al. 2019) or debiased
  (the unbiased HSIC of Song et al. 2012, through U-centred Gram matrices), and
  ``permuted_cka``, the same statistic with the samples of one side shuffled: what CKA reads
  on these n prompts when the two models' rows do not correspond at all;
* difference matrices: ``spectral_entropy`` / ``effective_rank`` (how many directions the
  Unlocked-minus-Locked change spreads over), ``mean_direction_share`` (how much of it lies
  along the mean difference, i.e. the mean-aggregated key); their references: ``derangement``
  (shuffled pairs: keeps the mean difference, so it cannot fail for the share), ``sign_flip``
  (each difference times +-1: same per-prompt energy and spectrum, no common direction; the
  share's null) and ``isotropic_entropy`` (a Gaussian matrix of the same n and d).
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float, Int
from torch import Tensor

from mkt.alignment import fit_alignment
from mkt.models import ModelIdentity

# --- subspaces ------------------------------------------------------------------------------


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


# --- CKA ------------------------------------------------------------------------------------


def centered_gram(x: Float[Tensor, "n d"]) -> Float[Tensor, "n n"]:
    """Linear Gram matrix of the column-centred rows (float64): the plain CKA's ``H K H``."""
    x = x.double()
    x = x - x.mean(0)
    return x @ x.T


def u_centered_gram(x: Float[Tensor, "n d"]) -> Float[Tensor, "n n"]:
    """U-centred linear Gram matrix (Szekely and Rizzo 2014), needs n >= 4.

    ``<U(K), U(L)> / (n (n - 3))`` is the unbiased HSIC estimator of Song et al. (2012), so
    CKA built from U-centred Grams has no upward bias from finite n: with n much smaller
    than d, two independent feature sets read plain CKA far above 0 but debiased CKA near 0.
    """
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"debiased CKA needs at least 4 samples, got {n}")
    k = centered_gram(x)  # centring the features first changes nothing after U-centring, but keeps digits
    k.fill_diagonal_(0.0)
    means = k.sum(0) / (n - 2)
    means = means - means.sum() / (2 * (n - 1))
    k = k - means[:, None] - means[None, :]
    k.fill_diagonal_(0.0)
    return k


def _gram(x: Tensor, debiased: bool) -> Tensor:
    return u_centered_gram(x) if debiased else centered_gram(x)


def _cka_of_grams(k: Tensor, l: Tensor) -> float:
    """``<K, L> / sqrt(<K, K> <L, L>)``; NaN when a side has no (estimated) variance."""
    kk, ll = float((k * k).sum()), float((l * l).sum())
    if kk <= 0.0 or ll <= 0.0:
        return float("nan")
    return float((k * l).sum()) / math.sqrt(kk * ll)


def _check_paired(x: Tensor, y: Tensor) -> None:
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"x and y must be 2-D [n, d]; got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y hold {x.shape[0]} and {y.shape[0]} samples: CKA needs the same samples")


def linear_cka(x: Float[Tensor, "n d1"], y: Float[Tensor, "n d2"], debiased: bool = False) -> float:
    """Linear CKA (Kornblith et al. 2019) between two feature sets on the same samples.

    Invariant to orthogonal transforms and isotropic scaling of either side, and defined
    across widths, which is why it can compare a layer of one model with a layer of another.

    Args:
        x, y: ``[n, d]`` features of the same n samples, in the same order.
        debiased: U-centred Grams (unbiased HSIC) instead of the plain, upward-biased ones.

    Returns:
        Plain CKA is in [0, 1]; debiased CKA can dip below 0 by estimation noise. NaN when a
        side has no variance.
    """
    _check_paired(x, y)
    return _cka_of_grams(_gram(x, debiased), _gram(y, debiased))


def permuted_cka(x: Float[Tensor, "n d1"], y: Float[Tensor, "n d2"], n_perm: int = 50, seed: int = 0,
                 debiased: bool = False) -> Float[Tensor, "n_perm"]:
    """CKA with the rows of ``y`` shuffled, ``n_perm`` times: the permutation null on the same n.

    Any value CKA takes here is reached with no correspondence between the two models' rows,
    so it is what a measured CKA must exceed before it says the models represent the same
    prompts alike (plain CKA's null sits far above 0 when n is small against d).
    """
    _check_paired(x, y)
    k, l = _gram(x, debiased), _gram(y, debiased)
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_perm):
        perm = torch.randperm(x.shape[0], generator=g)
        # U-centring commutes with permuting the samples, so permuting the Gram is permuting y
        out.append(_cka_of_grams(k, l[perm][:, perm]))
    return torch.tensor(out, dtype=torch.float64)


def cka_matrix(
    x: Float[Tensor, "n layer_a d_a"], y: Float[Tensor, "n layer_b d_b"], debiased: bool = False
) -> Float[Tensor, "layer_a layer_b"]:
    """Linear CKA between every layer of ``x`` and every layer of ``y`` (float64).

    Each layer's (U-)centred Gram matrix is built once and normalised, so the whole heatmap
    is one matrix product instead of ``L_a * L_b`` CKA calls.
    """
    if x.ndim != 3 or y.ndim != 3 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x and y must be [n, layers, d] on the same n prompts; got {tuple(x.shape)} and {tuple(y.shape)}"
        )

    def unit_grams(acts: Tensor) -> Tensor:
        grams = torch.stack([_gram(acts[:, layer], debiased).flatten() for layer in range(acts.shape[1])])
        norms = grams.norm(dim=1, keepdim=True)
        return torch.where(norms > 0, grams / norms.clamp_min(1e-300), torch.full_like(grams, float("nan")))

    return unit_grams(x) @ unit_grams(y).T


# --- difference matrices ----------------------------------------------------------------------


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



def mean_direction_share(diffs: Float[Tensor, "n d"]) -> float:
    """Share of the differences' energy along their mean: ``||D m||^2 / ||D||_F^2``, ``m = mean/|mean|``.

    The mean difference is the mean aggregator's key, so this says how much of what changes
    per prompt the key itself carries: 1 when every difference lies on the key's line, about
    ``1/d`` for isotropic noise around a zero mean. Not centred (centring would remove the mean).

    Returns:
        A share in [0, 1]; NaN when the mean difference or the matrix is zero.
    """
    if diffs.ndim != 2:
        raise ValueError(f"diffs must be 2-D [n, d], got shape {tuple(diffs.shape)}")
    d = diffs.double()
    mean = d.mean(0)
    total = float((d * d).sum())
    if float(mean.norm()) == 0.0 or total == 0.0:
        return float("nan")
    return float(((d @ (mean / mean.norm())) ** 2).sum()) / total


def derangement(n: int, seed: int = 0) -> Int[Tensor, "n"]:
    """A random permutation with no fixed point (n >= 2): a shuffled pairing of n prompts.

    ``unlocked[p] - locked`` pairs every Locked prompt with another prompt's Unlocked state:
    the two clouds and the mean difference stay exactly as they are, only the per-prompt
    pairing is gone. A random cycle through a random order never maps a prompt to itself,
    so no true pair survives to flatter the null.
    """
    if n < 2:
        raise ValueError(f"a shuffled pairing needs at least 2 prompts, got {n}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    p = torch.empty(n, dtype=torch.long)
    p[order] = order.roll(-1)
    return p


def sign_flip(diffs: Float[Tensor, "n d"], seed: int = 0) -> Float[Tensor, "n d"]:
    """``diffs`` with each row multiplied by a random +1 or -1: the sign-flip null.

    Each prompt keeps its difference's energy and the matrix keeps ``D^T D`` (its uncentred
    spectrum) exactly; what is lost is any direction common to the prompts, since the mean
    of randomly signed rows is near 0. So a share along the mean that shuffled pairs keep
    (they keep the mean difference) has to be earned against this null.
    """
    if diffs.ndim != 2:
        raise ValueError(f"diffs must be 2-D [n, d], got shape {tuple(diffs.shape)}")
    g = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (diffs.shape[0],), generator=g).to(diffs.dtype) * 2 - 1
    return diffs * signs[:, None].to(diffs.device)


def isotropic_entropy(n: int, d: int, center: bool = True, seed: int = 0) -> float:
    """Spectral entropy of an ``[n, d]`` standard Gaussian matrix: the value with no structure at all.

    The reference for ``spectral_entropy`` at the same n and d, since a finite sample of
    isotropic noise does not reach ``log min(n, d)``.
    """
    g = torch.Generator().manual_seed(seed)
    return spectral_entropy(torch.randn(n, d, generator=g, dtype=torch.float64), center)
