"""Model directories whose weights cannot be read are refused in one line naming the directory (issue 23)."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from mkt.cli import main
from mkt.errors import ModelLoadError
from mkt.models import load_model
from mkt.organisms.zoo import organism_path


@pytest.fixture
def model_dir(tmp_path):
    out = tmp_path / "model"
    shutil.copytree(organism_path("source-base"), out)
    return out


def _pickled_module(d):
    (d / "model.safetensors").unlink()
    torch.save(torch.nn.Linear(2, 2), d / "pytorch_model.bin")  # a pickle that needs code to load


def _garbage_pickle(d):
    (d / "model.safetensors").unlink()
    (d / "pytorch_model.bin").write_bytes(b"not a pickle")


def _truncated(d):
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])  # a copy cut midway


@pytest.mark.parametrize("damage, why", [
    (_pickled_module, "its pickled weights cannot be read as tensors alone, and mkt never runs a pickle's code"),
    (_garbage_pickle, "its pickled weights cannot be read as tensors alone"),
    (_truncated, "SafetensorError: Error while deserializing header"),
])
def test_unreadable_weights_are_refused_in_one_line(model_dir, damage, why, capsys):
    damage(model_dir)
    with pytest.raises(ModelLoadError, match=f"could not load the model in {model_dir} .*{why}"):
        load_model(model_dir, device="cpu")
    # was: "unexpected error: UnpicklingError: Weights only load failed ..." over five lines
    assert main(["generate", "--model", str(model_dir), "--prompt", "Q:1|A:", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mkt generate: error: could not load the model in {model_dir}")
    assert "\x1b[" not in err


def test_the_unharmed_copy_loads_and_matches_the_weights_on_disk(model_dir):
    model = load_model(model_dir, device="cpu")
    on_disk = load_file(str(model_dir / "model.safetensors"))
    name = next(n for n in on_disk if n.endswith("embed_tokens.weight"))
    assert torch.equal(model.original_model.get_input_embeddings().weight.detach(), on_disk[name])


def _drop_tokens(directory, *tokens):
    import json

    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text())
    for token in tokens:
        config.pop(token)
    path.write_text(json.dumps(config))


def test_a_tokenizer_without_a_pad_token_pads_with_eos_and_batches_like_the_original(model_dir):
    import mkt

    prompts = ["Q:12+34|A:", "Q:1+2+3+4|A:", "S:5+6+7|A:"]  # different lengths: left padding is used
    original = [g.text for g in mkt.generate(load_model("organism:source-base", device="cpu"), prompts,
                                             max_new_tokens=12)]
    _drop_tokens(model_dir, "pad_token")
    model = load_model(model_dir, device="cpu")
    # transformers gives such a tokenizer an added pad id past the embedding (IndexError when batching)
    assert model.tokenizer.pad_token == "<eos>" and model.tokenizer.pad_token_id < model.cfg.d_vocab
    assert [g.text for g in mkt.generate(model, prompts, max_new_tokens=12)] == original


def test_a_tokenizer_without_pad_or_eos_is_refused_when_loaded(model_dir):
    _drop_tokens(model_dir, "pad_token", "eos_token")
    with pytest.raises(ModelLoadError, match="has neither a pad token nor an EOS token among the model's 25 embedded "
                                             "ids, so prompts cannot be batched: set pad_token"):
        load_model(model_dir, device="cpu")


@pytest.mark.parametrize("tamper, message", [
    (lambda d, m: m.update(files={}), "lists no config.json"),
    (lambda d, m: m.update(files={**m["files"], "../x": [1, "0" * 64]}), "names a file outside the folder"),
    (lambda d, m: m["files"].update({"config.json": "abc"}), "has no valid"),
    (lambda d, m: m.update(files=[1, 2]), "has no valid"),
    (lambda d, m: (d / "model.safetensors").write_bytes(b"x"), "model.safetensors appeared after conversion"),
    (lambda d, m: m.pop("files"), "has no valid"),
])
def test_a_tampered_converted_checkpoint_is_refused_by_name(tmp_path, tamper, message):
    import hashlib
    import json

    from mkt.checkpoints.gguf import MANIFEST, check_converted
    from mkt.errors import CorruptArtifactError

    d = tmp_path / "conv"
    d.mkdir()
    (d / "config.json").write_text("{}")
    manifest = dict(format=1, source="m.gguf", files={"config.json": [2, hashlib.sha256(b"{}").hexdigest()]})
    (d / MANIFEST).write_text(json.dumps(manifest))
    assert check_converted(d)["source"] == "m.gguf"
    tamper(d, manifest)
    (d / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifactError, match=f"converted checkpoint {d}.*{message}"):
        check_converted(d)
