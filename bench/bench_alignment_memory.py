"""Memory of a factored alignment at Qwen3-4B -> Qwen3-14B sizes (random matrices).

40 target layers, d_s = 2560 -> d_t = 5120, k = 256: the factored form (V_sk, M, V_tk per
layer) against the dense d_s x d_t matrix per layer that it replaces. Also times mapping a key.

    python bench/bench_alignment_memory.py
"""

from __future__ import annotations

import json
import time

import torch

from mkt.alignment import SubspaceAlignment
from mkt.models import ModelIdentity


def main(layers: int = 40, d_s: int = 2560, d_t: int = 5120, k: int = 256) -> dict:
    src = ModelIdentity("Qwen3-4B-sized", "random", 36, d_s, 151936)
    tgt = ModelIdentity("Qwen3-14B-sized", "random", layers, d_t, 151936)
    g = torch.Generator().manual_seed(0)
    al = SubspaceAlignment(
        src, tgt, [min(35 * lt // (layers - 1), 35) for lt in range(layers)], "lstsq", k, 1024, False,
        source_bases=torch.randn(layers, d_s, k, generator=g), cores=torch.randn(layers, k, k, generator=g),
        target_bases=torch.randn(layers, d_t, k, generator=g),
        source_means=torch.zeros(layers, d_s), target_means=torch.zeros(layers, d_t),
    )
    factored = sum(t.numel() * t.element_size() for t in (al.source_bases, al.cores, al.target_bases))
    dense = layers * d_s * d_t * 4
    key = torch.randn(36, d_s, generator=g)
    start = time.perf_counter()
    mapped = al.map_directions(key)
    seconds = time.perf_counter() - start
    result = dict(bench="alignment_memory", layers=layers, d_s=d_s, d_t=d_t, k=k,
                  factored_MiB=factored / 2**20, dense_MiB=dense / 2**20, dense_over_factored=dense / factored,
                  map_key_seconds=seconds, mapped_shape=list(mapped.shape))
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
