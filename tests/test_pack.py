import json

import pytest
import torch

from mkt.errors import CorruptArtifactError, IncompatibleModelError
from mkt.key import MasterKey
from mkt.models import model_identity
from mkt.pack import CapabilityPack


@pytest.fixture
def pack(qwen):
    key = MasterKey(torch.randn(qwen.cfg.n_layers, qwen.cfg.d_model), model_identity(qwen),
                    provenance={"n": 4, "aggregator": "mean", "variant": "prompt"})
    return CapabilityPack(key, alpha=0.25, mode="additive", layers=[0, 2])


def test_round_trip_is_bit_exact(tmp_path, pack):
    back = CapabilityPack.load(pack.save(tmp_path / "p"))
    assert torch.equal(back.key.directions, pack.key.directions)
    assert (back.alpha, back.mode, back.layers, back.scope) == (0.25, "additive", [0, 2], "prompt-last")
    manifest = json.loads((tmp_path / "p" / "manifest.json").read_text())
    for field in ("format_version", "source", "target", "layer_map", "k", "n", "aggregator", "mode",
                  "alpha", "hook", "sha256"):
        assert field in manifest


def test_tampered_pack_is_refused(tmp_path, pack):
    path = pack.save(tmp_path / "p")
    raw = bytearray((path / "directions.safetensors").read_bytes())
    raw[-1] ^= 1
    (path / "directions.safetensors").write_bytes(bytes(raw))
    with pytest.raises(CorruptArtifactError, match="does not match the hash"):
        CapabilityPack.load(path)


def test_missing_and_bad_files(tmp_path, pack):
    path = pack.save(tmp_path / "p")
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(CorruptArtifactError, match="not valid JSON"):
        CapabilityPack.load(path)
    (path / "manifest.json").unlink()
    with pytest.raises(CorruptArtifactError, match="manifest.json is missing"):
        CapabilityPack.load(path)


def test_pack_for_another_model_is_refused(pack, llama, qwen):
    with pytest.raises(IncompatibleModelError, match="made for 'qwen2'"):
        with pack.apply(llama):
            pass
    with pack.apply(qwen) as hooks:
        assert hooks.steering.layers == [0, 2]


def test_non_finite_alpha(pack):
    with pytest.raises(ValueError, match="alpha must be finite"):
        CapabilityPack(pack.key, alpha=float("inf"))


def test_non_finite_keys_and_packs_are_refused(tmp_path, pack):
    import hashlib

    from safetensors.torch import save_file

    from mkt.errors import NonFiniteError
    from mkt.pack import MANIFEST, TENSORS

    bad = pack.key.directions.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(NonFiniteError, match="at layers \\[1\\]"):
        MasterKey(bad, pack.key.model)
    out = pack.save(tmp_path / "p")
    save_file({"directions": bad.float().contiguous()}, str(out / TENSORS))  # NaN, with a matching hash
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["sha256"] = hashlib.sha256((out / TENSORS).read_bytes()).hexdigest()
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifactError, match="directions.* holds NaN or inf"):
        CapabilityPack.load(out)


@pytest.mark.parametrize("edit,message", [
    (lambda m: [m], "holds a JSON list, not a manifest object"),
    (lambda m: {k: v for k, v in m.items() if k != "mode"}, "field 'mode' is missing"),
    (lambda m: m | {"alpha": "0.2"}, "field 'alpha' must be a finite number"),
    (lambda m: m | {"hook": "hook_z"}, "field 'hook' is 'hook_z', but mkt reads and writes keys at"),
    (lambda m: m | {"target": m["target"] | {"n_layers": "3"}}, "field 'target.n_layers' must be a whole number"),
    (lambda m: m | {"layers": [0, 7]}, "field 'layers' must be null or a non-empty list of layer indices in 0..2"),
    (lambda m: m | {"scope": "everywhere"}, "field 'scope' must be one of"),
])
def test_manifest_schema_names_the_bad_field(tmp_path, pack, edit, message):
    path = pack.save(tmp_path / "p")
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(edit(manifest)))
    with pytest.raises(CorruptArtifactError, match=message):
        CapabilityPack.load(path)


def test_manifest_tolerates_unknown_fields_and_refuses_integer_directions(tmp_path, pack):
    import hashlib

    from safetensors.torch import save_file

    path = pack.save(tmp_path / "p")
    manifest = json.loads((path / "manifest.json").read_text())
    extra = manifest | {"written_by": "a newer mkt", "target": manifest["target"] | {"revision": "abc"}}
    (path / "manifest.json").write_text(json.dumps(extra))
    assert torch.equal(CapabilityPack.load(path).key.directions, pack.key.directions)
    save_file({"directions": torch.ones(3, 64, dtype=torch.int64)}, str(path / "directions.safetensors"))
    extra["sha256"] = hashlib.sha256((path / "directions.safetensors").read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(extra))
    with pytest.raises(CorruptArtifactError, match="'directions' is torch.int64, not floating point"):
        CapabilityPack.load(path)


def test_pack_layers_are_checked_when_made(pack):
    from mkt.errors import IncompatibleModelError

    with pytest.raises(IncompatibleModelError, match="unknown layer index \\[5\\]"):
        CapabilityPack(pack.key, layers=[0, 5])
