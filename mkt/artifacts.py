"""Checks and writes shared by every file mkt saves: packs, alignments, run directories.

An artifact is checked completely on both sides, by the same functions: a file that passes the
read check never fails later with an internal exception, and a value that would not pass it is
never written. Writes go to a temporary file first and replace the old one atomically, so a kill
leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import Tensor

from mkt.errors import CorruptArtifactError, MktError
from mkt.models import ModelIdentity

IDENTITY_COUNTS = ("n_layers", "d_model", "d_vocab")


def is_int(x) -> bool:
    """An integer that is not a bool (JSON's ``true`` reads as a Python int)."""
    return isinstance(x, int) and not isinstance(x, bool)


def is_count(x) -> bool:
    """Whether ``x`` is a whole number >= 1 (not a bool)."""
    return is_int(x) and x >= 1


def is_number(x) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def identity_from_record(record, where: str, field: str) -> ModelIdentity:
    """A model identity read from field ``field`` of the file ``where``: the known fields, type-checked;
    extra fields ignored.

    Raises:
        CorruptArtifactError: naming ``where`` and the first bad field.
    """
    if not isinstance(record, dict):
        raise CorruptArtifactError(f"{where}: field {field!r} must be an object with name, architecture, n_layers, "
                                   f"d_model, d_vocab, not a JSON {type(record).__name__}")
    for name in ("name", "architecture"):
        if not isinstance(record.get(name), str):
            raise CorruptArtifactError(f"{where}: field '{field}.{name}' must be a string, got {record.get(name)!r}")
    for name in IDENTITY_COUNTS:
        if not is_count(record.get(name)):
            raise CorruptArtifactError(f"{where}: field '{field}.{name}' must be a whole number >= 1, "
                                       f"got {record.get(name)!r}")
    for name in ("n_heads", "d_head"):  # recorded since per-head keys; absent in older files
        if record.get(name) is not None and not is_count(record[name]):
            raise CorruptArtifactError(f"{where}: field '{field}.{name}' must be null or a whole number >= 1, "
                                       f"got {record[name]!r}")
    return ModelIdentity(**{f: record[f] for f in ("name", "architecture", *IDENTITY_COUNTS)},
                         n_heads=record.get("n_heads"), d_head=record.get("d_head"))


def check_tensor(tensor, name: str, shape: tuple[int, ...], where: str, fix: str) -> Tensor:
    """Refuse a tensor that is missing, not floating point, of another shape, or holds NaN or inf.

    Args:
        tensor: the tensor (None when the file lacks it).
        name: what the tensor is called in the file.
        shape: the shape the file's identities call for.
        where: the file (or object) it comes from, named in the message.
        fix: what the user should do, e.g. "fit the alignment again with `mkt align`".
    """
    if tensor is None:
        raise CorruptArtifactError(f"{where}: tensor {name!r} is missing; {fix}")
    if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
        kind = tensor.dtype if isinstance(tensor, Tensor) else type(tensor).__name__
        raise CorruptArtifactError(f"{where}: tensor {name!r} is {kind}, not floating point; {fix}")
    if tuple(tensor.shape) != tuple(shape):
        raise CorruptArtifactError(f"{where}: tensor {name!r} is {tuple(tensor.shape)}, not {tuple(shape)} as its "
                                   f"identities call for; {fix}")
    if not torch.isfinite(tensor).all():
        raise CorruptArtifactError(f"{where}: tensor {name!r} holds NaN or inf; {fix}")
    return tensor


def json_text(value, where: str) -> str:
    """``value`` as JSON text, refusing what JSON cannot hold (NaN, inf, tensors, objects) by name."""
    try:
        return json.dumps(value, indent=1, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise MktError(f"{where} cannot be written as JSON ({err}): store only strings, finite numbers, "
                       "lists and objects in it") from None


def make_directory(path: Path, what: str) -> Path:
    """``path`` as a directory (made with its parents), refusing a path that is a file in one line."""
    path = Path(path)
    blocked = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise MktError(f"cannot write {what} at {path}: {blocked} is a file, not a directory; choose another path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise MktError(f"cannot write {what} at {path} ({err.strerror or err}): choose another path") from None
    return path


def replace_atomically(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_bytes(path: Path, what: str, fix: str) -> bytes:
    """The bytes of the file ``path``, refusing a missing path, a directory or an unreadable file in one line."""
    path = Path(path)
    if not path.exists():
        raise CorruptArtifactError(f"{path}: no such file; {fix}")
    if not path.is_file():
        raise CorruptArtifactError(f"{path} is a directory, not {what}: pass the file itself")
    try:
        return path.read_bytes()
    except OSError as err:
        raise MktError(f"{path} cannot be read ({err.strerror or err}): check its permissions") from None


def read_json_object(path: Path, what: str, fix: str) -> dict:
    """A JSON object read from ``path``, refusing anything else in one line naming the file."""
    data = read_bytes(path, what, fix)
    try:
        value = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise CorruptArtifactError(f"{path} is not valid JSON ({err}); {fix}") from None
    if not isinstance(value, dict):
        raise CorruptArtifactError(f"{path} holds a JSON {type(value).__name__}, not {what}; {fix}")
    return value
