"""GGUF checkpoints: read a file's header, refuse what cannot load, dequantize once to an HF directory.

transformers dequantizes GGUF files (llama.cpp's format) to float tensors on load, which takes
tens of seconds; the result is saved once as a safetensors HF directory keyed by the file's
sha256, so every later load reads that directory in seconds. The header is checked first, so a
truncated file, a wrong format or an architecture transformers cannot read is refused in one
line before any slow work.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mkt.checkpoints.cache import cache_root, entry_lock, partial_path, sha256_file
from mkt.errors import CorruptArtifactError, ModelLoadError

GGUF_MAGIC = b"GGUF"
MANIFEST = "mkt-checkpoint.json"  # written last: a converted directory without it is incomplete
MANIFEST_FORMAT = 1
# token ids a GGUF file names that end a generation (llama.cpp reads the same keys)
EOS_KEYS = ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id")


@dataclass(frozen=True)
class GGUFHeader:
    """What mkt reads from a GGUF file before converting it."""

    path: Path
    architecture: str  # general.architecture, e.g. "llama", "gemma3", "qwen2"
    quant_types: tuple[str, ...]  # the tensors' GGML types, e.g. ("F32", "Q4_K", "Q6_K")
    add_bos_token: bool | None  # tokenizer.ggml.add_bos_token; None when the file does not say
    eos_token_ids: tuple[int, ...]


def _field(reader, key: str):
    field = reader.fields.get(key)
    return None if field is None else field.contents()


def read_header(path: str | os.PathLike) -> GGUFHeader:
    """Read and check a GGUF file's header and tensor table (fast: nothing is dequantized).

    Raises:
        ModelLoadError: not a file, not GGUF, truncated, or holding an architecture or tensor
            type that transformers cannot dequantize; the message names the fix.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"GGUF file {path} does not exist: pass the path of a .gguf file")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelLoadError(f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF'): "
                             "pass a llama.cpp .gguf file, or an HF model directory")
    try:
        import gguf
    except ImportError as err:  # the dequantizer transformers uses
        raise ModelLoadError("loading a GGUF file needs the `gguf` package: pip install gguf") from err
    try:
        reader = gguf.GGUFReader(path)
    except Exception as err:  # the reader's own errors name offsets, not the problem
        raise ModelLoadError(f"{path} is not a readable GGUF file ({type(err).__name__}: {str(err)[:120]}): "
                             "it is truncated or corrupt; download it again") from err
    size = path.stat().st_size
    short = [t.name for t in reader.tensors if int(t.data_offset) + int(t.n_bytes) > size]
    if short:
        raise ModelLoadError(f"{path} is truncated: {len(short)} tensor(s) end past its {size} bytes "
                             f"(first {short[0]!r}); download it again")
    architecture = str(_field(reader, "general.architecture") or "")
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ModelLoadError(f"{path} holds a {architecture or 'unnamed'!r} model, which transformers cannot load "
                             f"from GGUF (it reads {sorted(GGUF_SUPPORTED_ARCHITECTURES)}): convert it to an HF "
                             "directory with its own tools, or pass the original safetensors checkpoint")
    types = tuple(sorted({t.tensor_type.name for t in reader.tensors}))
    from gguf.quants import _type_traits

    unreadable = [t for t in types if t not in ("F32", "F16", "BF16")
                  and gguf.GGMLQuantizationType[t] not in _type_traits]
    if unreadable:
        raise ModelLoadError(f"{path} holds tensors of type {unreadable}, which the gguf package cannot "
                             "dequantize: use a file quantized as Q4_K_M, Q8_0 or F16")
    add_bos = _field(reader, "tokenizer.ggml.add_bos_token")
    eos = tuple(dict.fromkeys(int(v) for k in EOS_KEYS if (v := _field(reader, k)) is not None))
    return GGUFHeader(path, architecture, types, None if add_bos is None else bool(add_bos), eos)


def converted_dir(sha256: str) -> Path:
    """Where the HF directory converted from the GGUF file with this sha256 lives."""
    return cache_root() / "hf" / f"gguf-{sha256[:24]}"


def check_converted(directory: Path) -> dict:
    """The manifest of a converted directory, after checking every file it lists is there, whole.

    Raises:
        CorruptArtifactError: the manifest is unreadable or lists no config.json, a file is missing, was
            added, or its size or sha256 differs from the manifest.
    """
    fix = "delete the folder and load the model again to convert it anew"
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        listed = dict(manifest["files"])
        files = {name: (int(size), str(digest)) for name, (size, digest) in listed.items()
                 if name == Path(name).name and name not in ("", ".", "..", MANIFEST)}  # no path outside the folder
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise CorruptArtifactError(f"converted checkpoint {directory} has no valid {MANIFEST}: {fix}") from err
    if len(files) != len(listed) or "config.json" not in files:
        raise CorruptArtifactError(f"converted checkpoint {directory}: its {MANIFEST} lists no config.json or names "
                                   f"a file outside the folder: {fix}")
    unlisted = sorted(f.name for f in directory.iterdir() if f.name != MANIFEST and f.name not in files)
    if unlisted:
        raise CorruptArtifactError(f"converted checkpoint {directory}: {', '.join(unlisted[:3])} appeared after "
                                   f"conversion (not in its {MANIFEST}): {fix}")
    for name, (size, digest) in files.items():
        f = directory / name
        if not f.is_file() or f.stat().st_size != size or sha256_file(f) != digest:
            raise CorruptArtifactError(f"converted checkpoint {directory}: {name} is missing or was changed after "
                                       f"conversion: {fix}")
    return manifest


def converted_name(directory: str | os.PathLike) -> str | None:
    """The readable name of a converted directory (its GGUF file's stem); None for any other."""
    manifest = Path(directory) / MANIFEST
    if not manifest.is_file():
        return None
    return Path(json.loads(manifest.read_text())["source"]).stem


def gguf_to_hf_dir(path: str | os.PathLike, sha256: str | None = None, extra_eos: tuple[int, ...] = (),
                   progress=print) -> Path:
    """The safetensors HF directory of a GGUF file, converted on first use and cached.

    Args:
        path: the ``.gguf`` file.
        sha256: its known sha256 (the real-model zoo pins them); computed when None.
        extra_eos: token ids that also end a generation (the family's list, when the file
            names only one).
        progress: called with one line per slow step.

    Returns:
        A directory ``load_model`` boots: config.json with ``architectures``, float32
        safetensors, the tokenizer (its BOS rule as the GGUF file states it, as llama.cpp
        applies it) and generation_config.json with every EOS id.
    """
    header = read_header(path)
    sha256 = sha256 or sha256_file(header.path)
    out = converted_dir(sha256)
    with entry_lock(out):
        if (out / MANIFEST).exists():
            check_converted(out)
            return out
        progress(f"dequantizing {header.path.name} ({header.architecture}, {', '.join(header.quant_types)}) "
                 "to float32, once (about a minute on 2 cores)")
        tmp = partial_path(out)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _convert(header, tmp, extra_eos)
            files = {f.name: (f.stat().st_size, sha256_file(f)) for f in sorted(tmp.iterdir())}
            manifest = dict(format=MANIFEST_FORMAT, source=header.path.name, sha256=sha256,
                            architecture=header.architecture, quant_types=list(header.quant_types),
                            dtype="float32", files=files)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
            shutil.rmtree(out, ignore_errors=True)  # an incomplete earlier attempt
            os.replace(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def _convert(header: GGUFHeader, out: Path, extra_eos: tuple[int, ...]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(header.path.parent), header.path.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # a GGUF-loaded model refuses save_pretrained while it is marked quantized; its weights are
    # already float32, so only the marks go. The bridge refuses a config without architectures.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.architectures = [type(model).__name__]
    eos = list(dict.fromkeys([*header.eos_token_ids, *extra_eos]))
    if eos:
        model.generation_config.eos_token_id = eos if len(eos) > 1 else eos[0]
    model.save_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    if header.add_bos_token is not None and bool(getattr(tokenizer, "add_bos_token", False)) != header.add_bos_token:
        # transformers ignores tokenizer.ggml.add_bos_token (Gemma's GGUF says True and would
        # lose its BOS); llama.cpp honours it, and so does mkt
        tokenizer.add_bos_token = header.add_bos_token
    tokenizer.save_pretrained(out)
