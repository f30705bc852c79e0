"""Steered vs unsteered generation, and mkt's loop vs the HF model's own generate.

Reports (measured side by side in one run, medians of interleaved repeats):
- steered / unsteered mkt generation (goal <= 1.03x): the cost of the hooks (the paper's
  prompt-last steering; and steering every generated token too);
- mkt unsteered / HF `generate` unsteered: the bridge's (and mkt loop's) own overhead.

    python bench/bench_generation.py [--d-model 256 --layers 6 --batch 8 --new 64]
"""

from __future__ import annotations

import argparse
import json

import torch

from bench._setup import interleaved, prompts, random_model_dir
from mkt.generation import generate
from mkt.models import load_model, tokenize_left_padded
from mkt.steering import Steering


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    path = random_model_dir(d_model=args.d_model, n_layers=args.layers)
    model = load_model(path, device="cpu")
    hf = AutoModelForCausalLM.from_pretrained(path).eval()
    ps = prompts(args.batch, terms=8)
    steering = Steering(torch.randn(args.layers, args.d_model), alpha=0.2)
    ids, mask = tokenize_left_padded(model, ps)

    def run(steer):
        return lambda: generate(model, ps, args.new, steer, batch_size=args.batch)

    @torch.no_grad()
    def hf_generate():
        hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=args.new, min_new_tokens=args.new,
                    do_sample=False, pad_token_id=0)

    every = Steering(steering.directions, alpha=0.2, scope="prompt-last+generated")
    t = interleaved({"mkt_unsteered": run(None), "mkt_steered": run(steering), "mkt_steered_every_token": run(every),
                     "hf_generate": hf_generate}, args.repeats)
    n_new = [len(g.token_ids) for g in generate(model, ps, args.new, None, batch_size=args.batch)]
    result = dict(
        bench="generation", config=vars(args), seconds=t, mean_new_tokens=sum(n_new) / len(n_new),
        steered_over_unsteered=t["mkt_steered"] / t["mkt_unsteered"], goal=1.03,
        every_token_over_unsteered=t["mkt_steered_every_token"] / t["mkt_unsteered"],
        mkt_steered_over_hf_generate=t["mkt_steered"] / t["hf_generate"],
    )
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
