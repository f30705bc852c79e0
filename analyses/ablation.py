"""Per-layer ablation of the intervention: which layers carry the key's effect?

The key applied at one layer only, and at all layers but one, against the key at all
layers and no key, on a metric: the logit difference of two chosen tokens at the first
generated position (one forward pass per condition), or a generation metric (accuracy,
step-by-step rate) from a scoring function.

    mkt analyze ablation --model organism:target-base --metric logit_diff --tokens T rest
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from analyses._common import (
    add_model_key_arguments,
    command_line,
    pyplot,
    relative_depth,
    resolve,
    write_outputs,
)
from mkt.generation import generate
from mkt.models import single_token_id, tokenize_left_padded
from mkt.steering import Steering

Metric = Callable[[Steering | None], float]


REST = "rest"  # as token_b: every other token, i.e. the log-odds of token_a


def logit_diff_metric(model, prompts: list[str], token_a: str, token_b: str, batch_size: int = 64) -> Metric:
    """Mean logit(token_a) - logit(token_b) at the first generated position.

    With ``token_b="rest"``, the log-odds of ``token_a`` against all other tokens
    (``log p - log(1 - p)``), for behaviours whose other opener is not one token (the
    organisms' direct answers open with any digit).
    """
    a = single_token_id(model, token_a)
    b = None if token_b == REST else single_token_id(model, token_b)

    @torch.no_grad()
    def metric(steering: Steering | None) -> float:
        total = 0.0
        for start in range(0, len(prompts), batch_size):
            ids, mask = tokenize_left_padded(model, prompts[start : start + batch_size])
            if steering is None:
                logits = model(ids, attention_mask=mask)[:, -1]
            else:
                with steering.attach(model):
                    logits = model(ids, attention_mask=mask)[:, -1]
            logits = logits.double()
            if b is None:
                logp = torch.log_softmax(logits, -1)[:, a]
                total += (logp - torch.log(-torch.expm1(logp))).sum().item()
            else:
                total += (logits[:, a] - logits[:, b]).sum().item()
        return total / len(prompts)

    return metric


def generation_metric(model, prompts: list[str], score: Callable[[int, str], float], max_new_tokens: int = 64,
                      batch_size: int = 64) -> Metric:
    """Mean ``score(prompt_index, output_text)`` over greedy generations."""
    def metric(steering: Steering | None) -> float:
        gens = generate(model, prompts, max_new_tokens, steering, batch_size=batch_size)
        return float(np.mean([score(i, g.text) for i, g in enumerate(gens)]))

    return metric


@dataclass
class AblationResult:
    model: str
    metric: str
    alpha: float
    relative_depth: np.ndarray
    only_layer: np.ndarray  # key at layer l alone
    all_but_layer: np.ndarray  # key everywhere except layer l
    all_layers: float
    no_key: float


def layer_ablation(key, metric: Metric, alpha: float, n_layers: int, mode: str = "norm-preserving",
                   metric_name: str = "", model_name: str = "", progress: bool = True) -> AblationResult:
    """Evaluate the metric with the key at each single layer and with each layer left out."""
    every = list(range(n_layers))
    only, all_but = [], []
    for layer in tqdm(every, desc="ablation", disable=not progress):
        only.append(metric(Steering(key.directions, alpha, mode, [layer])))
        rest = [x for x in every if x != layer]
        all_but.append(metric(Steering(key.directions, alpha, mode, rest)) if rest else metric(None))
    return AblationResult(model_name, metric_name, alpha, relative_depth(n_layers), np.array(only),
                          np.array(all_but), metric(Steering(key.directions, alpha, mode)), metric(None))


def plot_ablation(result: AblationResult, path: str | Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    x = result.relative_depth
    ax.plot(x, result.only_layer, "o-", label="key at this layer only")
    ax.plot(x, result.all_but_layer, "s-", label="key at all layers but this one")
    ax.axhline(result.all_layers, color="green", ls="--", label="key at all layers")
    ax.axhline(result.no_key, color="gray", ls=":", label="no key")
    ax.set_xlabel("relative depth of layer")
    ax.set_ylabel(result.metric)
    ax.set_title(f"Per-layer ablation of the key: {result.model}, alpha={result.alpha}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_key_arguments(p)
    p.add_argument("--metric", choices=["logit_diff", "accuracy", "step_by_step"], default="logit_diff",
                   help="logit difference of --tokens at the first generated position (one forward pass), or "
                        "accuracy / clean step-by-step rate of greedy generations (organism prompts)")
    p.add_argument("--tokens", nargs=2, default=["T", REST], metavar=("UNLOCKED", "LOCKED"),
                   help="tokens of the logit difference; LOCKED 'rest' gives the log-odds of UNLOCKED (default: T "
                   "rest, the log-odds of the organisms' step-by-step opener)")
    p.add_argument("--max-new-tokens", type=int, default=40, help="budget of generation metrics")


def run(args) -> AblationResult:
    from mkt.organisms.task import score_answer

    model, key, alpha, prompts, probs = resolve(args)
    if args.metric == "logit_diff":
        metric = logit_diff_metric(model, prompts, *args.tokens)
        name = (f"log-odds of {args.tokens[0]}" if args.tokens[1] == REST
                else f"logit({args.tokens[0]}) - logit({args.tokens[1]})")
    else:
        if probs is None:
            raise SystemExit("accuracy / step_by_step metrics score organism answers: drop --prompts or use logit_diff")
        field = "correct" if args.metric == "accuracy" else "clean_step_by_step"
        metric = generation_metric(model, prompts, lambda i, text: float(getattr(score_answer(text, probs[i]), field)),
                                   args.max_new_tokens)
        name = "accuracy" if args.metric == "accuracy" else "clean step-by-step rate"
    result = layer_ablation(key, metric, alpha, model.cfg.n_layers, metric_name=name, model_name=args.model)
    out = write_outputs(result, plot_ablation, args.out or "runs/ablation", "ablation")
    print(f"{name}: no key {result.no_key:.3f}, all layers {result.all_layers:.3f}")
    for i, d in enumerate(result.relative_depth):
        print(f"  layer {i} (depth {d:.2f}): only {result.only_layer[i]:.3f}, all but {result.all_but_layer[i]:.3f}")
    print(f"wrote {out}/ablation.json and ablation.png")
    return result


main = command_line(__doc__, add_arguments, run)


if __name__ == "__main__":
    main()
