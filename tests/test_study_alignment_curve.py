import pytest
import torch

from mkt.alignment import fit_alignment
from mkt.models import ModelIdentity
from mkt.study.alignment_curve import curve, table

SRC = ModelIdentity("src", "A", 3, 12, 50)
TGT = ModelIdentity("tgt", "B", 4, 10, 50)


def test_curve_rows_are_fit_alignment_held_out_errors_and_flag_one_cv_choice_per_n():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(90, 3, generator=g)
    xs = torch.stack([z @ torch.randn(3, 12, generator=g) for _ in range(3)], 1) + 0.1 * torch.randn(90, 3, 12, generator=g)
    xt = torch.stack([z @ torch.randn(3, 10, generator=g) for _ in range(4)], 1) + 0.3 * torch.randn(90, 4, 10, generator=g)
    rows = curve(xs, xt, SRC, TGT, ns=[20, 60, 100], ks=[1, 3, 8, 64], n_heldout=30, center=True, folds=4)
    assert {r["n"] for r in rows} == {20, 60}  # 100 does not fit before the 30 held-out questions
    for r in rows:
        by_hand = fit_alignment(xs[:r["n"]], xt[:r["n"]], SRC, TGT, k=r["k"], center=True).relative_error(
            xs[60:], xt[60:])
        assert r["heldout_error"] == pytest.approx(float(by_hand.mean()), rel=1e-5)
        assert r["worst_layer"] == pytest.approx(float(by_hand.max()), rel=1e-5)
    assert sorted(r["k"] for r in rows if r["n"] == 20) == [1, 3, 8]  # k <= min(n, d_s, d_t)
    for n in (20, 60):
        assert sum(r["cv_chosen"] for r in rows if r["n"] == n) == 1
    assert next(r for r in rows if r["n"] == 60 and r["cv_chosen"])["k"] == 3  # the true rank
    md = table(rows)
    assert "| src -> tgt | yes | 60 |" in md and "k=3:" in md


def test_main_reads_cached_states_writes_curve_json_and_refuses_a_stale_cache(tmp_path, monkeypatch, capsys):
    import json

    from safetensors.torch import save_file

    from mkt.study import alignment_curve

    monkeypatch.setattr(alignment_curve, "MODELS", ("a:src", "a:tgt"))
    monkeypatch.setattr(alignment_curve, "PAIRS", (("a:src", "a:tgt"),))
    monkeypatch.setattr(alignment_curve, "NS", (16, 32))
    monkeypatch.setattr(alignment_curve, "KS", (2, 4))
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": f"q{i}"}) + "\n" for i in range(50)))
    g = torch.Generator().manual_seed(1)
    for spec, ident in (("a:src", SRC), ("a:tgt", TGT)):
        save_file({"states": torch.randn(40, ident.n_layers, ident.d_model, generator=g)},
                  str(tmp_path / f"states-{spec.replace(':', '_')}-40.safetensors"),
                  metadata={"identity": json.dumps(ident.to_dict())})
    alignment_curve.main(["--out", str(tmp_path), "--questions", str(questions), "--n-heldout", "8"])
    rows = json.loads((tmp_path / "curve.json").read_text())
    assert {(r["n"], r["k"], r["center"]) for r in rows} == {(n, k, c) for n in (16, 32) for k in (2, 4)
                                                             for c in (False, True)}
    assert "| src -> tgt | no | 16 |" in capsys.readouterr().out
    monkeypatch.setattr(alignment_curve, "NS", (24, 32))  # 40 questions: a cache of another shape is refused
    save_file({"states": torch.zeros(40, 2, 2)}, str(tmp_path / "states-a_src-40.safetensors"),
              metadata={"identity": json.dumps(SRC.to_dict())})
    with pytest.raises(SystemExit, match="delete it and run again"):
        alignment_curve.main(["--out", str(tmp_path), "--questions", str(questions), "--n-heldout", "8"])
