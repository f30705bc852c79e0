"""The checks llama.cpp makes when it loads a control vector, reimplemented over the ``gguf`` reader.

Read from llama.cpp's source (``common/common.cpp: common_control_vector_load_one`` and
``src/llama-adapter.cpp: llama_adapter_cvec::apply``, as vendored by llama-cpp-python 0.3.36):

- every tensor is named ``direction.N``: the text before the first ``.`` is ``direction`` and N
  is what C++ ``std::stoi`` reads from the rest (leading digits; trailing text is ignored);
  N < 0 or unparsable, and N == 0, reject the file;
- every tensor is F32 and 1-D (``ggml_n_dims``: trailing dimensions of size 1 do not count),
  all of the same length n_embd, which must equal the model's;
- tensors with the same N add up; a file with no tensors is skipped, and with no valid file
  nothing is applied;
- ``direction.N`` is added to the output of block N (0-based, the ``l_out`` after the FFN
  residual add), for N in 1..n_layer-1: block 0 never has one, and N >= n_layer is ignored
  without a word.

``general.architecture`` and ``controlvector.model_hint`` are not read by llama.cpp; repeng's
``import_gguf`` requires the model hint and warns on another architecture, so mkt requires both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mkt.errors import CorruptArtifactError

ARCHITECTURE = "controlvector"
_STOI = re.compile(r"\s*([+-]?\d+)")  # what std::stoi accepts at the start of a string
_INT32 = 2**31


@dataclass
class ControlVectorFile:
    """A control vector as llama.cpp would apply it.

    Attributes:
        model_hint: ``controlvector.model_hint`` (repeng: the HF ``model_type``).
        layer_count: ``controlvector.layer_count`` as written (not read by llama.cpp), or None.
        vectors: block index N -> the float32 vector ``[n_embd]`` added to block N's output.
    """

    model_hint: str
    layer_count: int | None
    vectors: dict[int, np.ndarray]

    @property
    def n_embd(self) -> int:
        return len(next(iter(self.vectors.values())))


def direction_layer(name: str) -> int:
    """The layer index llama.cpp reads from a tensor name: -1 when it would reject the name."""
    prefix, dot, rest = name.partition(".")
    if not dot or prefix != "direction":
        return -1
    match = _STOI.match(rest)
    if match is None or not -_INT32 <= int(match.group(1)) < _INT32:
        return -1
    return int(match.group(1))


def _field_value(reader, key: str):
    field = reader.get_field(key)
    if field is None or not field.data:
        return None
    return field.contents()


def read_control_vector(path: str | Path, n_embd: int | None = None,
                        n_layers: int | None = None) -> ControlVectorFile:
    """Read a GGUF control vector and apply llama.cpp's (and repeng's) checks.

    Args:
        path: the ``.gguf`` file.
        n_embd: the model's width, checked when given (llama.cpp refuses another).
        n_layers: the model's number of blocks, checked when given: a direction at N >= n_layers
            would be ignored by llama.cpp without a word, so mkt refuses it.

    Raises:
        CorruptArtifactError: naming the file and the first rule it breaks.
    """
    from gguf import GGMLQuantizationType, GGUFReader

    path = Path(path)
    if not path.is_file():
        raise CorruptArtifactError(f"{path}: no such control vector file; give the path to a .gguf file")
    try:
        reader = GGUFReader(path)
    except (ValueError, OSError, IndexError) as err:
        raise CorruptArtifactError(f"{path} is not a readable GGUF file ({err}); write it with `mkt export`") from None

    def bad(why: str) -> CorruptArtifactError:
        return CorruptArtifactError(f"{path}: {why}; llama.cpp would not apply it (write it with `mkt export`)")

    arch = _field_value(reader, "general.architecture")
    if arch != ARCHITECTURE:
        raise bad(f"general.architecture is {arch!r}, not {ARCHITECTURE!r}: not a control vector")
    hint = _field_value(reader, f"{ARCHITECTURE}.model_hint")
    if not isinstance(hint, str):
        raise bad(f"{ARCHITECTURE}.model_hint is missing or not a string (repeng requires it)")
    layer_count = _field_value(reader, f"{ARCHITECTURE}.layer_count")
    if not reader.tensors:
        raise bad("it holds no direction tensors")
    vectors: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        layer = direction_layer(tensor.name)
        if layer < 0:
            raise bad(f"tensor {tensor.name!r} is not named direction.N")
        if layer == 0:
            raise bad(f"tensor {tensor.name!r} has layer index 0, which llama.cpp never steers")
        if tensor.tensor_type != GGMLQuantizationType.F32:
            raise bad(f"tensor {tensor.name!r} is {tensor.tensor_type.name}, not F32")
        shape = [int(x) for x in tensor.shape]  # ggml order (ne0 first)
        if any(x > 1 for x in shape[1:]):  # ggml_n_dims: trailing sizes of 1 do not count
            raise bad(f"tensor {tensor.name!r} has shape {shape}, not 1-D")
        data = np.asarray(tensor.data, dtype=np.float32).reshape(-1)
        if vectors and data.size != len(next(iter(vectors.values()))):
            raise bad(f"tensor {tensor.name!r} has {data.size} values, the ones before it "
                      f"{len(next(iter(vectors.values())))}")
        vectors[layer] = vectors.get(layer, np.zeros_like(data)) + data
    found = len(next(iter(vectors.values())))
    if n_embd is not None and found != n_embd:
        raise bad(f"its directions have {found} values but the model's n_embd is {n_embd}")
    if n_layers is not None and max(vectors) >= n_layers:
        raise bad(f"direction.{max(vectors)} is past the model's last block ({n_layers - 1}): it was made "
                  "for a deeper model")
    if not all(np.isfinite(v).all() for v in vectors.values()):
        raise bad("it holds NaN or inf values")
    return ControlVectorFile(hint, None if layer_count is None else int(layer_count), dict(sorted(vectors.items())))
