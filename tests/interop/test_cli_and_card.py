"""`mkt export` / `mkt import` / `mkt info` on a tiny model, and the README a pack carries."""

from __future__ import annotations

import json

import torch

from mkt.cli import main
from mkt.key import MasterKey
from mkt.models import model_identity
from mkt.pack import CapabilityPack
from tests.interop.gguf_bytes import read_gguf


def _save(model, path, **kw):
    ident = model_identity(model)
    directions = torch.randn(ident.n_layers, ident.d_model, generator=torch.Generator().manual_seed(1))
    return CapabilityPack(MasterKey(directions, ident), **kw).save(path)


def test_export_import_info(tiny_models, tiny_dirs, tmp_path, capsys):
    model = tiny_models["llama"]
    _save(model, tmp_path / "pack", alpha=0.5, mode="constant", scope="all", layers=[2, 4])
    assert main(["export", str(tmp_path / "pack"), "--format", "gguf-control-vector",
                 "--out", str(tmp_path / "k.gguf")]) == 0
    assert sorted(read_gguf(tmp_path / "k.gguf")[1]) == ["direction.2", "direction.4"]
    assert main(["import", str(tmp_path / "k.gguf"), "--model", str(tiny_dirs["llama"]), "--device", "cpu",
                 "--scale", "2", "--out", str(tmp_path / "back")]) == 0
    back = CapabilityPack.load(tmp_path / "back")
    original = CapabilityPack.load(tmp_path / "pack")
    torch.testing.assert_close(back.key.directions[[2, 4]] * back.alpha, 2 * 0.5 * original.key.directions[[2, 4]])
    capsys.readouterr()
    assert main(["info", str(tmp_path / "back")]) == 0
    out = capsys.readouterr().out
    assert "imported from the llama.cpp control vector `k.gguf`" in out and "mode `constant`, scope `all`" in out
    assert out.startswith("---\nlibrary_name: mkt\n")
    assert (tmp_path / "back" / "README.md").read_text() in out


def test_export_refusal_is_one_line(tiny_models, tmp_path, capsys):
    _save(tiny_models["llama"], tmp_path / "paper", alpha=0.2)  # norm-preserving, prompt-last: the paper's
    assert main(["export", str(tmp_path / "paper"), "--format", "lm-eval-steered", "--out", str(tmp_path / "s.pt")]) == 2
    err = capsys.readouterr().err
    assert "norm-preserving" in err and err.count("\n") == 1
    assert not (tmp_path / "s.pt").exists()


def test_card_of_a_transferred_pack(tiny_models, tmp_path, capsys):
    source, target = tiny_models["qwen2"], tiny_models["llama"]
    ident = model_identity(target)
    provenance = dict(variant="prompt", n=64, aggregator="mean", position="last", locked_template="Q:{question}|A:",
                      unlocked_template="S:{question}|A:", source_model=model_identity(source).to_dict(), k=8,
                      alignment_method="lstsq", alignment_center=True, alignment_n=256, coverage=[0.5] * 5,
                      alignment_heldout_relative_error=[0.25] * 5)
    key = MasterKey(torch.ones(ident.n_layers, ident.d_model), ident, provenance=provenance)
    path = CapabilityPack(key, 0.3).save(tmp_path / "sbs")
    card = (path / "README.md").read_text()
    manifest = json.loads((path / "manifest.json").read_text())
    assert f"| Source | {manifest['source']['name']} (3 layers x 64), " in card
    assert "rank k = 8, fitted on 256 prompt states" in card and "mean 0.50" in card
    assert "Unlocked `S:{question}|A:` minus Locked `Q:{question}|A:`" in card
    assert "| Alpha | 0.3 (set by hand" in card and "not tested: run `mkt eval" in card
    summary = dict(metrics=["correct"], key="transferred key", n_test=100, n_null=24, significant={"correct": True},
                   rows={"baseline": dict(group="baseline", correct=0.2),
                         "transferred key": dict(group="key", alpha=0.3, correct=0.9, correct_effect=0.7,
                                                 correct_p_vs_null=0.04),
                         "null 0": dict(group="null", alpha=0.1, correct=0.3),
                         "isotropic": dict(group="control", alpha=0.3, correct=0.25, correct_p_vs_null=0.8)},
                   null={"correct": dict(effects=[0.1], q95=0.35)})
    (path / "significance.json").write_text(json.dumps(summary))  # the shape mkt eval --null-seeds writes
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Against 24 null draws" in out and "p = 0.040 against the null" in out and "beats it" in out
    assert "isotropic (control): 0.250, p = 0.800" in out
