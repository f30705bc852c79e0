"""The TransformerLens engine and ``prompt_states`` on a real checkpoint, against HF and against the old paths.

One run, one model, medians of interleaved repeats (every generation makes exactly ``--new``
tokens per row: no EOS):
- tokens/s of HF ``generate`` unsteered (a fresh ``AutoModelForCausalLM``, HF's default
  attention), the TransformerLens engine unsteered, steered prompt-last (the paper's) and
  steered at every generated token; ratios to HF and steering overheads;
- ``prompt_states`` (every layer, last token) against the old reading (``run_with_cache`` over
  the whole bridge, logits included): prompts/s and the ratio new / old;
- the physical limit of a decoding step: parameter bytes read per step / memory bandwidth
  (``--bandwidth-gbs``, measured by a large copy when not given).

    python -m bench.bench_real real:gemma-3-270m [--batch 32 --new 128 --repeats 3] [--states-only] [--states-bfloat16]

``MODEL`` is anything ``mkt.load_model`` takes that is a local model: ``real:NAME``, a ``.gguf``
file, a saved HF directory (docs/real-models.md).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from bench._setup import interleaved

QUESTION = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
            "How many clips did Natalia sell altogether in April and May?")


def gsm8k_like(n: int) -> list[str]:
    """``n`` prompts of different lengths (left padding is exercised), GSM8K style."""
    return [f"Question: {QUESTION} " + "Think carefully. " * (i % 5) + "\nAnswer:" for i in range(n)]


def copy_bandwidth_gbs(n_bytes: int = 2**29) -> float:
    """Memory bandwidth from a large tensor copy (read + write), GB/s."""
    src, dst = torch.empty(n_bytes // 4), torch.empty(n_bytes // 4)
    dst.copy_(src)
    start = time.perf_counter()
    for _ in range(5):
        dst.copy_(src)
    return 2 * 5 * n_bytes / (time.perf_counter() - start) / 1e9


GSM8K = Path(__file__).resolve().parents[2] / "shared/data/gsm8k/test.jsonl"


def gsm8k_prompts(n: int) -> list[str]:
    """The first ``n`` GSM8K test questions as Locked prompts (their lengths vary as real work's do);
    ``gsm8k_like`` when ../shared/data is absent."""
    if not GSM8K.exists():
        return gsm8k_like(n)
    from mkt.eval.tasks import load_jsonl

    return [f"Question: {e.question}\nAnswer:" for e in load_jsonl(GSM8K, "gsm8k", limit=n)]


def states_speed(model, n_prompts: int, repeats: int, bf16_model=None) -> dict:
    """``prompt_states`` (every layer, last token) against the old reading: prompts/s and the ratio new / old,
    on GSM8K questions (or ``gsm8k_like`` prompts without ../shared/data). With ``bf16_model`` (the same
    weights in bfloat16) also its reading, its ratio to the old float32 one and its error against float32."""
    from mkt.activations import prompt_states
    from mkt.models import resid_hook_name, tokenize_left_padded

    states = gsm8k_prompts(n_prompts)
    names = [resid_hook_name(layer) for layer in range(model.cfg.n_layers)]

    @torch.no_grad()
    def old_states():  # the reading before: the whole bridge with its logits, states cached by name
        for start in range(0, len(states), 32):
            s_ids, s_mask = tokenize_left_padded(model, states[start : start + 32])
            _, cache = model.run_with_cache(s_ids, attention_mask=s_mask, names_filter=names)
            torch.stack([cache[n][:, -1] for n in names], dim=1)

    fns = {"old": old_states, "new": lambda: prompt_states(model, states, batch_size=32)}
    if bf16_model is not None:
        fns["new_bfloat16"] = lambda: prompt_states(bf16_model, states, batch_size=32)
    ts = interleaved(fns, repeats)
    result = dict(states_prompts="gsm8k" if GSM8K.exists() else "gsm8k_like",
                  states_prompts_per_s={k: len(states) / v for k, v in ts.items()},
                  states_new_over_old=ts["old"] / ts["new"])
    if bf16_model is not None:
        exact, approx = prompt_states(model, states), prompt_states(bf16_model, states).float()
        # error of each state relative to its own norm: the residual stream's scale grows with depth
        rel = (approx - exact).norm(dim=-1) / exact.norm(dim=-1)
        result.update(states_bfloat16_over_old=ts["old"] / ts["new_bfloat16"],
                      bfloat16_relative_error=dict(median=rel.median().item(), max=rel.max().item()),
                      bfloat16_min_cosine=torch.nn.functional.cosine_similarity(approx, exact, dim=-1).min().item())
    return result


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="real:NAME, a .gguf file or a saved HF directory (mkt.load_model's specs)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--states-prompts", type=int, default=64)
    ap.add_argument("--bandwidth-gbs", type=float, default=None)
    ap.add_argument("--vllm", action="store_true", help="also the vLLM engine (unsteered, prompt-last, every token)")
    ap.add_argument("--states-only", action="store_true", help="only prompt_states against the old reading")
    ap.add_argument("--states-bfloat16", action="store_true",
                    help="also prompt_states with the model loaded in bfloat16 (speed and error against float32)")
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    from mkt.checkpoints import resolve_model_path
    from mkt.generation import generate
    from mkt.models import load_model, tokenize_left_padded
    from mkt.steering import Steering

    path = resolve_model_path(args.model)
    model = load_model(path, device="cpu")
    bf16_model = load_model(path, device="cpu", dtype=torch.bfloat16) if args.states_bfloat16 else None
    if args.states_only:
        result = dict(bench="real-states", model=args.model, load=os.getloadavg(),
                      **states_speed(model, args.states_prompts, args.repeats + 1, bf16_model))
        print(json.dumps(result, indent=1))
        return result
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    n_params = sum(p.numel() for p in hf.parameters())
    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    ps = gsm8k_like(args.batch)
    ids, mask = tokenize_left_padded(model, ps)
    directions = torch.randn(n_layers, d_model, generator=torch.Generator().manual_seed(0))
    last = Steering(directions, alpha=0.2)
    every = Steering(directions, alpha=0.2, scope="prompt-last+generated")

    def mkt(steering, new):
        return lambda: generate(model, ps, new, steering, batch_size=args.batch, eos_ids=[])

    def hf_generate(new):
        @torch.no_grad()
        def run():
            hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                        pad_token_id=0)

        return run

    engines = {}
    if args.vllm:
        from mkt.engines import VLLMEngine

        start = time.perf_counter()
        engines["vllm"] = VLLMEngine(path, max_model_len=1024)
        vllm_start_s = time.perf_counter() - start

    def vllm(steering, new):
        return lambda: engines["vllm"].generate(ps, new, steering, eos_ids=[])

    def runs(new):
        fns = {"hf_generate": hf_generate(new), "mkt_unsteered": mkt(None, new), "mkt_steered": mkt(last, new),
               "mkt_steered_every_token": mkt(every, new)}
        if args.vllm:
            fns.update(vllm_unsteered=vllm(None, new), vllm_steered=vllm(last, new),
                       vllm_steered_every_token=vllm(every, new))
        return fns

    for warm in runs(4).values():  # first calls (allocations, lazy hooks) on a short budget
        warm()
    t = interleaved(runs(args.new), args.repeats, warmup=False)
    if args.vllm:  # the engines' greedy tokens, steered (prompt-last), side by side
        same = [a.token_ids == b.token_ids for a, b in zip(engines["vllm"].generate(ps, 32, last),
                                                           generate(model, ps, 32, last, batch_size=args.batch))]
    n_tokens = args.batch * args.new
    tokens_per_s = {name: n_tokens / s for name, s in t.items()}

    states = states_speed(model, args.states_prompts, args.repeats + 1, bf16_model)
    bandwidth = args.bandwidth_gbs or copy_bandwidth_gbs()
    step_bytes = n_params * 4  # float32 weights, each read once per decoding step
    result = dict(
        bench="real", model=args.model, config=vars(args), n_params=n_params,
        load=os.getloadavg(), seconds=t, tokens_per_s=tokens_per_s,
        unsteered_over_hf=tokens_per_s["mkt_unsteered"] / tokens_per_s["hf_generate"],
        steered_over_hf=tokens_per_s["mkt_steered"] / tokens_per_s["hf_generate"],
        steered_overhead=t["mkt_steered"] / t["mkt_unsteered"],
        every_token_overhead=t["mkt_steered_every_token"] / t["mkt_unsteered"],
        **states,
        bandwidth_gbs=bandwidth, step_limit_s=step_bytes / (bandwidth * 1e9),
        limit_tokens_per_s_at_batch=args.batch * bandwidth * 1e9 / step_bytes,
    )
    if args.vllm:
        result.update(vllm_start_s=vllm_start_s,
                      vllm_steered_over_hf=tokens_per_s["vllm_steered"] / tokens_per_s["hf_generate"],
                      vllm_steered_overhead=t["vllm_steered"] / t["vllm_unsteered"],
                      vllm_every_token_overhead=t["vllm_steered_every_token"] / t["vllm_unsteered"],
                      engines_same_greedy_tokens_32=f"{sum(same)}/{len(same)}")
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
