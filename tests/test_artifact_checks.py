"""Packs and alignments are checked completely where they are written and where they are read:
the cases an earlier review found slipping through one side (issue 23)."""

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from mkt.alignment import SubspaceAlignment, _tensor_digest, fit_alignment, transfer
from mkt.errors import CorruptArtifactError, MktError
from mkt.key import MasterKey
from mkt.models import ModelIdentity
from mkt.pack import MANIFEST, TENSORS, CapabilityPack
from mkt.pack_card import CARD

SRC = ModelIdentity("src", "LlamaForCausalLM", 2, 6, 50)
TGT = ModelIdentity("tgt", "Qwen2ForCausalLM", 3, 8, 60)


@pytest.fixture
def alignment_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    al = fit_alignment(torch.randn(20, 2, 6, generator=g), torch.randn(20, 3, 8, generator=g), SRC, TGT, k=4)
    return al.save(tmp_path / "a.safetensors")


def _rewrite(path, out, edit_tensors=lambda t: None, edit_meta=lambda m: None):
    """``path``'s alignment with its tensors or metadata edited and the hash made consistent again."""
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["mkt"])
    tensors = load_file(str(path))
    edit_tensors(tensors)
    edit_meta(meta)
    meta["sha256"] = _tensor_digest(tensors)
    save_file(tensors, str(out), metadata={"mkt": json.dumps(meta)})
    return out


def test_a_pack_whose_key_was_edited_to_nan_is_refused_when_saved_and_nothing_is_written(tmp_path):
    key = MasterKey(torch.randn(3, 8), TGT)
    pack = CapabilityPack(key)
    key.directions[1, 2] = float("nan")  # after the key was made: MasterKey's own check has run
    with pytest.raises(CorruptArtifactError, match=r"'directions' holds NaN or inf; the key was changed after"):
        pack.save(tmp_path / "p")
    assert not (tmp_path / "p").exists()
    pack.alpha = float("inf")
    key.directions[1, 2] = 0.0
    with pytest.raises(CorruptArtifactError, match="field 'alpha' must be a finite number"):
        pack.save(tmp_path / "p")
    assert not (tmp_path / "p").exists()


def test_a_pack_saved_again_replaces_both_files_and_loads_bit_exact(tmp_path):
    first = CapabilityPack(MasterKey(torch.randn(3, 8), TGT), alpha=0.3).save(tmp_path / "p")
    second = MasterKey(torch.randn(3, 8, dtype=torch.float64), TGT)
    CapabilityPack(second, alpha=0.7).save(first)
    back = CapabilityPack.load(first)
    assert torch.equal(back.key.directions, second.directions.float()) and back.alpha == 0.7
    assert sorted(p.name for p in first.iterdir()) == sorted([TENSORS, MANIFEST, CARD])  # no temporary files left


@pytest.mark.parametrize("edit, message", [
    (lambda m: m | {"format_version": "1"},
     r"field 'format_version' must be the whole number 1, got '1' \(a JSON str\)"),
    (lambda m: m | {"format_version": True}, "field 'format_version' must be the whole number 1, got True"),
    (lambda m: m | {"format_version": 2}, "pack format version 2 is not 1"),
    (lambda m: m | {"sha256": 7}, "field 'sha256' must be the 64-character hex"),
    (lambda m: m | {"provenance": {"source_model": "llama"}}, "field 'provenance.source_model' must be an object"),
    (lambda m: m | {"provenance": {"coverage": ["x"]}}, "field 'provenance.coverage' must be a list of finite"),
    (lambda m: m | {"provenance": {"position": 3}}, "field 'provenance.position' is 3, not a prompt position"),
    (lambda m: m | {"provenance": {"layer_map": "0,1"}}, "field 'provenance.layer_map' must be a list"),
    (lambda m: m | {"layers": []}, "field 'layers' must be null or a non-empty list"),
])
def test_manifest_values_of_the_wrong_type_are_refused_by_field(tmp_path, edit, message):
    out = CapabilityPack(MasterKey(torch.randn(3, 8), TGT)).save(tmp_path / "p")
    (out / MANIFEST).write_text(json.dumps(edit(json.loads((out / MANIFEST).read_text()))))
    with pytest.raises(CorruptArtifactError, match=message):
        CapabilityPack.load(out)


def test_pack_paths_that_are_not_pack_directories(tmp_path):
    (tmp_path / "file").write_text("x")
    for path, message in ((tmp_path / "file", "is not a capability pack directory: pass the folder"),
                          (tmp_path / "none", r"is not a capability pack directory \(no such path\)")):
        with pytest.raises(CorruptArtifactError, match=message):
            CapabilityPack.load(path)
    out = CapabilityPack(MasterKey(torch.randn(3, 8), TGT)).save(tmp_path / "p")
    (out / MANIFEST).unlink()
    (out / MANIFEST).mkdir()
    with pytest.raises(CorruptArtifactError, match="manifest.json is a directory, not a manifest object"):
        CapabilityPack.load(out)


@pytest.mark.parametrize("edit, message", [
    (lambda t: t.update(cores=torch.randn(3, 6, 6)), r"tensor 'cores' is \(3, 6, 6\), not \(3, 4, 4\)"),
    (lambda t: t.pop("cores"), "tensor 'cores' is missing"),
    (lambda t: [t.pop(n) for n in list(t)] and t.update(other=torch.zeros(1)), "tensor 'source_bases' is missing"),
    (lambda t: t.update(target_means=torch.zeros(3, 8, dtype=torch.int32)), "tensor 'target_means' is torch.int32, not "
                                                                             "floating point"),
])
def test_alignment_tensors_missing_or_misshapen_with_a_consistent_hash_are_refused_on_load(
        alignment_file, tmp_path, edit, message):
    # before the fix these loaded, and the transfer failed with an einsum RuntimeError or an AttributeError
    bad = _rewrite(alignment_file, tmp_path / "b.safetensors", edit_tensors=edit)
    with pytest.raises(CorruptArtifactError, match=f"b.safetensors: {message}"):
        SubspaceAlignment.load(bad)


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(format_version="2"), "format version '2', not 2"),
    (lambda m: m.update(k=7), "field 'k' is 7, above the widths 6 and 8"),
    (lambda m: m.update(k=True), "field 'k' is missing or of the wrong type"),
    (lambda m: m.update(layer_map=[0, 1, True]), "field 'layer_map' must list a source layer"),
    (lambda m: m.update(method="identity"), "field 'method' is 'identity' but the source and target differ"),
    (lambda m: m.update(position=["last"]), "field 'position' is missing or of the wrong type"),
])
def test_alignment_metadata_of_the_wrong_type_is_refused_on_load(alignment_file, tmp_path, edit, message):
    with pytest.raises(CorruptArtifactError, match=message):
        SubspaceAlignment.load(_rewrite(alignment_file, tmp_path / "b.safetensors", edit_meta=edit))


def test_alignment_paths_and_metadata_that_is_not_an_object(alignment_file, tmp_path):
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(CorruptArtifactError, match="dir.safetensors is a directory, not an alignment file"):
        SubspaceAlignment.load(tmp_path / "dir.safetensors")  # was: "No such device (os error 19)"
    save_file(load_file(str(alignment_file)), str(tmp_path / "list.safetensors"), metadata={"mkt": "[1, 2]"})
    with pytest.raises(CorruptArtifactError, match=r"is not an mkt alignment \(kind=None\)"):
        SubspaceAlignment.load(tmp_path / "list.safetensors")


def test_an_alignment_edited_after_fitting_is_refused_when_saved(alignment_file, tmp_path):
    al = SubspaceAlignment.load(alignment_file)
    al.cores[0, 0, 0] = float("inf")
    with pytest.raises(CorruptArtifactError, match="tensor 'cores' holds NaN or inf"):
        al.save(tmp_path / "c.safetensors")
    al = SubspaceAlignment.load(alignment_file)
    al.diagnostics["note"] = torch.ones(2)  # not JSON
    with pytest.raises(MktError, match="the metadata cannot be written as JSON"):
        al.save(tmp_path / "c.safetensors")
    assert not (tmp_path / "c.safetensors").exists()


def test_an_alignment_that_passes_the_read_check_transfers(alignment_file):
    # the independent computation: the factored map V_sk M V_tk^T applied by hand
    al = SubspaceAlignment.load(alignment_file)
    key = MasterKey(torch.randn(2, 6, dtype=torch.float64), SRC)
    moved = transfer(key, al).directions
    for lt, ls in enumerate(al.layer_map):
        by_hand = (key.directions[ls] @ al.source_bases[lt].double() @ al.cores[lt].double()
                   @ al.target_bases[lt].T.double())
        assert torch.allclose(moved[lt], by_hand, atol=1e-10)


def test_the_organism_key_cache_recomputes_every_file_that_fails_the_key_checks(tmp_path, monkeypatch):
    import mkt.organisms.keys as common
    from mkt.models import load_model, model_identity

    target = load_model("organism:target-base", device="cpu")
    ident = model_identity(target)
    made = []

    def organism_key(model, name):  # the slow extraction, replaced: this test is about the cache file
        made.append(MasterKey(torch.randn(ident.n_layers, ident.d_model), ident, provenance={"n": len(made)}))
        return made[-1]

    monkeypatch.setattr(common, "organism_key", organism_key)
    first = common.cached_organism_key(target, "organism:target-base", tmp_path)
    (path,) = tmp_path.glob("target-base-*.safetensors")
    assert torch.equal(common.cached_organism_key(target, "organism:target-base", tmp_path).directions,
                       first.directions) and len(made) == 1
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    good = path.read_bytes()
    nan = first.directions.clone()
    nan[0, 0] = float("nan")
    for corrupt in (lambda: path.write_bytes(good[: len(good) // 2]),  # a kill mid-write of an older mkt
                    lambda: save_file({"directions": nan}, str(path), metadata=meta),
                    lambda: save_file({"directions": first.directions.long()}, str(path), metadata=meta),
                    lambda: save_file({"directions": first.directions[:, :4].contiguous()}, str(path), metadata=meta),
                    lambda: save_file({"directions": first.directions}, str(path),
                                      metadata=meta | {"provenance": "[]"}),
                    lambda: save_file({"directions": first.directions}, str(path), metadata=meta | {"hook": "x"})):
        corrupt()
        n = len(made)
        key = common.cached_organism_key(target, "organism:target-base", tmp_path)
        assert len(made) == n + 1 and torch.equal(key.directions, made[-1].directions)
        assert torch.equal(common.cached_organism_key(target, "organism:target-base", tmp_path).directions,
                           key.directions) and len(made) == n + 1  # rewritten whole
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_writing_where_a_file_or_directory_is_in_the_way_is_refused_in_one_line(tmp_path, alignment_file):
    (tmp_path / "file").write_text("x")
    pack = CapabilityPack(MasterKey(torch.randn(3, 8), TGT))
    for path in (tmp_path / "file", tmp_path / "file" / "pack"):  # was: FileExistsError / NotADirectoryError errno
        with pytest.raises(MktError, match=f"cannot write a capability pack at {path}: {tmp_path / 'file'} is a file"):
            pack.save(path)
    al = SubspaceAlignment.load(alignment_file)
    with pytest.raises(MktError, match="cannot write an alignment at .*: it is a directory"):
        al.save(tmp_path)
    with pytest.raises(MktError, match=f"cannot write an alignment at {tmp_path / 'file'}: .* is a file"):
        al.save(tmp_path / "file" / "a.safetensors")
