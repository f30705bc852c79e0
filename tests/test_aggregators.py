import numpy as np
import pytest
import torch

from mkt.aggregators import aggregate, mean_difference, pca_direction
from mkt.errors import NonFiniteError


def _diffs(seed=0, n=20, layers=3, d=8):
    g = torch.Generator().manual_seed(seed)
    shift = torch.randn(layers, d, generator=g)
    return torch.randn(n, layers, d, generator=g) * 0.3 + shift


def test_mean_matches_numpy():
    d = _diffs()
    assert np.allclose(mean_difference(d).numpy(), d.numpy().mean(0), atol=1e-6)


def test_pca_matches_numpy_and_points_toward_the_mean():
    d = _diffs(1)
    r = pca_direction(d)
    for layer in range(d.shape[1]):
        x = d[:, layer].double().numpy()
        _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
        assert abs(abs(np.dot(vt[0], r[layer].numpy())) - 1) < 1e-5
        assert np.dot(r[layer].numpy(), x.mean(0)) >= 0
    assert torch.allclose(r.norm(dim=-1), torch.ones(3), atol=1e-6)


def test_pca_sign_flips_with_the_data():
    d = _diffs(2)
    assert torch.allclose(pca_direction(-d), -pca_direction(d), atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError, match="at least 2 queries"):
        pca_direction(_diffs(n=1))
    with pytest.raises(ValueError, match="empty prompt set"):
        mean_difference(torch.zeros(0, 2, 4))
    bad = _diffs()
    bad[3, 1, 2] = float("nan")
    with pytest.raises(NonFiniteError):
        mean_difference(bad)
    with pytest.raises(ValueError, match="unknown aggregator 'median'"):
        aggregate(_diffs(), "median")
