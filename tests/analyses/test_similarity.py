import json
import math

import numpy as np
import pytest
import torch

from analyses.similarity import (
    SimilarityResult,
    collect_activations,
    default_ns,
    plot_similarity,
    subspace_similarity,
)
from analyses.similarity_stats import (
    aligned_principal_angles,
    cka_matrix,
    derangement,
    effective_rank,
    isotropic_entropy,
    linear_cka,
    mean_direction_share,
    permuted_cka,
    principal_angles,
    sign_flip,
    spectral_entropy,
    subspace_angles,
    top_subspace,
    u_centered_gram,
)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _orthogonal(d: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(d, d, generator=_gen(seed), dtype=torch.float64))[0]


# --- principal angles ---------------------------------------------------------------------


def test_principal_angles_same_subspace_different_bases_is_zero():
    a = torch.randn(12, 3, generator=_gen(0), dtype=torch.float64)
    b = a @ torch.randn(3, 3, generator=_gen(1), dtype=torch.float64)  # another basis of span(a)
    theta = principal_angles(a, b)
    assert theta.shape == (3,)
    assert theta.abs().max() < 1e-7


def test_principal_angles_orthogonal_subspaces_are_right_angles():
    q = _orthogonal(8, 2)
    theta = principal_angles(q[:, :3], q[:, 3:5])
    assert theta.shape == (2,)
    assert torch.allclose(theta, torch.full((2,), math.pi / 2, dtype=torch.float64), atol=1e-10)


def test_principal_angles_known_angles():
    e = torch.eye(3, dtype=torch.float64)
    for angle in (1e-5, 0.3, 1.2):
        line_a, line_b = e[:, :1], (math.cos(angle) * e[:, 0] + math.sin(angle) * e[:, 1])[:, None]
        assert principal_angles(line_a, 5 * line_b).item() == pytest.approx(angle, rel=1e-8)
        # planes span{e1, e2} and span{e1, cos e2 + sin e3}: angles 0 and `angle`
        plane_b = torch.stack([e[:, 0], math.cos(angle) * e[:, 1] + math.sin(angle) * e[:, 2]], 1)
        theta = principal_angles(e[:, :2], plane_b)
        assert theta[0].item() == pytest.approx(0.0, abs=1e-12)
        assert theta[1].item() == pytest.approx(angle, rel=1e-8)
    # a line against a plane it makes 45 degrees with; order of arguments does not matter
    line = (e[:, 0] + e[:, 2])[:, None]
    assert principal_angles(line, e[:, :2]).item() == pytest.approx(math.pi / 4, rel=1e-10)
    assert principal_angles(e[:, :2], line).item() == pytest.approx(math.pi / 4, rel=1e-10)


def test_principal_angles_rejects_width_mismatch_and_dependent_columns():
    with pytest.raises(ValueError, match="different spaces"):
        principal_angles(torch.randn(10, 2), torch.randn(12, 2))
    a = torch.randn(10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="spans only 1"):
        principal_angles(torch.stack([a[:, 0], 2 * a[:, 0]], 1), a)
    with pytest.raises(ValueError, match="aligned_principal_angles"):
        subspace_angles(torch.randn(20, 10), torch.randn(20, 12), 2)


def test_top_subspace_recovers_planted_directions_and_checks_k():
    q = _orthogonal(10, 3)
    z = torch.randn(200, 2, generator=_gen(4), dtype=torch.float64) * torch.tensor([5.0, 3.0], dtype=torch.float64)
    x = z @ q[:, :2].T + 100.0 + 0.01 * torch.randn(200, 10, generator=_gen(5), dtype=torch.float64)
    v = top_subspace(x, 2)
    assert v.shape == (10, 2) and v.dtype == torch.float64
    assert torch.allclose(v.T @ v, torch.eye(2, dtype=torch.float64), atol=1e-10)
    assert principal_angles(v, q[:, :2]).max() < 1e-2
    # uncentred, the large shared offset takes the top direction instead
    assert principal_angles(top_subspace(x, 1, center=False), torch.ones(10, 1)).item() < 1e-2
    with pytest.raises(ValueError, match=r"k=11 .*min\(n, d\) = 10"):
        top_subspace(x, 11)
    with pytest.raises(ValueError, match="k=0"):
        top_subspace(x, 0)


def test_subspace_angles_same_width():
    u = torch.randn(100, 6, generator=_gen(6), dtype=torch.float64)
    u = torch.linalg.qr(u - u.mean(0))[0]  # centred orthonormal columns: the PCs are the coordinates
    x = u * torch.tensor([9, 7, 5, 1, 0.5, 0.2], dtype=torch.float64)
    r = torch.block_diag(_orthogonal(3, 7), torch.eye(3, dtype=torch.float64))  # rotates inside the top-3
    assert subspace_angles(x, x @ r, 3).max() < 1e-6
    swap = torch.eye(6, dtype=torch.float64)[[3, 4, 5, 0, 1, 2]]  # moves the top-3 onto the bottom-3
    assert subspace_angles(x, x @ swap, 3).min() > math.radians(89)


def test_aligned_principal_angles_across_widths():
    n, d_s, d_t = 300, 6, 9
    g = _gen(8)
    s = torch.tensor([10.0, 6.0, 3.0, 1.0, 0.5, 0.2], dtype=torch.float64)
    u = torch.linalg.qr(torch.randn(n, d_s, generator=g, dtype=torch.float64))[0]
    v = _orthogonal(d_s, 9)
    x_s = (u * s) @ v.T
    embed = torch.linalg.qr(torch.randn(d_t, d_s, generator=g, dtype=torch.float64))[0].T  # d_s x d_t isometry
    # an isometric embedding keeps the order of the axes: the mapped top-k is the Target's top-k
    same = aligned_principal_angles(x_s, 2 * x_s @ embed, k=2, center=False)
    assert same.shape == (2,) and same.max() < math.radians(0.1)
    # a map that inverts the variances sends the Source's top axes to the Target's weakest ones
    inverting = v @ torch.diag(1 / s**2) @ embed
    flipped = aligned_principal_angles(x_s, x_s @ inverting, k=2, center=False)
    assert flipped.min() > math.radians(89)
    with pytest.raises(ValueError, match="align_k"):
        aligned_principal_angles(x_s, x_s @ embed, k=3, align_k=2)


# --- CKA --------------------------------------------------------------------------------


def test_linear_cka_invariances_and_independence():
    x = torch.randn(500, 10, generator=_gen(10))
    r = _orthogonal(10, 11).float()
    assert linear_cka(x, x @ r) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, 3 * x) == pytest.approx(1.0, abs=1e-6)
    assert linear_cka(x, x + 7.0) == pytest.approx(1.0, abs=1e-6)  # centred: offsets do not count
    y = torch.randn(500, 10, generator=_gen(12))
    assert 0.0 <= linear_cka(x, y) < 0.2
    # across widths, and the sample-space (n < d) form agrees with the feature-space form
    wide = torch.cat([x, torch.randn(500, 5, generator=_gen(13))], 1)
    half = linear_cka(x, wide)
    assert 0.5 < half < 1.0
    a, b = x[:8].double(), wide[:8].double()
    a, b = a - a.mean(0), b - b.mean(0)
    feature_form = (b.T @ a).norm() ** 2 / ((a.T @ a).norm() * (b.T @ b).norm())
    assert linear_cka(x[:8], wide[:8]) == pytest.approx(float(feature_form), rel=1e-9)
    assert math.isnan(linear_cka(x, torch.ones(500, 3)))
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(x, x[:-1])


def test_cka_matrix_matches_pairwise():
    xs = torch.randn(40, 2, 7, generator=_gen(14))
    xt = torch.cat([xs @ torch.randn(7, 9, generator=_gen(15)), torch.randn(40, 1, 9, generator=_gen(16))], 1)
    for debiased in (False, True):
        m = cka_matrix(xs, xt, debiased=debiased)
        assert m.shape == (2, 3)
        for i in range(2):
            for j in range(3):
                assert m[i, j].item() == pytest.approx(linear_cka(xs[:, i], xt[:, j], debiased), abs=1e-10)


def _song_unbiased_hsic(k: torch.Tensor, l: torch.Tensor) -> float:
    """Song et al. (2012), eq. 5, written out directly on raw (uncentred) Gram matrices."""
    n = k.shape[0]
    kt, lt = k.clone(), l.clone()
    kt.fill_diagonal_(0.0)
    lt.fill_diagonal_(0.0)
    one = torch.ones(n, dtype=torch.float64)
    trace = float(torch.trace(kt @ lt))
    middle = float(one @ kt @ one) * float(one @ lt @ one) / ((n - 1) * (n - 2))
    last = 2.0 / (n - 2) * float(one @ kt @ lt @ one)
    return (trace + middle - last) / (n * (n - 3))


def test_debiased_cka_is_the_unbiased_hsic_of_song_et_al():
    g = _gen(40)
    x = torch.randn(15, 6, generator=g, dtype=torch.float64) + 3.0  # offsets: U-centring must ignore them
    y = x @ torch.randn(6, 4, generator=g, dtype=torch.float64) + torch.randn(15, 4, generator=g, dtype=torch.float64)
    n = x.shape[0]
    k, l = x @ x.T, y @ y.T
    ours = float((u_centered_gram(x) * u_centered_gram(y)).sum()) / (n * (n - 3))
    assert ours == pytest.approx(_song_unbiased_hsic(k, l), rel=1e-10)
    direct = _song_unbiased_hsic(k, l) / math.sqrt(_song_unbiased_hsic(k, k) * _song_unbiased_hsic(l, l))
    assert linear_cka(x, y, debiased=True) == pytest.approx(direct, rel=1e-10)
    with pytest.raises(ValueError, match="at least 4"):
        linear_cka(x[:3], y[:3], debiased=True)


def test_debiased_cka_removes_the_small_n_bias_that_the_permutation_null_shows():
    # n << d, independent features: plain CKA is far above 0, debiased CKA is not
    plain, debiased, null = [], [], []
    for seed in range(10):
        g = _gen(100 + seed)
        x, y = torch.randn(20, 400, generator=g), torch.randn(20, 300, generator=g)
        plain.append(linear_cka(x, y))
        debiased.append(linear_cka(x, y, debiased=True))
        null.append(float(permuted_cka(x, y, n_perm=20, seed=seed).mean()))
    assert np.mean(plain) > 0.8
    assert abs(np.mean(debiased)) < 0.03
    assert np.mean(null) == pytest.approx(np.mean(plain), abs=0.02)  # the plain null sits just as high
    # a real correspondence stands out from its permutation null, plain or debiased
    g = _gen(120)
    x = torch.randn(30, 50, generator=g)
    y = x @ torch.randn(50, 40, generator=g) + 0.5 * torch.randn(30, 40, generator=g)
    for flag in (False, True):
        draws = permuted_cka(x, y, n_perm=50, seed=1, debiased=flag)
        assert draws.shape == (50,) and torch.equal(draws, permuted_cka(x, y, n_perm=50, seed=1, debiased=flag))
        assert linear_cka(x, y, flag) > float(draws.max()) + 0.05


# --- spectral entropy ---------------------------------------------------------------------


def test_spectral_entropy_rank_one_and_equal_directions():
    g = _gen(17)
    u, v = torch.randn(50, 1, generator=g), torch.randn(1, 16, generator=g)
    assert spectral_entropy(u @ v) == pytest.approx(0.0, abs=1e-9)
    assert spectral_entropy(u @ v, center=False) == pytest.approx(0.0, abs=1e-9)
    assert effective_rank(u @ v) == pytest.approx(1.0, abs=1e-8)
    # r orthogonal directions of equal strength: log r, effective rank r
    left = torch.linalg.qr(torch.randn(50, 5, generator=g, dtype=torch.float64))[0]
    right = _orthogonal(16, 18)[:5]
    for r in (2, 5):
        d = 3.0 * left[:, :r] @ right[:r]
        assert spectral_entropy(d, center=False) == pytest.approx(math.log(r), abs=1e-10)
        assert effective_rank(d, center=False) == pytest.approx(r, abs=1e-8)
    # unequal strengths sit strictly between 0 and log r
    uneven = left @ torch.diag(torch.tensor([5.0, 1, 1, 1, 1], dtype=torch.float64)) @ right
    assert 0.3 < spectral_entropy(uneven, center=False) < math.log(5) - 0.3
    # a difference identical on every prompt has no variation left once centred
    assert math.isnan(spectral_entropy(torch.ones(10, 4)))
    assert spectral_entropy(torch.ones(10, 4), center=False) == pytest.approx(0.0, abs=1e-12)


def test_mean_direction_share_against_explicit_projection():
    g = _gen(41)
    d = torch.randn(30, 8, generator=g, dtype=torch.float64) + torch.tensor([2.0] + [0.0] * 7, dtype=torch.float64)
    m = d.mean(0) / d.mean(0).norm()
    explicit = sum(float(row @ m) ** 2 for row in d) / sum(float(row @ row) for row in d)
    assert mean_direction_share(d) == pytest.approx(explicit, rel=1e-12)
    line = torch.randn(30, 1, generator=g) * torch.randn(1, 8, generator=g) + 0.0
    assert mean_direction_share(line) == pytest.approx(1.0, abs=1e-9)  # every difference on the key's line
    noise = torch.randn(2000, 50, generator=g)
    assert mean_direction_share(noise) < 0.05  # isotropic: about 1/d of the energy
    assert math.isnan(mean_direction_share(torch.zeros(4, 3)))


def test_derangement_is_a_permutation_without_fixed_points():
    for n in (2, 3, 10, 257):
        for seed in range(20):
            p = derangement(n, seed)
            assert sorted(p.tolist()) == list(range(n))
            assert (p != torch.arange(n)).all()
    assert not torch.equal(derangement(50, 0), derangement(50, 1))
    with pytest.raises(ValueError, match="at least 2"):
        derangement(1)


# --- analysis on synthetic activations ------------------------------------------------------


def _synthetic(n=400, seed=0, noise=0.3, rank=8):
    """Source states of rank `rank` (decaying scales); Target a noisy linear function of them."""
    g = _gen(seed)
    z = torch.randn(n, rank, generator=g) * torch.linspace(8, 1, rank)
    xs = torch.stack([z @ torch.randn(rank, 20, generator=g) + 1.0 for _ in range(2)], 1)
    xs = xs + 0.01 * torch.randn(xs.shape, generator=g)
    xt = torch.stack([z @ torch.randn(rank, 30, generator=g) - 2.0 for _ in range(3)], 1)
    xt = xt + noise * torch.randn(xt.shape, generator=g)
    # Unlocked: the Source's difference is one direction with a varying size; the Target's two
    us = xs + torch.randn(n, 1, 1, generator=g) * torch.randn(1, 2, 20, generator=g)
    ut = xt + torch.einsum("nc,lcd->nld", torch.randn(n, 2, generator=g), torch.randn(3, 2, 30, generator=g))
    return xs, xt, us, ut


def test_alignment_error_falls_with_rank_and_with_n():
    res = subspace_similarity(*_synthetic(), "src", "tgt", ks=(1, 2, 4, 8, 16), ns=(8, 16, 300))
    err_k = np.stack([res.error_vs_k[k] for k in (1, 2, 4, 8, 16)])  # [k, L_t]
    assert err_k.shape == (5, 3)
    assert (np.diff(err_k, axis=0)[:3] < 0).all()  # falls up to the true rank 8 at every layer
    assert (err_k[0] > 0.5).all() and (err_k[3] < 0.1).all()
    assert np.abs(err_k[4] - err_k[3]).max() < 0.02  # nothing left to gain beyond the true rank
    err_n = res.error_vs_n
    assert (err_n[300] < err_n[8]).all() and (err_n[8] - err_n[300]).min() > 0.1
    assert (err_n[300] < err_n[16]).all()
    np.testing.assert_allclose(err_n[300], res.error_vs_k[8])  # same rank, the whole train split
    assert res.spectral_entropy_source == pytest.approx([0.0, 0.0], abs=1e-9)
    assert res.spectral_entropy_target == pytest.approx([math.log(2)] * 3, abs=0.15)
    assert res.mean_angle_deg.max() < 1.0  # the Target is a function of the same latent
    # Against the nulls: the Target is a function of the Source, so CKA clears its permutation
    # null; the differences ride on 1 (Source) or 2 (Target) directions, which shuffled pairs
    # (carrying both clouds' question content) do not.
    matched = res.cka_debiased[res.layer_map, res.target_layers]
    assert (matched > res.cka_debiased_null_q95 + 0.5).all()
    assert (res.cka_null_q95 < 0.1).all() and (np.abs(res.cka_debiased_null_q95) < 0.05).all()
    assert (res.spectral_entropy_shuffled_q05_source > 1.0).all()
    assert (res.spectral_entropy_shuffled_q05_target > res.spectral_entropy_target + 0.5).all()
    assert res.mean_share_source == pytest.approx([1.0, 1.0], abs=1e-6)
    assert (res.mean_share_shuffled_q95_source < 0.1).all()
    # one line with zero-mean sizes: no common direction, and the sign-flip null says so
    assert res.mean_share_signflip_q95_source == pytest.approx([1.0, 1.0], abs=1e-6)
    assert (res.spectral_entropy_isotropic_target > res.spectral_entropy_target + 1.0).all()


def _no_key_pairs(n=200, d=40, seed=0, key=0.0):
    """Locked and Unlocked states whose difference is per-prompt content (anisotropic, zero mean)
    plus ``key`` times a common direction."""
    g = torch.Generator().manual_seed(seed)
    locked = torch.randn(n, d, generator=g, dtype=torch.float64) * 6
    content = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(2, 0.1, d, dtype=torch.float64)
    direction = torch.randn(d, generator=g, dtype=torch.float64)
    return locked, locked + content + key * direction / direction.norm()


def _share_and_nulls(locked, unlocked, draws=40):
    diffs = unlocked - locked
    flips = [mean_direction_share(sign_flip(diffs, i)) for i in range(draws)]
    shuffled = [mean_direction_share(unlocked[derangement(len(diffs), i)] - locked) for i in range(draws)]
    return mean_direction_share(diffs), np.quantile(flips, 0.95), np.quantile(shuffled, 0.95)


def test_share_along_the_mean_needs_the_sign_flip_null_shuffled_pairs_cannot_fail():
    # No key: the differences are per-prompt content with a zero mean
    share, flip_q95, shuffled_q95 = _share_and_nulls(*_no_key_pairs())
    assert share < flip_q95  # the sign-flip null is not beaten: there is no common direction
    assert share > 1.5 * shuffled_q95  # ...yet it "beats" shuffled pairs, whose added variance dilutes the share
    # A common direction half the content's size: beats the sign-flip null (0.24 vs 0.12)
    share, flip_q95, _ = _share_and_nulls(*_no_key_pairs(key=4.0))
    assert share > 0.2 and share > 1.8 * flip_q95
    # sign flips keep every row's energy and D^T D
    d = torch.randn(30, 7, dtype=torch.float64)
    f = sign_flip(d, 3)
    torch.testing.assert_close(f.norm(dim=1), d.norm(dim=1))
    torch.testing.assert_close(f.T @ f, d.T @ d)
    assert not torch.equal(f, d) and torch.equal(sign_flip(d, 3), f)


def test_isotropic_entropy_reference_sits_below_log_rank():
    h = isotropic_entropy(200, 40)
    assert math.log(40) - 0.1 < h < math.log(40)  # finite-sample spread keeps it just below log d
    assert isotropic_entropy(40, 200) < math.log(39) + 1e-9  # centred: rank n - 1
    assert isotropic_entropy(200, 40, seed=1) == pytest.approx(h, abs=0.02)


def test_subspace_similarity_shapes_range_skips_and_json_round_trip(tmp_path):
    xs, xt, us, ut = _synthetic(n=60, seed=1)
    with pytest.warns(UserWarning, match=r"skipped ranks \[32, 64\]"):
        res = subspace_similarity(xs, xt, us, ut, "src", "tgt", ks=(1, 2, 4, 8, 16, 32, 64), seed=3)
    assert res.n_train == 45 and res.n_heldout == 15
    assert list(res.ks) == [1, 2, 4, 8, 16] and sorted(res.error_vs_k) == [1, 2, 4, 8, 16]
    assert list(res.ns) == default_ns(45, 8) == [8, 16, 32, 45]
    assert list(res.source_layers) == [0, 1] and list(res.target_layers) == [0, 1, 2]
    assert list(res.layer_map) == [0, 0, 1]
    assert res.cka.shape == (2, 3) and ((res.cka >= 0) & (res.cka <= 1 + 1e-12)).all()
    assert res.mean_angle_deg.shape == (3,) and ((res.mean_angle_deg >= 0) & (res.mean_angle_deg <= 90)).all()
    assert all(v.shape == (3,) for v in [*res.error_vs_k.values(), *res.error_vs_n.values()])
    assert res.spectral_entropy_source.shape == (2,) and res.spectral_entropy_target.shape == (3,)
    assert any("skipped ranks" in n for n in res.notes)

    path = res.save(tmp_path)
    assert path.name == "similarity.json"
    data = json.loads(path.read_text())  # strict JSON, dict keys as strings
    assert data["source_name"] == "src" and sorted(data["error_vs_k"], key=int) == ["1", "2", "4", "8", "16"]
    assert np.array(data["cka"]).shape == (2, 3)
    back = SimilarityResult.load(tmp_path)
    for name in SimilarityResult._ARRAYS:
        np.testing.assert_allclose(getattr(back, name), getattr(res, name))
    for k in res.error_vs_k:
        np.testing.assert_allclose(back.error_vs_k[k], res.error_vs_k[k])
    assert back.to_json() == data

    # NaN (an undefined entropy) survives as null
    res.spectral_entropy_source[0] = np.nan
    text = (res.save(tmp_path)).read_text()
    assert "NaN" not in text and math.isnan(SimilarityResult.load(tmp_path).spectral_entropy_source[0])


def test_subspace_similarity_rejects_bad_inputs():
    xs, xt, us, ut = _synthetic(n=40)
    with pytest.raises(ValueError, match="same prompts"):
        subspace_similarity(xs, xt[:-1], us, ut[:-1])
    with pytest.raises(ValueError, match="same shape"):
        subspace_similarity(xs, xt, us[:, :1], ut)
    with pytest.raises(ValueError, match="at least 2"):
        subspace_similarity(xs[:5], xt[:5], us[:5], ut[:5])


# --- tiny real models --------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
    from mkt.models import load_model
    from mkt.organisms.train import OrganismSpec
    from tests.conftest import save_tiny_model

    root = tmp_path_factory.mktemp("similarity_models")
    qwen = save_tiny_model(OrganismSpec(arch="qwen2", d_model=32, n_layers=2, n_heads=4, seed=0), root / "qwen")
    llama = save_tiny_model(OrganismSpec(arch="llama", d_model=48, n_layers=3, n_heads=4, seed=1), root / "llama")
    return load_model(qwen, device="cpu"), load_model(llama, device="cpu")


def test_tiny_models_end_to_end(tiny_pair, tmp_path):
    from mkt.eval.organism_task import LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, problems

    source, target = tiny_pair
    questions = [p.question for p in problems(24, "train", seed=3)]
    acts = collect_activations(source, target, questions, LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, batch_size=16)
    assert [tuple(a.shape) for a in acts] == [(24, 2, 32), (24, 3, 48), (24, 2, 32), (24, 3, 48)]
    assert not torch.equal(acts.x_s_locked, acts.x_s_unlocked)  # the templates differ
    with pytest.warns(UserWarning, match="skipped ranks"):  # 32 > 18 training prompts
        res = subspace_similarity(*acts, "qwen-tiny", "llama-tiny")
    assert res.n_train == 18 and list(res.ks) == [1, 2, 4, 8, 16] and list(res.ns) == [8, 16, 18]
    assert res.cka.shape == (2, 3) and np.isfinite(res.cka).all() and (res.cka <= 1 + 1e-12).all()
    assert res.mean_angle_deg.shape == (3,) and res.spectral_entropy_source.shape == (2,)
    assert res.spectral_entropy_target.shape == (3,) and np.isfinite(res.spectral_entropy_target).all()
    assert all(np.isfinite(v).all() and v.shape == (3,) for v in res.error_vs_k.values())

    png = plot_similarity(res, tmp_path / "plots" / "similarity.png")
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_cli_writes_json_and_png(tiny_pair, tmp_path, monkeypatch, capsys):
    import mkt.models
    from analyses.similarity import ANALYSIS

    main = ANALYSIS.main

    source, target = tiny_pair
    loaded = {"src-dir": source, "tgt-dir": target}
    monkeypatch.setattr(mkt.models, "load_model", lambda name, **kwargs: loaded[name])  # models already built
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="src-dir is not an organism: pass --questions"):  # no organism fallback
        main(["--source", "src-dir", "--target", "tgt-dir", "--n", "20", "--out", str(out)])
    questions = tmp_path / "q.txt"
    questions.write_text("\n".join(["12+34", "56+78+11", "99+10", "13+57+20", "22+33", "40+41+42", "18+19", "70+7"]))
    res = main(["--source", "src-dir", "--target", "tgt-dir", "--questions", str(questions), "--locked",
                "Q:{question}|A:", "--unlocked", "S:{question}|A:", "--out", str(out), "--ks", "1", "2",
                "--k-for-n", "1", "--heldout-fraction", "0.25", "--device", "cpu", "--n-perm", "5"])
    assert res.n_prompts == 8 and res.n_heldout == 2 and list(res.ks) == [1, 2] and res.n_perm == 5
    assert SimilarityResult.load(out).cka_debiased.shape == (2, 3)
    assert (out / "similarity.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "held-out error vs k: k=1:" in printed and "similarity.json" in printed and "permuted" in printed
    with pytest.raises(ValueError, match="--locked"):
        main(["--source", "src-dir", "--target", "tgt-dir", "--questions", str(questions), "--out", str(out)])


@pytest.mark.slow
def test_cli_on_real_architectures_with_real_tokenizers(real_inputs, tmp_path, capsys):
    from mkt.cli import main

    src, tgt = real_inputs("qwen3"), real_inputs("llama")
    out = tmp_path / "real"
    assert main(["analyze", "similarity", "--source", str(src["model"]), "--target", str(tgt["model"]),
                 "--questions", str(src["prompts"]), "--locked", "Question: {question}\nAnswer:", "--unlocked",
                 "Question: {question}\nAnswer: Let's think step by step.", "--ks", "1", "2", "--k-for-n", "2",
                 "--n-perm", "10", "--n-shuffles", "5", "--out", str(out)]) == 0
    res = SimilarityResult.load(out)
    assert res.n_prompts == 12 and res.cka_debiased.shape == (len(res.source_layers), len(res.target_layers))
    assert res.mean_share_target.shape == res.spectral_entropy_shuffled_target.shape == (len(res.target_layers),)
    assert (out / "similarity.png").stat().st_size > 10_000
    assert main(["analyze", "similarity", "--source", str(src["model"]), "--target", str(tgt["model"]),
                 "--out", str(tmp_path / "none")]) == 2
    assert "is not an organism: pass --questions" in capsys.readouterr().err
