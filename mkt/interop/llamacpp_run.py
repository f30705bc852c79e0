"""llama.cpp itself (through llama-cpp-python) running a GGUF model with a control vector.

The other engine mkt's control vectors are checked against. The file is read by ggml's own GGUF
parser (``gguf_init_from_file`` in the ``libggml-base`` llama-cpp-python ships), then laid out
as llama.cpp's ``common_control_vector_load`` lays it out (layer 1 first) and handed to
``llama_set_adapter_cvec`` with common's default layer range 1..n_layer. Needs ``llama_cpp``
(``pip install llama-cpp-python``, a source build).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from mkt.interop.llamacpp_rules import direction_layer

GGML_TYPE_F32 = 0


class _GGUFInitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def _ggml_base() -> ctypes.CDLL:
    import llama_cpp

    lib = ctypes.CDLL(str(next((Path(llama_cpp.__file__).parent / "lib").glob("libggml-base.so*"))))
    lib.gguf_init_from_file.restype, lib.gguf_init_from_file.argtypes = ctypes.c_void_p, [ctypes.c_char_p,
                                                                                        _GGUFInitParams]
    for name, restype in (("gguf_get_n_tensors", ctypes.c_int64), ("gguf_get_data_offset", ctypes.c_size_t)):
        getattr(lib, name).restype, getattr(lib, name).argtypes = restype, [ctypes.c_void_p]
    for name, restype in (("gguf_get_tensor_name", ctypes.c_char_p), ("gguf_get_tensor_type", ctypes.c_int),
                          ("gguf_get_tensor_offset", ctypes.c_size_t), ("gguf_get_tensor_size", ctypes.c_size_t)):
        getattr(lib, name).restype, getattr(lib, name).argtypes = restype, [ctypes.c_void_p, ctypes.c_int64]
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    return lib


def ggml_control_vector(path: str | Path, strength: float = 1.0) -> dict[int, np.ndarray]:
    """The vectors llama.cpp loads from ``path``, read by ggml's parser: block N -> ``strength x direction.N``.

    Raises:
        ValueError: where llama.cpp's loader would print an error and skip the file.
    """
    lib, raw = _ggml_base(), Path(path).read_bytes()
    ctx = lib.gguf_init_from_file(str(path).encode(), _GGUFInitParams(True, None))
    if not ctx:
        raise ValueError(f"ggml cannot parse {path} as GGUF")
    try:
        vectors: dict[int, np.ndarray] = {}
        base = lib.gguf_get_data_offset(ctx)
        for i in range(lib.gguf_get_n_tensors(ctx)):
            name = lib.gguf_get_tensor_name(ctx, i).decode()
            layer = direction_layer(name)
            if layer <= 0 or lib.gguf_get_tensor_type(ctx, i) != GGML_TYPE_F32:
                raise ValueError(f"llama.cpp rejects tensor {name!r} of {path}")
            start = base + lib.gguf_get_tensor_offset(ctx, i)
            data = np.frombuffer(raw, "<f4", lib.gguf_get_tensor_size(ctx, i) // 4, start) * strength
            vectors[layer] = vectors.get(layer, 0) + data
        return vectors
    finally:
        lib.gguf_free(ctx)


class LlamaCppModel:
    """A GGUF model in llama.cpp, fp32 logits at every position, optionally with a control vector.

    Args:
        gguf_path: the model's ``.gguf`` file.
        n_ctx: context length.
        n_threads: CPU threads.
    """

    def __init__(self, gguf_path: str | Path, n_ctx: int = 512, n_threads: int = 2) -> None:
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf_path), n_ctx=n_ctx, n_threads=n_threads, logits_all=True,
                         verbose=False, seed=0)
        self.n_embd, self.n_layer = self.llm.n_embd(), int(self.llm.metadata.get(
            f"{self.llm.metadata['general.architecture']}.block_count"))

    def close(self) -> None:
        """Free llama.cpp's model and context now (its own finaliser fails at interpreter exit)."""
        self.llm.close()

    def set_control_vector(self, vectors: dict[int, np.ndarray] | None) -> None:
        """Apply ``vectors`` (block N -> vector) as llama.cpp applies a loaded file; None clears it."""
        import llama_cpp

        ctx = self.llm._ctx.ctx
        if vectors is None:
            if llama_cpp.llama_set_adapter_cvec(ctx, None, 0, self.n_embd, -1, -1):
                raise RuntimeError("llama.cpp could not clear the control vector")
            return
        if not all(1 <= layer < self.n_layer for layer in vectors):
            raise ValueError(f"control vector layers {sorted(vectors)}: llama.cpp steers blocks 1..{self.n_layer - 1}")
        # Layer 1 at [0], as common lays it out, and every block's slot written: llama_adapter_cvec::apply
        # leaves a block past the end of the buffer holding the previous call's vector.
        data = np.zeros(self.n_embd * (self.n_layer - 1), dtype=np.float32)
        for layer, vector in vectors.items():
            data[(layer - 1) * self.n_embd:layer * self.n_embd] += vector
        pointer = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        if llama_cpp.llama_set_adapter_cvec(ctx, pointer, data.size, self.n_embd, 1, self.n_layer):
            raise RuntimeError("llama.cpp refused the control vector (n_embd does not match the model)")

    def logprobs(self, ids: list[int]) -> np.ndarray:
        """Next-token log-probs ``[vocab]`` after the prompt ``ids`` (evaluated from scratch)."""
        self.llm.reset()
        self.llm.eval(ids)
        logits = self.llm.scores[len(ids) - 1].astype(np.float64)
        return logits - np.logaddexp.reduce(logits)

    def greedy(self, ids: list[int], max_new_tokens: int, stop: set[int] = frozenset()) -> list[int]:
        """Greedy continuation ids (argmax of llama.cpp's logits), stopping after a ``stop`` id."""
        self.llm.reset()
        self.llm.eval(ids)
        out: list[int] = []
        while len(out) < max_new_tokens:
            token = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
            out.append(token)
            if token in stop:
                break
            self.llm.eval([token])
        return out
