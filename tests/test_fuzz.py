"""Property-based fuzzing of what mkt reads (issue 23): packs, alignments, prompt and task files, and
the command line's argument types. Random byte flips, truncations, type swaps and missing keys give
a clear refusal (an ``MktError``, a reader's ``ValueError`` or, for a missing file,
``FileNotFoundError``: one line naming the file) or a load that works all the way through, never another exception.

The default run tries ``EXAMPLES`` inputs per target; ``pytest -m fuzz_deep tests/test_fuzz.py``
tries ``DEEP_EXAMPLES``.
"""

import argparse
import json
import string
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load, save

from mkt.alignment import SubspaceAlignment, _tensor_digest, fit_alignment, transfer
from mkt.errors import MktError
from mkt.key import MasterKey
from mkt.models import ModelIdentity
from mkt.pack import MANIFEST, TENSORS, CapabilityPack

EXAMPLES, DEEP_EXAMPLES = 200, 4000
SRC = ModelIdentity("src", "LlamaForCausalLM", 2, 6, 50)
TGT = ModelIdentity("tgt", "Qwen2ForCausalLM", 3, 8, 60)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)


def _fuzz(check, **strategies):
    """``check`` with ``EXAMPLES`` examples (a test) and with ``DEEP_EXAMPLES`` (for the ``-m fuzz_deep`` test)."""
    def run(n: int):
        return settings(max_examples=n, deadline=None, database=None,
                        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])(
            given(**strategies)(check))

    return run(EXAMPLES), run(DEEP_EXAMPLES)


def _deep(request) -> None:
    if "fuzz_deep" not in (request.config.getoption("-m") or ""):
        pytest.skip("the deep fuzz run: pytest -m fuzz_deep tests/test_fuzz.py")


def _refused_clearly(err: BaseException, name: str) -> None:
    """An error mkt raised on purpose (``MktError`` and the readers' ``ValueError``), naming the file in one line."""
    assert isinstance(err, (MktError, ValueError, FileNotFoundError)), f"{type(err).__name__}: {err}"
    assert "\n" not in str(err) and name in str(err), str(err)


def _flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for at, byte in flips:
        out[at % len(out)] = byte
    return bytes(out)


def _mutate_json(value, path: list, action: str, replacement):
    """``value`` with the field at ``path`` (indices into each level's keys) replaced or deleted."""
    if not isinstance(value, dict) or not value:
        return replacement if action == "swap" else value
    key = sorted(value)[path[0] % len(value)] if path else None
    if key is None:
        return value
    out = dict(value)
    if len(path) > 1 and isinstance(value[key], dict):
        out[key] = _mutate_json(value[key], path[1:], action, replacement)
    elif action == "delete":
        del out[key]
    else:
        out[key] = replacement
    return out


mutations = st.tuples(st.lists(st.integers(0, 50), min_size=1, max_size=3), st.sampled_from(["swap", "delete"]),
                      json_values)
edits = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("json"), mutations),
)


def _edit_bytes(data: bytes, edit) -> bytes:
    kind, arg = edit
    if kind == "flip":
        return _flip(data, arg)
    return data[: int(len(data) * arg)]


# --- packs ------------------------------------------------------------------------------------
def _pack_dir(root: Path) -> Path:
    key = MasterKey(torch.randn(3, 8, generator=torch.Generator().manual_seed(0)), TGT,
                    provenance={"source_model": SRC.to_dict(), "layer_map": [0, 1, 1], "k": 4, "n": 20,
                                "coverage": [0.5, 0.6, 0.7], "position": "last"})
    return CapabilityPack(key, alpha=0.2, layers=[0, 2]).save(root / "pack")


def _use_pack(pack: CapabilityPack) -> None:
    """What `mkt info`, `generate` and `eval` do with a loaded pack."""
    m = pack.manifest()
    json.dumps(m)
    f"{m['source']['name']} {m['source']['n_layers']} {m['target']['d_model']} {m['layer_map']}"
    " ".join(f"{x:.2f}" for x in m["provenance"].get("coverage", []))
    " ".join(f"{x:.3g}" for x in pack.key.norms().tolist())
    steering = pack.steering()
    assert steering.directions.shape == (pack.key.n_layers, pack.key.model.width(pack.key.hook))


@pytest.fixture(scope="module")
def pack_files(tmp_path_factory):
    d = _pack_dir(tmp_path_factory.mktemp("fuzz_pack"))
    return (d / MANIFEST).read_text(), (d / TENSORS).read_bytes()


def check_pack(pack_files, tmp_path_factory, target, edit, rehash):
    import hashlib

    manifest_text, tensors = pack_files
    d = tmp_path_factory.mktemp("p")
    manifest = json.loads(manifest_text)
    if target == "manifest" and edit[0] == "json":
        (d / MANIFEST).write_text(json.dumps(_mutate_json(manifest, *edit[1])))
        (d / TENSORS).write_bytes(tensors)
    elif target == "manifest":
        (d / MANIFEST).write_bytes(_edit_bytes(manifest_text.encode(), edit))
        (d / TENSORS).write_bytes(tensors)
    else:
        data = tensors if edit[0] == "json" else _edit_bytes(tensors, edit)
        if rehash:  # a consistent hash, so the tensor file's own checks are reached
            manifest["sha256"] = hashlib.sha256(data).hexdigest()
        (d / MANIFEST).write_text(json.dumps(manifest))
        (d / TENSORS).write_bytes(data)
    try:
        pack = CapabilityPack.load(d)
    except Exception as err:  # noqa: BLE001 - the property: only clear refusals
        _refused_clearly(err, str(d))
        return
    _use_pack(pack)


_pack_args = dict(target=st.sampled_from(["manifest", "tensors"]), edit=edits, rehash=st.booleans())
test_pack_reader_fuzz, _deep_pack = _fuzz(check_pack, **_pack_args)


@pytest.mark.fuzz_deep
def test_pack_reader_fuzz_deep(request, pack_files, tmp_path_factory):
    _deep(request)
    _deep_pack(pack_files=pack_files, tmp_path_factory=tmp_path_factory)


# --- alignments -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def alignment_bytes(tmp_path_factory):
    g = torch.Generator().manual_seed(1)
    al = fit_alignment(torch.randn(20, 2, 6, generator=g), torch.randn(20, 3, 8, generator=g), SRC, TGT, k=4,
                       center=True)
    return al.save(tmp_path_factory.mktemp("fuzz_al") / "a.safetensors").read_bytes()


tensor_edits = st.tuples(st.sampled_from(["source_bases", "cores", "target_bases", "source_means", "target_means"]),
                         st.sampled_from(["drop", "shape", "dtype", "nan"]))


def check_alignment(alignment_bytes, tmp_path_factory, edit, tensor_edit, rehash):
    path = tmp_path_factory.mktemp("a") / "a.safetensors"
    header_len = int.from_bytes(alignment_bytes[:8], "little")
    meta = json.loads(json.loads(alignment_bytes[8 : 8 + header_len])["__metadata__"]["mkt"])
    tensors = load(alignment_bytes)
    if edit[0] == "json" or tensor_edit is not None:
        if edit[0] == "json":
            meta = _mutate_json(meta, *edit[1])
        if tensor_edit is not None:
            name, how = tensor_edit
            t = tensors.pop(name)
            if how == "shape":
                tensors[name] = t[..., :-1].contiguous()
            elif how == "dtype":
                tensors[name] = t.to(torch.int64)
            elif how == "nan":
                tensors[name] = t.clone().fill_(float("nan"))
        if rehash and isinstance(meta, dict):
            meta["sha256"] = _tensor_digest(tensors)
        path.write_bytes(save(tensors, metadata={"mkt": json.dumps(meta)}))
    else:
        path.write_bytes(_edit_bytes(alignment_bytes, edit))
    try:
        al = SubspaceAlignment.load(path)
    except Exception as err:  # noqa: BLE001 - the property: only clear refusals
        _refused_clearly(err, str(path))
        return
    # a file that passed the read check works all the way through
    key = MasterKey(torch.randn(al.source.n_layers, al.source.width(al.hook)), al.source, al.hook,
                    {"position": al.position})
    moved = transfer(key, al)
    assert moved.directions.shape == (al.target.n_layers, al.target.width(al.hook))
    al.coverage(key.directions)
    al.map_activations(torch.randn(2, al.source.n_layers, al.source.width(al.hook)))
    al.summary()


_al_args = dict(edit=edits, tensor_edit=st.none() | tensor_edits, rehash=st.booleans())
test_alignment_reader_fuzz, _deep_al = _fuzz(check_alignment, **_al_args)


@pytest.mark.fuzz_deep
def test_alignment_reader_fuzz_deep(request, alignment_bytes, tmp_path_factory):
    _deep(request)
    _deep_al(alignment_bytes=alignment_bytes, tmp_path_factory=tmp_path_factory)


# --- prompt and task files --------------------------------------------------------------------
jsonl_lines = st.lists(st.one_of(
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(["question", "answer", "problem", "solution", "other", "id"]),
                    json_values | st.just("x #### 4") | st.just({"solution": "\\boxed{2}"}),
                    max_size=5).map(json.dumps),
    st.text(max_size=12),
), max_size=6)


def check_prompt_readers(tmp_path_factory, lines, raw, suffix, field):
    from mkt.eval.tasks import load_jsonl
    from mkt.prompts import read_questions

    path = tmp_path_factory.mktemp("q") / f"prompts{suffix}"
    data = "\n".join(lines).encode()
    path.write_bytes(_flip(data, raw) if raw and data else data)
    try:
        questions = read_questions(path, field)
        assert questions and all(isinstance(q, str) for q in questions)
    except Exception as err:  # noqa: BLE001
        _refused_clearly(err, str(path))
    if suffix == ".jsonl":
        try:
            examples = load_jsonl(path)
            assert all(isinstance(e.question, str) and isinstance(e.gold, str) for e in examples)
        except Exception as err:  # noqa: BLE001
            _refused_clearly(err, str(path))


_prompt_args = dict(lines=jsonl_lines, raw=st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)), max_size=2),
                    suffix=st.sampled_from([".jsonl", ".txt"]), field=st.sampled_from(["question", "problem"]))
test_prompt_readers_fuzz, _deep_prompts = _fuzz(check_prompt_readers, **_prompt_args)


@pytest.mark.fuzz_deep
def test_prompt_readers_fuzz_deep(request, tmp_path_factory):
    _deep(request)
    _deep_prompts(tmp_path_factory=tmp_path_factory)


# --- argument types ---------------------------------------------------------------------------
def _argument_types():
    from mkt import cliargs
    from mkt.cli.options import position_name

    names = ("positive_int", "nonnegative_int", "finite_float", "positive_float", "nonnegative_float", "fraction",
             "dtype_name", "device_name", "layer_subset", "stop_string")
    return [getattr(cliargs, name) for name in names] + [position_name]


junk = st.one_of(st.text(max_size=12), st.sampled_from(["nan", "inf", "-inf", "1e999", "0x10", "1_000", " 3 ", "",
                                                        "cuda:-1", "cuda:x", "last-0", "last--1", "1.5", "-0", "all"]),
                 st.integers().map(str), st.floats().map(str), st.text(string.printable, max_size=20))


def check_argument_types(text):
    for parse in _argument_types():
        try:
            parse(text)
        except argparse.ArgumentTypeError as err:
            assert "\n" not in str(err) and str(err)


test_argument_types_fuzz, _deep_args = _fuzz(check_argument_types, text=junk)


@pytest.mark.fuzz_deep
def test_argument_types_fuzz_deep(request):
    _deep(request)
    _deep_args()
