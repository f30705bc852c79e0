"""A null battery in one call against one call per cell, on the TransformerLens engine (and vLLM).

A key, ``--conditions - 1`` null draws, each at ``--alphas`` strengths, on ``--prompts``
prompts: one ``run`` of conditions x alphas x prompts rows (``mkt.battery.Battery``) against
one ``generate`` per (condition, alpha) cell. Every row makes exactly ``--new`` tokens (no
EOS). Reports rows x tokens per second of each (condition x prompt x token per second) and
the ratio, medians of interleaved repeats, and checks the two give the same tokens. With
``--vllm`` the battery also runs as one call of the vLLM engine (its tokens checked against the
TransformerLens engine's); ``--no-per-cell`` leaves out the cell-by-cell run (a 100-prompt screen
on a real model takes as long again).

    python -m bench.bench_battery MODEL [--conditions 24 --alphas 4 --prompts 100 --new 16] [--vllm] [--no-per-cell]

``MODEL``: ``real:NAME``, a saved HF directory (GSM8K questions as prompts, or GSM8K-style ones
without ../shared/data); ``random`` for a random Qwen2 (d_model 256, 6 layers).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from bench._setup import interleaved, prompts, random_model_dir
from bench.bench_real import gsm8k_prompts


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--conditions", type=int, default=24)
    ap.add_argument("--alphas", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--new", type=int, default=16)
    ap.add_argument("--batch", type=int, default=None, help="rows per batch (default: fitted to free memory)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--vllm", action="store_true", help="also the battery as one call of the vLLM engine")
    ap.add_argument("--no-per-cell", action="store_true", help="leave out the run of one call per cell")
    args = ap.parse_args()
    from mkt.checkpoints import resolve_model_path
    from mkt.battery import Battery
    from mkt.generation import GenerationRequest, generate, run
    from mkt.models import load_model
    from mkt.steering import Steering

    random = args.model == "random"
    path = random_model_dir() if random else resolve_model_path(args.model)
    model = load_model(path, device="cpu")
    ps = prompts(args.prompts, terms=8) if random else gsm8k_prompts(args.prompts)
    g = torch.Generator().manual_seed(0)
    conditions = {("key" if i == 0 else f"null {i}"): torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g)
                  for i in range(args.conditions)}
    alphas = [0.05 * 2**i for i in range(args.alphas)]
    battery = Battery.grid(conditions, alphas, ps)
    request = GenerationRequest(args.new, battery.steering(), batch_size=args.batch, eos_ids=[])
    out = {}

    def one_call():
        out["battery"] = battery.split([g.token_ids for g in run(model, battery.prompts, request)])

    def per_cell():
        out["cells"] = {(c, a): [g.token_ids for g in generate(model, ps, args.new, Steering(conditions[c], alpha=a),
                                                              batch_size=args.batch, eos_ids=[])]
                        for c, a in battery.cells}

    fns = {"one_call": one_call} if args.no_per_cell else {"one_call": one_call, "per_cell": per_cell}
    if args.vllm:
        from mkt.engines import VLLMEngine

        engine = VLLMEngine(path, max_model_len=1024)

        def vllm_one_call():
            out["vllm"] = battery.split([g.token_ids for g in engine.run(battery.prompts, request)])

        fns["vllm_one_call"] = vllm_one_call
    t = interleaved(fns, args.repeats, warmup=False)
    rows_tokens = len(battery.prompts) * args.new
    result = dict(bench="battery", model="random qwen2 d256 L6" if random else args.model,
                  config=vars(args), load=os.getloadavg(), seconds=t,
                  condition_prompt_tokens_per_s={k: rows_tokens / v for k, v in t.items()})
    if not args.no_per_cell:
        same = sum(out["battery"][cell] == out["cells"][cell] for cell in battery.cells)
        result.update(one_call_speedup=t["per_cell"] / t["one_call"], cells_with_identical_tokens=f"{same}/{len(battery.cells)}")
    if args.vllm:
        same = sum(out["battery"][cell] == out["vllm"][cell] for cell in battery.cells)
        result.update(vllm_over_transformer_lens=t["one_call"] / t["vllm_one_call"],
                      vllm_cells_with_identical_tokens=f"{same}/{len(battery.cells)}")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
