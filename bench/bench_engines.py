"""Steered generation: the vLLM engine vs the TransformerLens engine vs HF ``generate``, in one run.

Reports (medians of interleaved repeats; every row generates exactly ``--new`` tokens):
- tokens/s of HF ``generate`` unsteered, the TransformerLens engine unsteered and steered, and
  the vLLM engine unsteered, steered (the paper's prompt-last) and steered at every token;
- vLLM steered / HF ``generate`` tokens/s (goal >= 2x on 2 CPU cores) and vLLM steered /
  unsteered time (goal <= 1.05x: the hooks' cost);
- an alpha sweep of 8 values: one ``generate`` call of 8 x batch rows (one alpha per row)
  vs 8 sequential calls, on the vLLM engine.

The model is a random Qwen2 with the real Qwen3 tokenizer (151k vocabulary: the embedding and
unembedding alone are 2 x 151k x d), >= 50M parameters at the default size.

    python -m bench.bench_engines [--d-model 512 --layers 4 --batch 16 --new 64 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from bench._setup import interleaved, prompts

TOKENIZERS = Path(os.environ.get("MKT_TOKENIZERS", Path(__file__).resolve().parents[2] / "shared" / "tokenizers"))
ALPHAS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--d-model", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8, help="head size d/heads must suit vLLM's CPU attention (64)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    from mkt.engines import VLLMEngine, as_engine
    from mkt.models import load_model, tokenize_left_padded
    from mkt.steering import Steering
    from mkt.tiny_models import save_tiny_model

    path = save_tiny_model("qwen2", TOKENIZERS, Path(tempfile.mkdtemp(prefix="mkt-bench-")) / "qwen2",
                           d_model=args.d_model, n_layers=args.layers, n_heads=args.heads)
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    n_params = sum(p.numel() for p in hf.parameters())
    tl = as_engine(load_model(path, device="cpu"))
    start = time.perf_counter()
    vllm = VLLMEngine(path, max_model_len=512, kv_cache_memory_bytes=2**30)
    vllm_start_s = time.perf_counter() - start
    ps = prompts(args.batch, terms=8)
    ids, mask = tokenize_left_padded(tl.model, ps)
    steering = Steering(torch.randn(args.layers, args.d_model), alpha=0.2)
    every = Steering(steering.directions, alpha=0.2, scope="prompt-last+generated")
    fixed = dict(eos_ids=[], batch_size=args.batch)  # no EOS: every row runs to --new tokens

    @torch.no_grad()
    def hf_generate():
        hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new, min_new_tokens=args.new,
                    do_sample=False, pad_token_id=0)

    def run(engine, steer):
        return lambda: engine.generate(ps, args.new, steer, **fixed)

    t = interleaved({"hf_generate": hf_generate, "tl_unsteered": run(tl, None), "tl_steered": run(tl, steering),
                     "vllm_unsteered": run(vllm, None), "vllm_steered": run(vllm, steering),
                     "vllm_steered_every_token": run(vllm, every)}, args.repeats)
    n_tokens = args.batch * args.new
    rows = [p for _ in ALPHAS for p in ps]
    sweep = Steering(steering.directions, alpha=torch.tensor([a for a in ALPHAS for _ in ps]))
    s = interleaved({
        "one_call": lambda: vllm.generate(rows, args.new, sweep, **fixed),
        "sequential": lambda: [vllm.generate(ps, args.new, Steering(steering.directions, alpha=a), **fixed)
                               for a in ALPHAS],
    }, args.repeats)
    result = dict(
        bench="engines", config=vars(args), n_params=n_params, torch_threads=torch.get_num_threads(),
        vllm_cpu_omp_threads_bind=os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto"),
        vllm_start_seconds=round(vllm_start_s, 1), seconds=t,
        tokens_per_second={k: round(n_tokens / v, 1) for k, v in t.items()},
        vllm_steered_over_hf_generate_tokens_per_s=t["hf_generate"] / t["vllm_steered"], goal_speedup=2.0,
        vllm_steered_over_unsteered_time=t["vllm_steered"] / t["vllm_unsteered"], goal_overhead=1.05,
        vllm_every_token_over_unsteered_time=t["vllm_steered_every_token"] / t["vllm_unsteered"],
        vllm_steered_over_tl_steered_tokens_per_s=t["tl_steered"] / t["vllm_steered"],
        alpha_sweep_seconds=s, alpha_sweep_one_call_speedup=s["sequential"] / s["one_call"],
    )
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
