"""A GGUF reader written from the format spec (ggml/docs/gguf.md), sharing no code with the
``gguf`` package mkt writes with: the tests read mkt's files through it."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
STRING, ARRAY, F32 = 8, 9, 0


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, fmt: str):
        (value,) = struct.unpack_from("<" + fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.take("Q")
        self.at += n
        return self.data[self.at - n:self.at].decode()

    def value(self, kind: int):
        if kind == STRING:
            return self.string()
        if kind == ARRAY:
            inner, n = self.take("I"), self.take("Q")
            return [self.value(inner) for _ in range(n)]
        return self.take(_SCALARS[kind])


def read_gguf(path: Path) -> tuple[dict, dict]:
    """(metadata {key: (type id, value)}, tensors {name: (ggml type id, ne, float32 array or None)})."""
    c = _Cursor(Path(path).read_bytes())
    assert c.data[:4] == b"GGUF", "not a GGUF file"
    c.at = 4
    version, n_tensors, n_kv = c.take("I"), c.take("Q"), c.take("Q")
    assert version == 3, f"GGUF version {version}"
    meta = {}
    for _ in range(n_kv):
        key, kind = c.string(), c.take("I")
        meta[key] = (kind, c.value(kind))
    infos = []
    for _ in range(n_tensors):
        name, n_dims = c.string(), c.take("I")
        ne = [c.take("Q") for _ in range(n_dims)]
        infos.append((name, ne, c.take("I"), c.take("Q")))
    align = meta.get("general.alignment", (4, 32))[1]
    start = (c.at + align - 1) // align * align
    tensors = {}
    for name, ne, kind, offset in infos:
        count = int(np.prod(ne))
        data = (np.frombuffer(c.data, dtype="<f4", count=count, offset=start + offset).copy()
                if kind == F32 else None)
        tensors[name] = (kind, ne, data)
    return meta, tensors
