"""Key extraction time vs a plain batched forward over the same prompts (goal <= 1.10x).

    python bench/bench_extraction.py [--d-model 256 --layers 6 --n 256 --batch 32]
"""

from __future__ import annotations

import argparse
import json

import torch

from bench._setup import interleaved, prompts, random_model_dir
from mkt.activations import last_token_resid
from mkt.models import load_model, tokenize_left_padded


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    model = load_model(random_model_dir(d_model=args.d_model, n_layers=args.layers), device="cpu")
    ps = prompts(args.n)

    @torch.no_grad()
    def plain_forward():
        for i in range(0, len(ps), args.batch):
            ids, mask = tokenize_left_padded(model, ps[i : i + args.batch])
            model(ids, attention_mask=mask)

    def extraction():
        last_token_resid(model, ps, batch_size=args.batch)

    t = interleaved({"plain_forward": plain_forward, "last_token_resid": extraction}, args.repeats)
    result = dict(bench="extraction", config=vars(args), seconds=t,
                  ratio=t["last_token_resid"] / t["plain_forward"], goal=1.10)
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
