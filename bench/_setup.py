"""Shared by the benchmarks: a random local model of a given size, and timing."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from mkt.organisms.train import OrganismSpec, build_tokenizer


def random_model_dir(arch: str = "qwen2", d_model: int = 256, n_layers: int = 6, n_heads: int = 4) -> Path:
    from transformers import AutoModelForCausalLM

    spec = OrganismSpec(arch=arch, d_model=d_model, n_layers=n_layers, n_heads=n_heads, max_positions=256)
    torch.manual_seed(0)
    path = Path(tempfile.mkdtemp(prefix="mkt-bench-")) / f"{arch}-d{d_model}-L{n_layers}"
    AutoModelForCausalLM.from_config(spec.hf_config()).save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


def prompts(n: int, terms: int = 12, seed: int = 0) -> list[str]:
    """Organism-alphabet prompts of varied length (left padding is exercised)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        k = terms - int(torch.randint(0, terms // 2, (1,), generator=g))
        nums = torch.randint(10, 100, (k,), generator=g).tolist()
        out.append("Q:" + "+".join(map(str, nums)) + "|A:")
    return out


def median_time(fn, repeats: int = 5, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved(fns: dict, repeats: int = 5, warmup: bool = True) -> dict[str, float]:
    """Median seconds of each function, run in alternation so drift hits all alike (after one
    untimed run of each, unless ``warmup`` is False)."""
    for fn in fns.values() if warmup else ():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
