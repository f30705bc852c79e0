import numpy as np
import torch

from mkt.intervention import additive, norm_preserving


def test_norm_preserving_against_numpy():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(4, 16, generator=g, dtype=torch.float64)
    r = torch.randn(16, generator=g, dtype=torch.float64)
    u = r / r.norm()
    out = norm_preserving(h, u, 0.3).numpy()
    hn = h.numpy()
    norms = np.linalg.norm(hn, axis=-1, keepdims=True)
    tilt = hn / norms + 0.3 * u.numpy()
    expected = norms * tilt / np.linalg.norm(tilt, axis=-1, keepdims=True)
    assert np.allclose(out, expected, atol=1e-12)
    assert np.allclose(np.linalg.norm(out, axis=-1), norms[:, 0])
    # it rotates toward the key
    assert ((out @ u.numpy()) / norms[:, 0] > (hn @ u.numpy()) / norms[:, 0]).all()


def test_zero_alpha_is_identity_and_per_row_alpha():
    h = torch.randn(3, 8, dtype=torch.float64)
    u = torch.nn.functional.normalize(torch.randn(8, dtype=torch.float64), dim=0)
    assert torch.allclose(norm_preserving(h, u, 0.0), h)
    alphas = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)[:, None]
    rows = norm_preserving(h, u, alphas)
    for i in range(3):
        assert torch.allclose(rows[i], norm_preserving(h[i : i + 1], u, float(alphas[i]))[0])


def test_additive():
    h = torch.tensor([[3.0, 4.0]])
    u = torch.tensor([1.0, 0.0])
    assert torch.allclose(additive(h, u, 0.2), torch.tensor([[4.0, 4.0]]))
