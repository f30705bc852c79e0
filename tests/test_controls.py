"""Null keys: subspace-matched draws go through the same map, isotropic draws do not."""

import pytest
import torch

from mkt.alignment import fit_alignment, transfer
from mkt.controls import isotropic_null, subspace_matched_null
from mkt.key import MasterKey
from mkt.models import ModelIdentity
from tests.test_alignment import SRC, TGT, _acts


@pytest.fixture(scope="module")
def setup():
    xs, xt = _acts(0)
    alignment = fit_alignment(xs, xt, SRC, TGT, k=4, center=True)
    g = torch.Generator().manual_seed(1)
    key = MasterKey(torch.randn(SRC.n_layers, SRC.d_model, generator=g) * torch.tensor([[1.0], [3.0], [0.5]]), SRC)
    return alignment, key


def test_subspace_matched_null_is_the_map_applied_to_random_source_keys(setup):
    alignment, key = setup
    null = subspace_matched_null(key, alignment, n=6, seed=5)
    assert len(null) == 6 and all(k.model == TGT for k in null)
    bases = alignment.target_bases  # [L_t, d_t, k]
    for k in null:
        # every draw lies inside the Target's top-k subspace of its layer
        inside = torch.einsum("ld,ldk,lek->le", k.directions, bases, bases)
        assert torch.allclose(inside, k.directions, atol=1e-5)
    # an independent computation of one draw: Gaussian rows with the key's norms, then r V_s M V_t^T
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(key.directions.shape, generator=g, dtype=torch.float64)
    draw = (noise / noise.norm(dim=-1, keepdim=True) * key.norms().double()[:, None]).float()
    expected = torch.stack([draw[ls] @ alignment.source_bases[lt] @ alignment.cores[lt] @ bases[lt].T
                            for lt, ls in enumerate(alignment.layer_map)])
    assert torch.allclose(null[0].directions, expected, atol=1e-5)
    assert not torch.allclose(null[0].directions, null[1].directions)
    again = subspace_matched_null(key, alignment, n=6, seed=5)
    assert all(torch.equal(a.directions, b.directions) for a, b in zip(null, again))


def test_isotropic_null_keeps_norms_and_leaves_the_subspace(setup):
    alignment, key = setup
    moved = transfer(key, alignment)
    null = isotropic_null(moved, n=4, seed=0)
    for k in null:
        assert torch.allclose(k.norms(), moved.norms(), rtol=1e-5)
        inside = torch.einsum("ld,ldk->lk", k.directions, alignment.target_bases).norm(dim=-1)
        assert (inside < 0.9 * k.norms()).all()  # a random direction is mostly outside a rank-4 subspace
    with pytest.raises(ValueError, match="at least one draw"):
        isotropic_null(moved, n=0)
    with pytest.raises(ValueError, match="at least one draw"):
        subspace_matched_null(key, alignment, n=0)


def test_null_needs_the_alignments_source(setup):
    alignment, _ = setup
    other = MasterKey(torch.ones(2, 7), ModelIdentity("x", "A", 2, 7, 10))
    with pytest.raises(ValueError, match="fit the alignment from the key's model"):
        subspace_matched_null(other, alignment, n=2)


def test_target_principal_keys_follow_one_property_of_the_prompts_through_depth():
    """Synthetic Locked states: two latent properties written into each layer through a random basis;
    +PC1 must be the stronger property's direction at every layer, with one consistent sign."""
    from mkt.controls import target_principal_keys

    g = torch.Generator().manual_seed(0)
    ident = ModelIdentity("t", "B", 4, 16, 10)
    z = torch.randn(300, 2, generator=g) * torch.tensor([3.0, 1.0])  # property 0 dominates
    bases = [torch.linalg.qr(torch.randn(16, 16, generator=g))[0][:, :2] for _ in range(4)]
    flips = [1.0, -1.0, 1.0, -1.0]  # the sign a layer writes the property with
    x = torch.stack([(z * torch.tensor([f, 1.0])) @ b.T for b, f in zip(bases, flips)], 1)
    x = x + 0.01 * torch.randn(x.shape, generator=g)
    keys = target_principal_keys(x, ident, m=2)
    assert list(keys) == ["+PC1", "-PC1", "+PC2", "-PC2"]
    pc1 = keys["+PC1"].directions
    for layer, (b, f) in enumerate(zip(bases, flips)):
        truth = f * b[:, 0]
        assert torch.nn.functional.cosine_similarity(pc1[layer], truth, dim=0).abs() > 0.99
    # one sign through depth: each layer's direction reads the same property with the same sign
    reads = torch.stack([x[:, layer] @ pc1[layer] for layer in range(4)])
    assert (torch.corrcoef(reads) > 0.99).all()
    assert torch.allclose(keys["-PC1"].directions, -pc1)
    with pytest.raises(ValueError, match="x_locked must be"):
        target_principal_keys(x[:, :3], ident)
