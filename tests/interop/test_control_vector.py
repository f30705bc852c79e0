"""GGUF control vectors: mkt's files read by an independent GGUF parser, steer a plain HF model
(hooks on its decoder layers, llama.cpp's rule: direction.N after block N) as mkt steers the
bridge, and come back as the same pack; llama.cpp's load rules refuse what llama.cpp refuses."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFWriter

from mkt.errors import CorruptArtifactError, IncompatibleModelError, MktError
from mkt.interop.control_vector import export_control_vector, import_control_vector
from mkt.interop.llamacpp_rules import direction_layer, read_control_vector
from mkt.key import MasterKey
from mkt.models import model_identity
from mkt.pack import CapabilityPack
from tests.conftest import PROMPTS
from tests.interop.gguf_bytes import F32, STRING, read_gguf


def _pack(model, mode="constant", scope="all", layers=(1, 3), alpha=0.7, hook="hook_resid_post"):
    ident = model_identity(model)
    g = torch.Generator().manual_seed(0)
    directions = torch.randn(ident.n_layers, ident.d_model, generator=g) * torch.arange(1.0, ident.n_layers + 1)[:, None]
    return CapabilityPack(MasterKey(directions, ident, hook), alpha, mode, scope, list(layers))


def _hf_logits(path, ids, added: dict[int, np.ndarray]):
    """Logits of the plain HF model with ``added[N]`` added to decoder layer N's output (llama.cpp's rule)."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)

    def add(vector):
        def hook(module, args, output):
            if isinstance(output, tuple):
                return (output[0] + vector, *output[1:])
            return output + vector
        return hook

    handles = [hf.model.layers[n].register_forward_hook(add(torch.from_numpy(v))) for n, v in added.items()]
    try:
        with torch.no_grad():
            return hf(ids).logits
    finally:
        for h in handles:
            h.remove()


def test_export_matches_llamacpp_layout_and_steers_like_hf_hooks(tiny_models, tiny_dirs, tmp_path):
    model = tiny_models["llama"]
    pack = _pack(model)
    path = export_control_vector(pack, tmp_path / "key.gguf")
    meta, tensors = read_gguf(path)
    assert meta["general.architecture"] == (STRING, "controlvector")
    assert meta["controlvector.model_hint"] == (STRING, "llama")
    assert meta["controlvector.layer_count"][1] == 2
    assert sorted(tensors) == ["direction.1", "direction.3"]
    for n in (1, 3):
        kind, ne, data = tensors[f"direction.{n}"]
        assert kind == F32 and ne == [48]
        np.testing.assert_array_equal(data, (0.7 * pack.key.directions[n].double()).float().numpy())

    ids = model.to_tokens(PROMPTS[1])
    with pack.apply(model):
        steered = model(ids)
    added = {int(name.split(".")[1]): data for name, (_, _, data) in tensors.items()}
    expected = _hf_logits(tiny_dirs["llama"], ids, added)
    plain = _hf_logits(tiny_dirs["llama"], ids, {})
    assert (expected - plain).abs().max() > 1e-2  # the vectors change the output
    torch.testing.assert_close(steered, expected, atol=1e-4, rtol=1e-4)
    shifted = _hf_logits(tiny_dirs["llama"], ids, {n + 1: data for n, data in added.items()})
    assert (shifted - steered).abs().max() > 1e-2  # an off-by-one would be seen


def test_round_trip(tiny_models, tmp_path):
    model = tiny_models["llama"]
    pack = _pack(model)
    back = import_control_vector(export_control_vector(pack, tmp_path / "key.gguf"), model)
    assert (back.mode, back.scope, back.layers, back.alpha) == ("constant", "all", [1, 3], 1.0)
    ids = model.to_tokens(PROMPTS[:3])
    with pack.apply(model):
        before = model(ids)
    with back.apply(model):
        after = model(ids)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    back.save(tmp_path / "pack")
    assert CapabilityPack.load(tmp_path / "pack").key.provenance["model_hint"] == "llama"
    scaled = import_control_vector(tmp_path / "key.gguf", model, scale=-2.0)
    assert scaled.alpha == -2.0


@pytest.mark.parametrize("change, reason", [
    (dict(mode="norm-preserving"), "keeping its norm"),
    (dict(mode="additive"), "each token's norm"),
    (dict(scope="prompt-last"), "every token"),
    (dict(layers=(0, 2)), "block 0"),
    (dict(hook="hook_resid_mid"), "block's output"),
])
def test_export_refuses_what_is_not_a_control_vector(tiny_models, tmp_path, change, reason):
    with pytest.raises(MktError, match=reason):
        export_control_vector(_pack(tiny_models["llama"], **change), tmp_path / "key.gguf")
    assert not (tmp_path / "key.gguf").exists()


def _write(path, tensors, arch="controlvector", hint="llama"):
    writer = GGUFWriter(path, arch)
    if hint is not None:
        writer.add_string(f"{arch}.model_hint", hint)
    for name, array, *raw in tensors:
        writer.add_tensor(name, array, raw_dtype=raw[0] if raw else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_stoi_layer_names():
    assert [direction_layer(n) for n in ("direction.7", "direction.3abc", "direction. 12", "direction.x",
                                         "directions.1", "direction", "direction.-1", "direction.99999999999")] == \
        [7, 3, 12, -1, -1, -1, -1, -1]


v = np.arange(4, dtype=np.float32)


@pytest.mark.parametrize("tensors, kwargs, reason", [
    ([("direction.0", v)], {}, "layer index 0"),
    ([("dir.1", v)], {}, "not named direction.N"),
    ([("direction.1", v.astype(np.float16))], {}, "not F32"),
    ([("direction.1", np.ones((2, 4), np.float32))], {}, "not 1-D"),
    ([("direction.1", v), ("direction.2", np.ones(5, np.float32))], {}, "5 values"),
    ([("direction.1", v)], dict(arch="llama"), "not a control vector"),
    ([("direction.1", v)], dict(hint=None), "model_hint"),
    ([("direction.1", v * np.nan)], {}, "NaN"),
])
def test_rules_refuse(tmp_path, tensors, kwargs, reason):
    path = _write(tmp_path / "bad.gguf", tensors, **kwargs)
    with pytest.raises(CorruptArtifactError, match=reason):
        read_control_vector(path)


def test_rules_accept_what_llamacpp_accepts(tmp_path):
    path = _write(tmp_path / "ok.gguf", [("direction.2", v), ("direction.2.extra", v), ("direction.5", v[None, :])])
    cvec = read_control_vector(path, n_embd=4)
    assert sorted(cvec.vectors) == [2, 5]
    np.testing.assert_array_equal(cvec.vectors[2], 2 * v)  # same N: summed, as llama.cpp does
    with pytest.raises(CorruptArtifactError, match="n_embd is 8"):
        read_control_vector(path, n_embd=8)
    with pytest.raises(CorruptArtifactError, match="past the model's last block"):
        read_control_vector(path, n_layers=5)
    with pytest.raises(CorruptArtifactError, match="not a readable GGUF"):
        read_control_vector(_write_bytes(tmp_path / "junk.gguf"))


def _write_bytes(path):
    path.write_bytes(b"GGUF\x03\x00\x00\x00garbage")
    return path


def test_import_checks_the_model(tiny_models, tmp_path):
    path = _write(tmp_path / "wide.gguf", [("direction.1", np.ones(64, np.float32))])
    with pytest.raises(IncompatibleModelError, match="d_model 48"):
        import_control_vector(path, tiny_models["llama"])
    path = _write(tmp_path / "qwen.gguf", [("direction.1", np.ones(48, np.float32))], hint="qwen2")
    with pytest.warns(UserWarning, match="made for a 'qwen2' model"):
        import_control_vector(path, tiny_models["llama"])
    with pytest.raises(CorruptArtifactError, match="every direction is zero"):
        import_control_vector(_write(tmp_path / "zero.gguf", [("direction.1", np.zeros(48, np.float32))]),
                              tiny_models["llama"])
