"""Entropy of the output distribution per generation step, and pass@k, with vs without the key.

The paper's claim: the key sharpens the distribution toward successful trajectories, so
entropy drops and pass@1 rises more than pass@k does at large k.

    mkt analyze entropy --model organism:target-base --samples 16
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from analyses._common import (
    add_model_key_arguments,
    command_line,
    pyplot,
    resolve,
    write_outputs,
)
from mkt.eval.stats import pass_at_k
from mkt.generation import generate
from mkt.steering import Steering


def mean_entropy_per_step(entropies: list[list[float]], max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean entropy at each step over the generations still running, and how many ran."""
    sums, counts = np.zeros(max_steps), np.zeros(max_steps)
    for seq in entropies:
        n = min(len(seq), max_steps)
        sums[:n] += seq[:n]
        counts[:n] += 1
    return np.divide(sums, counts, out=np.full(max_steps, np.nan), where=counts > 0), counts


@dataclass
class EntropyResult:
    model: str
    alpha: float
    steps: np.ndarray
    entropy: np.ndarray  # greedy decoding, mean over prompts still generating
    entropy_key: np.ndarray
    running: np.ndarray  # prompts still generating at each step (without key)
    running_key: np.ndarray
    ks: np.ndarray
    pass_at_k: np.ndarray
    pass_at_k_key: np.ndarray
    n_prompts: int
    n_samples: int
    temperature: float


def entropy_and_pass_at_k(model, prompts: list[str], is_correct: Callable[[int, str], bool], key, alpha: float,
                          n_samples: int = 16, temperature: float = 1.0, max_new_tokens: int = 64,
                          mode: str = "norm-preserving", model_name: str = "", seed: int = 0,
                          progress: bool = True) -> EntropyResult:
    """Greedy per-step entropies, and pass@k from ``n_samples`` samples per prompt."""
    out = {}
    for tag, steering in tqdm((("plain", None), ("key", Steering(key.directions, alpha, mode))),
                              desc="entropy", disable=not progress):
        greedy = generate(model, prompts, max_new_tokens, steering, record_entropy=True, batch_size=64)
        ent, running = mean_entropy_per_step([g.entropies for g in greedy], max_new_tokens)
        rows = [p for p in prompts for _ in range(n_samples)]
        samples = generate(model, rows, max_new_tokens, steering, do_sample=True, temperature=temperature,
                           seed=seed, batch_size=128)
        correct = np.array([is_correct(i // n_samples, g.text) for i, g in enumerate(samples)]).reshape(
            len(prompts), n_samples)
        ks = np.array([k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n_samples])
        passk = np.array([np.mean([pass_at_k(n_samples, int(c), int(k)) for c in correct.sum(1)]) for k in ks])
        out[tag] = (ent, running, passk, ks)
    (e0, r0, p0, ks), (e1, r1, p1, _) = out["plain"], out["key"]
    return EntropyResult(model_name, alpha, np.arange(max_new_tokens), e0, e1, r0, r1, ks, p0, p1, len(prompts),
                         n_samples, temperature)


def plot_entropy(result: EntropyResult, path: str | Path) -> None:
    plt = pyplot()

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(result.steps, result.entropy, label="without key")
    a.plot(result.steps, result.entropy_key, label=f"with key (alpha={result.alpha})")
    a.set_xlabel("generation step")
    a.set_ylabel("next-token entropy (nats), greedy")
    a.legend()
    b.plot(result.ks, 100 * result.pass_at_k, "o-", label="without key")
    b.plot(result.ks, 100 * result.pass_at_k_key, "s-", label="with key")
    b.set_xscale("log", base=2)
    b.set_xlabel("k")
    b.set_ylabel(f"pass@k (%), T={result.temperature}")
    b.set_ylim(0, 102)
    b.legend()
    fig.suptitle(f"Output entropy and pass@k with vs without the key: {result.model}, "
                 f"{result.n_prompts} prompts x {result.n_samples} samples", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_key_arguments(p)
    p.add_argument("--samples", type=int, default=16, help="samples per prompt for pass@k (default 16)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--max-new-tokens", type=int, default=40, help="generation budget (default 40)")


def run(args) -> EntropyResult:
    from mkt.organisms.task import score_answer

    model, key, alpha, prompts, probs = resolve(args)
    if probs is None:
        raise SystemExit("pass@k needs answers to check: this analysis scores organism prompts (drop --prompts)")
    result = entropy_and_pass_at_k(model, prompts, lambda i, text: score_answer(text, probs[i]).correct, key, alpha,
                                   args.samples, args.temperature, args.max_new_tokens, model_name=args.model)
    out = write_outputs(result, plot_entropy, args.out or "runs/entropy", "entropy")
    first = result.entropy[0], result.entropy_key[0]
    print(f"entropy at the first generated token: {first[0]:.3f} -> {first[1]:.3f} nats with the key")
    for k, a, b in zip(result.ks, result.pass_at_k, result.pass_at_k_key):
        print(f"  pass@{k}: {a:.3f} -> {b:.3f}")
    print(f"wrote {out}/entropy.json and entropy.png")
    return result


main = command_line(__doc__, add_arguments, run)


if __name__ == "__main__":
    main()
