import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from mkt.alignment import (
    SubspaceAlignment,
    fit_alignment,
    relative_depth_map,
    select_rank,
    transfer,
)
from mkt.errors import CorruptArtifactError, IncompatibleModelError
from mkt.key import MasterKey
from mkt.models import ModelIdentity, model_identity

SRC = ModelIdentity("src", "A", 3, 12, 50)
TGT = ModelIdentity("tgt", "B", 5, 20, 50)


def _acts(seed, n=40, src=SRC, tgt=TGT, noise=0.05):
    """Target states that are a noisy linear function of low-rank source states."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 6, generator=g)
    xs = torch.stack([z @ torch.randn(6, src.d_model, generator=g) + 2.0 for _ in range(src.n_layers)], 1)
    xt = torch.stack([z @ torch.randn(6, tgt.d_model, generator=g) - 1.0 for _ in range(tgt.n_layers)], 1)
    return xs, xt + noise * torch.randn(xt.shape, generator=g)


def test_relative_depth_map():
    assert relative_depth_map(4, 6) == [0, 0, 1, 1, 2, 3]  # floor(3 * lt / 5)
    assert relative_depth_map(6, 4) == [0, 1, 3, 5]
    assert relative_depth_map(5, 5) == list(range(5))
    assert relative_depth_map(3, 1) == [2]
    for ls, lt in [(36, 40), (40, 36), (2, 28)]:
        m = relative_depth_map(ls, lt)
        assert m[0] == 0 and m[-1] == ls - 1 and m == sorted(m)


def _numpy_map(xs, xt, k, center):
    if center:
        xs, xt = xs - xs.mean(0), xt - xt.mean(0)
    vs = np.linalg.svd(xs, full_matrices=False)[2][:k].T
    vt = np.linalg.svd(xt, full_matrices=False)[2][:k].T
    m = np.linalg.pinv(xs @ vs) @ (xt @ vt)
    return vs @ m @ vt.T


@pytest.mark.parametrize("center", [False, True])
def test_transfer_map_matches_numpy(center):
    xs, xt = _acts(0)
    al = fit_alignment(xs, xt, SRC, TGT, k=5, center=center)
    key = torch.randn(SRC.n_layers, SRC.d_model, dtype=torch.float64)
    mapped = al.map_directions(key)
    for lt, ls in enumerate(al.layer_map):
        t = _numpy_map(xs[:, ls].double().numpy(), xt[:, lt].double().numpy(), 5, center)
        expected = key[ls].numpy() @ t
        assert np.allclose(mapped[lt].numpy(), expected, atol=1e-4 * np.abs(expected).max())


def test_factored_storage_shapes():
    xs, xt = _acts(1)
    al = fit_alignment(xs, xt, SRC, TGT, k=4)
    assert al.source_bases.shape == (5, 12, 4)
    assert al.cores.shape == (5, 4, 4)
    assert al.target_bases.shape == (5, 20, 4)


def test_heldout_error_falls_with_rank_and_is_small_for_a_linear_relation():
    xs, xt = _acts(2, n=80)
    errors = [float(fit_alignment(xs[:60], xt[:60], SRC, TGT, k=k, center=True)
                    .relative_error(xs[60:], xt[60:]).mean()) for k in (1, 3, 6)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.1
    best, all_errors = select_rank(xs[:60], xt[:60], xs[60:], xt[60:], SRC, TGT, [1, 3, 6], center=True)
    assert best == 6 and set(all_errors) == {1, 3, 6}


def test_procrustes_recovers_a_rotation():
    g = torch.Generator().manual_seed(3)
    ident = ModelIdentity("m", "A", 1, 8, 10)
    xs = torch.randn(50, 1, 8, generator=g)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    xt = xs @ q
    al = fit_alignment(xs, xt, ident, ident, k=8, method="procrustes")
    assert al.relative_error(xs, xt).item() < 1e-4
    r = torch.randn(1, 8, generator=g)
    assert torch.allclose(al.map_directions(r), r @ q, atol=1e-4)


def test_ridge_shrinks_toward_zero():
    xs, xt = _acts(4)
    weak = fit_alignment(xs, xt, SRC, TGT, k=5, method="ridge", ridge=1e-6)
    strong = fit_alignment(xs, xt, SRC, TGT, k=5, method="ridge", ridge=10.0)
    lstsq = fit_alignment(xs, xt, SRC, TGT, k=5)
    assert torch.allclose(weak.cores, lstsq.cores, atol=1e-3)
    assert strong.cores.norm() < 0.5 * lstsq.cores.norm()


def test_coverage():
    xs, xt = _acts(5)
    al = fit_alignment(xs, xt, SRC, TGT, k=3)
    inside = torch.einsum("lk,ldk->ld", torch.randn(5, 3), al.source_bases)
    # a key lying in each matched layer's top-k subspace is fully covered
    key = torch.zeros(3, 12)
    for lt, ls in enumerate(al.layer_map):
        key[ls] = inside[lt]
    cov = al.coverage(key)
    assert torch.allclose(cov[[0, 2, 4]], torch.ones(3), atol=1e-5)
    # a key orthogonal to the subspace is not covered at all
    basis = al.source_bases[0]
    ortho = torch.randn(12) - basis @ (basis.T @ torch.randn(12))
    ortho = ortho - basis @ (basis.T @ ortho)
    key2 = torch.randn(3, 12)
    key2[al.layer_map[0]] = ortho
    assert al.coverage(key2)[0] < 1e-5


def test_rank_and_shape_errors():
    xs, xt = _acts(6, n=10)
    with pytest.raises(ValueError, match="k=11 is out of range.*n=10"):
        fit_alignment(xs, xt, SRC, TGT, k=11)
    with pytest.raises(ValueError, match="k=0"):
        fit_alignment(xs, xt, SRC, TGT, k=0)
    with pytest.raises(ValueError, match="same prompts"):
        fit_alignment(xs[:9], xt, SRC, TGT, k=2)
    with pytest.raises(IncompatibleModelError, match="'tgt' has 5 layers x 20"):
        fit_alignment(xs, xt[:, :, :10], SRC, TGT, k=2)
    with pytest.raises(ValueError, match="unknown alignment method"):
        fit_alignment(xs, xt, SRC, TGT, k=2, method="cca2")


def test_transfer_and_identity():
    xs, xt = _acts(7)
    al = fit_alignment(xs, xt, SRC, TGT, k=4)
    key = MasterKey(torch.randn(3, 12), SRC, provenance={"n": 8, "aggregator": "mean"})
    moved = transfer(key, al)
    assert moved.model == TGT and moved.directions.shape == (5, 20)
    assert moved.provenance["k"] == 4 and len(moved.provenance["coverage"]) == 5
    with pytest.raises(IncompatibleModelError, match="fit the alignment from the key's model"):
        transfer(MasterKey(torch.randn(5, 20), TGT), al)
    same = transfer(key, SubspaceAlignment.identity(SRC))
    assert torch.equal(same.directions, key.directions)


def test_save_load_round_trip_is_bit_exact(tmp_path):
    xs, xt = _acts(8)
    al = fit_alignment(xs, xt, SRC, TGT, k=4, center=True)
    back = SubspaceAlignment.load(al.save(tmp_path / "a.safetensors"))
    for name in ("source_bases", "cores", "target_bases", "source_means", "target_means"):
        assert torch.equal(getattr(al, name), getattr(back, name))
    assert back.layer_map == al.layer_map and back.source == SRC and back.diagnostics == al.diagnostics
    ident = SubspaceAlignment.load(SubspaceAlignment.identity(SRC).save(tmp_path / "i.safetensors"))
    assert ident.is_identity
    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(CorruptArtifactError, match="not a readable mkt alignment"):
        SubspaceAlignment.load(tmp_path / "bad.safetensors")
    with pytest.raises(FileNotFoundError):
        SubspaceAlignment.load(tmp_path / "none.safetensors")


def test_non_finite_alignments_are_refused_when_made_saved_and_loaded(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from mkt.errors import NonFiniteError

    xs, xt = _acts(9)
    with pytest.raises(ValueError, match="ridge strength must be a finite number"):
        fit_alignment(xs, xt, SRC, TGT, k=4, method="ridge", ridge=float("nan"))
    bad = xs.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError):
        fit_alignment(bad, xt, SRC, TGT, k=4)
    al = fit_alignment(xs, xt, SRC, TGT, k=4, center=True)
    with pytest.raises(NonFiniteError, match="NaN or inf in the alignment's cores"):
        SubspaceAlignment(SRC, TGT, al.layer_map, "lstsq", 4, 10, True, al.source_bases, al.cores * float("nan"),
                          al.target_bases, al.source_means, al.target_means)
    path = al.save(tmp_path / "a.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["cores"] = tensors["cores"] * 2.0  # tampered: the hash no longer matches
    save_file(tensors, str(tmp_path / "t.safetensors"), metadata=meta)
    with pytest.raises(CorruptArtifactError, match="do not match the hash"):
        SubspaceAlignment.load(tmp_path / "t.safetensors")
    old = json.loads(meta["mkt"]) | {"format_version": 1}
    save_file(load_file(str(path)), str(tmp_path / "v1.safetensors"), metadata={"mkt": json.dumps(old)})
    with pytest.raises(CorruptArtifactError, match="format version 1, not 2"):
        SubspaceAlignment.load(tmp_path / "v1.safetensors")


def test_alignment_metadata_is_validated(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    xs, xt = _acts(10)
    path = fit_alignment(xs, xt, SRC, TGT, k=4).save(tmp_path / "a.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["mkt"])
    tensors = load_file(str(path))
    for edit, message in ((lambda m: m | {"layer_map": [0, 1]}, "field 'layer_map' must list"),
                          (lambda m: m | {"k": "4"}, "field 'k' is missing or of the wrong type"),
                          (lambda m: m | {"target": [1, 2]}, "field 'target' must be an object"),
                          (lambda m: m | {"source": m["source"] | {"n_layers": 0}}, "field 'source.n_layers' must be a whole number >= 1")):
        save_file(tensors, str(tmp_path / "e.safetensors"), metadata={"mkt": json.dumps(edit(meta))})
        with pytest.raises(CorruptArtifactError, match=message):
            SubspaceAlignment.load(tmp_path / "e.safetensors")
    extra = meta | {"source": meta["source"] | {"revision": "main"}, "written_by": "a newer mkt"}
    save_file(tensors, str(tmp_path / "x.safetensors"), metadata={"mkt": json.dumps(extra)})
    assert SubspaceAlignment.load(tmp_path / "x.safetensors").source == SRC  # unknown fields tolerated


def test_a_key_transfers_only_through_an_alignment_fitted_at_its_hook(qwen, llama, tmp_path):
    from mkt.activations import prompt_states

    prompts = [f"Q:{a}+{b}|A:" for a, b in zip(range(10, 40), range(40, 70))]
    x_s, x_t = (prompt_states(m, prompts, hook="hook_mlp_out") for m in (qwen, llama))
    al = fit_alignment(x_s, x_t, model_identity(qwen), model_identity(llama), 4, hook="hook_mlp_out")
    loaded = SubspaceAlignment.load(al.save(tmp_path / "al.safetensors"))
    assert loaded.hook == "hook_mlp_out"
    g = torch.Generator().manual_seed(0)
    key = MasterKey(torch.randn(qwen.cfg.n_layers, qwen.cfg.d_model, generator=g), model_identity(qwen),
                    "hook_mlp_out")
    assert transfer(key, loaded).hook == "hook_mlp_out"
    with pytest.raises(IncompatibleModelError, match="the key was read at hook_resid_post, position 'last', but the "
                                                     "alignment was fitted on states at hook_mlp_out"):
        transfer(replace(key, hook="hook_resid_post"), loaded)
    with pytest.raises(IncompatibleModelError, match="position 'mean'"):
        transfer(replace(key, provenance={"position": "mean"}), loaded)
    # a file whose recorded hook does not fit its tensors is refused when read, not at an einsum later
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(tmp_path / "al.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["mkt"])
    meta["k"] = 3  # the metadata is not hashed: its shapes are checked against the tensors instead
    save_file(load_file(str(tmp_path / "al.safetensors")), str(tmp_path / "edited.safetensors"),
              metadata={"mkt": json.dumps(meta)})
    with pytest.raises(CorruptArtifactError, match=r"'source_bases' is \(\d+, \d+, 4\), not \(\d+, \d+, 3\)"):
        SubspaceAlignment.load(tmp_path / "edited.safetensors")
    # select_rank fits at the hook it is given
    rank, errors = select_rank(x_s[:20], x_t[:20], x_s[20:], x_t[20:], model_identity(qwen), model_identity(llama),
                               [2, 4], hook="hook_mlp_out")
    assert rank in (2, 4) and set(errors) == {2, 4}


@pytest.mark.parametrize("qwen3_is_source", [True, False])
def test_a_per_head_key_transfers_between_models_whose_heads_differ_from_d_model(qwen3_is_source, real_tiny_dir,
                                                                                 tmp_path):
    """Qwen3 (4 x 16 heads, d_model 48) <-> Llama (4 x 16 heads, d_model 64), through `mkt transfer`."""
    from mkt.cli import main
    from mkt.models import load_model
    from mkt.pack import CapabilityPack
    from mkt.tiny_models import save_tiny_model
    from tests.conftest import TOKENIZERS

    real_tiny_dir("qwen3")  # skips without ../shared/tokenizers
    source, target = save_tiny_model("qwen3", TOKENIZERS, tmp_path / "qwen3-48", d_model=48), real_tiny_dir("llama")
    if not qwen3_is_source:
        source, target = target, source
    questions = tmp_path / "q.txt"
    questions.write_text("".join(f"Tom has {a} apples and buys {b} more. How many?\n" for a, b in
                                 zip(range(3, 33), range(20, 50))))
    assert main(["transfer", "--source", str(source), "--target", str(target), "--questions", str(questions),
                 "--locked", "Question: {question}\nAnswer:", "--unlocked",
                 "Question: {question}\nAnswer: Let's think step by step.", "--hook", "attn.hook_z", "--k", "4",
                 "--out", str(tmp_path / "pack"), "--device", "cpu"]) == 0
    pack = CapabilityPack.load(tmp_path / "pack")
    llama = load_model(target)
    assert pack.key.hook == "attn.hook_z"
    assert pack.key.directions.shape == (llama.cfg.n_layers, llama.cfg.n_heads * llama.cfg.d_head)
    alignment = SubspaceAlignment.load(tmp_path / "pack" / "alignment.safetensors")
    qwen3_side = alignment.source if qwen3_is_source else alignment.target
    assert alignment.hook == "attn.hook_z" and qwen3_side.d_model == 48 and qwen3_side.n_heads == 4
    assert alignment.source_bases.shape[1] == alignment.target_bases.shape[1] == 64  # heads side by side
    # `mkt align` fits at a hook and positions too, and records them
    assert main(["align", "--source", str(source), "--target", str(target), "--questions", str(questions),
                 "--locked", "Question: {question}\nAnswer:", "--hook", "attn.hook_z", "--position", "last-2",
                 "--k", "4", "--out", str(tmp_path / "al.safetensors"), "--device", "cpu"]) == 0
    fitted = SubspaceAlignment.load(tmp_path / "al.safetensors")
    assert (fitted.hook, fitted.position) == ("attn.hook_z", "last-2")
    ids = llama.tokenizer(["Question: 2 + 2?\nAnswer:"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        plain = llama(ids)[:, -1]
        with pack.apply(llama, alpha=0.8):
            steered = llama(ids)[:, -1]
    assert (steered - plain).abs().max() > 1e-3


def test_cross_validated_error_is_the_mean_over_folds_of_fit_alignment_held_out_error():
    from mkt.alignment import cross_validate_rank

    xs, xt = _acts(7, n=60, noise=0.5)
    sel = cross_validate_rank(xs, xt, SRC, TGT, [1, 3, 6], folds=3, seed=4)
    # the same folds by hand: groups shuffled by random.Random(seed), dealt round-robin
    import random as _random

    ids = list(range(60))
    _random.Random(4).shuffle(ids)
    fold = torch.tensor([dict((g, i % 3) for i, g in enumerate(ids))[g] for g in range(60)])
    for k in (1, 3, 6):
        by_hand = np.mean([fit_alignment(xs[fold != f], xt[fold != f], SRC, TGT, k=k)
                           .relative_error(xs[fold == f], xt[fold == f]).double().numpy() for f in range(3)], axis=0)
        assert sel.errors[(k, 1e-2)] == pytest.approx(float(by_hand.mean()), rel=1e-5)
    assert sel.k == min(sel.errors, key=sel.errors.get)[0] and sel.error == min(sel.errors.values())


def test_cross_validation_picks_the_true_rank_and_flags_a_map_that_does_not_beat_the_mean():
    from mkt.alignment import cross_validate_rank

    xs, xt = _acts(8, n=80)  # a rank-6 linear relation: more rank overfits, less underfits
    sel = cross_validate_rank(xs, xt, SRC, TGT, [1, 2, 6, 12], center=True, folds=4)
    assert sel.k == 6 and sel.error < 0.2 and sel.beats_mean
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(xt.shape, generator=g)  # unrelated Target states: nothing to predict
    unrelated = cross_validate_rank(xs, noise, SRC, TGT, [1, 2, 6, 12], center=True, folds=4)
    assert unrelated.error >= 1.0 and not unrelated.beats_mean


def test_cross_validation_keeps_a_question_s_prompts_together_and_tries_every_ridge():
    from mkt.alignment import cross_validate_rank

    xs, xt = _acts(9, n=40, noise=1.0)
    twice_s, twice_t = torch.cat([xs, xs]), torch.cat([xt, xt])  # each question's prompt twice
    split = cross_validate_rank(twice_s, twice_t, SRC, TGT, [12], folds=4)
    grouped = cross_validate_rank(twice_s, twice_t, SRC, TGT, [12], folds=4, groups=list(range(40)) * 2)
    once = cross_validate_rank(xs, xt, SRC, TGT, [12], folds=4)
    # grouped, the duplicates change nothing (same folds, same least squares); split, they leak
    assert grouped.error == pytest.approx(once.error, rel=1e-6) and split.error < grouped.error - 0.05
    sel = cross_validate_rank(xs, xt, SRC, TGT, [3, 6], method="ridge", ridges=[1e-4, 10.0], folds=4)
    assert set(sel.errors) == {(3, 1e-4), (3, 10.0), (6, 1e-4), (6, 10.0)}
    assert sel.errors[(6, 1e-4)] < sel.errors[(6, 10.0)]
    with pytest.raises(ValueError, match="folds"):
        cross_validate_rank(xs[:3], xt[:3], SRC, TGT, [1], folds=5)
    with pytest.raises(ValueError, match="no candidate rank"):
        cross_validate_rank(xs[:8], xt[:8], SRC, TGT, [50], folds=4)
