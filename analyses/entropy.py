"""Output entropy with vs without the key on the same tokens, and accuracy and pass@k with intervals.

The paper's claim: the key sharpens the distribution toward successful trajectories, so
entropy drops and pass@1 rises more than pass@k does at large k.

Greedy entropies of two generations compare different trajectories (worked arithmetic
tokens are low-entropy in themselves) averaged over whichever rows are still running. So
every entropy here is teacher-forced: one forward over prompt + a FIXED token sequence,
with and without the key (steered at the last prompt position, as in generation), on
(a) the plain greedy continuation and (b) the keyed greedy continuation. The decision
token is the first generated position: the only one both trajectories share, and where
the key acts. Each paired difference (per prompt) has a bootstrap interval over prompts
and is set against random directions with the key's per-layer norms at the same alpha.

Accuracy and pass@k need answers: they run with ``--task`` (a task file, as in ``mkt
eval``) or on the organisms; with ``--prompts`` only the entropy half runs.

    mkt analyze entropy --model organism:target-family --samples 16
    mkt analyze entropy --model DIR --pack PACK --prompts questions.jsonl
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from analyses._common import (
    RunOptions,
    add_model_key_arguments,
    pyplot,
    resolve_run,
    save_figure,
    write_outputs,
)
from analyses.contract import Analysis
from mkt.cliargs import nonnegative_int, positive_float, positive_int
from mkt.controls import isotropic_null, principal_keys_like
from mkt.eval.stats import empirical_p_value, mcnemar_exact, paired_bootstrap_interval, pass_at_k
from mkt.generation import generate
from mkt.models import tokenize_left_padded
from mkt.steering import Steering

TRAJECTORIES = ("plain", "key")  # whose greedy continuation is teacher-forced


# --- pure statistics ---------------------------------------------------------------------------


def bootstrap_mean_interval(values, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of a mean, resampling items (the paired bootstrap against zero)."""
    return paired_bootstrap_interval(values, [0.0] * len(values), n_boot, seed)


def pass_at_k_per_prompt(correct: np.ndarray, ks) -> np.ndarray:
    """``[n_prompts, len(ks)]`` unbiased pass@k of each prompt from its ``[n_prompts, n_samples]`` scores."""
    n = correct.shape[1]
    return np.array([[pass_at_k(n, int(c), int(k)) for k in ks] for c in correct.sum(1)])


def mean_per_step(per_row: list[np.ndarray], steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean at each step over the rows long enough to have it, and how many rows that is."""
    sums, counts = np.zeros(steps), np.zeros(steps)
    for row in per_row:
        m = min(len(row), steps)
        sums[:m] += row[:m]
        counts[:m] += 1
    return np.divide(sums, counts, out=np.full(steps, np.nan), where=counts > 0), counts


@dataclass
class Comparison:
    """One per-prompt paired comparison, key minus without, with its controls.

    ``control_diffs`` are the same difference for random directions with the key's
    per-layer norms at the same alpha; ``p_value`` is the one-sided empirical p-value of
    the key's change against them, in the direction ``sign`` (-1: a drop is the effect).
    """

    without: float
    with_key: float
    diff: float
    interval: tuple[float, float]
    control_diffs: list[float]
    p_value: float | None
    pc_diffs: dict[str, float] | None = None
    pc_p_value: float | None = None
    pc_rank: int | None = None


def compare(without: np.ndarray, with_key: np.ndarray, controls: list[np.ndarray], sign: int,
            seed: int = 0, pcs: dict[str, np.ndarray] | None = None) -> Comparison:
    """Paired comparison of per-prompt values; controls are per-prompt values under random keys,
    ``pcs`` under the Target's own +-PC directions (a searched, Target-only null)."""
    diffs = [float(np.mean(c - without)) for c in controls]
    diff = float(np.mean(with_key - without))
    out = Comparison(float(np.mean(without)), float(np.mean(with_key)), diff,
                     paired_bootstrap_interval(with_key, without, seed=seed), diffs,
                     empirical_p_value(sign * diff, [sign * d for d in diffs]) if diffs else None)
    if pcs:
        out.pc_diffs = {name: float(np.mean(v - without)) for name, v in pcs.items()}
        out.pc_p_value = empirical_p_value(sign * diff, [sign * d for d in out.pc_diffs.values()])
        out.pc_rank = 1 + sum(1 for d in out.pc_diffs.values() if sign * d >= sign * diff)
    return out


# --- model I/O ---------------------------------------------------------------------------------


@torch.no_grad()
def teacher_forced_entropy(model, prompts: list[str], continuations: list[list[int]],
                           steering: Steering | None = None, batch_size: int = 128) -> list[np.ndarray]:
    """Next-token entropy (nats) at each position that predicts a continuation token.

    One forward over left-padded prompt + continuation. With ``prompt_len`` set to the
    padded prompt length, the steering hooks act where they act in generation (the last
    prompt position for scope ``prompt-last``), and later positions see that change through
    attention exactly as they see it through the KV cache. Continuations are right-padded;
    padding sits after every position read, so causal attention keeps it out.

    Returns:
        Per prompt, ``len(continuation)`` entropies; the first is the decision token's
        (the distribution at the last prompt token).
    """
    out: list[np.ndarray] = []
    for start in range(0, len(prompts), batch_size):
        batch, conts = prompts[start:start + batch_size], continuations[start:start + batch_size]
        ids, mask = tokenize_left_padded(model, batch)
        prompt_len, width = ids.shape[1], max(1, max(len(c) for c in conts))
        tail = torch.zeros((len(batch), width), dtype=ids.dtype)
        for i, c in enumerate(conts):
            tail[i, :len(c)] = torch.tensor(c, dtype=ids.dtype)
        ids = torch.cat([ids, tail.to(ids.device)], 1)
        mask = torch.cat([mask, torch.ones_like(tail).to(mask.device)], 1)
        with ExitStack() as stack:
            if steering is not None:
                hooks = stack.enter_context(steering.rows(start, start + len(batch)).attach(model))
                hooks.locate_prompt(prompt_len)
            logits = model(ids, attention_mask=mask)
        logp = torch.log_softmax(logits[:, prompt_len - 1:prompt_len - 1 + width].float(), -1)
        ent = -(logp.exp() * logp).sum(-1).cpu().double().numpy()
        out.extend(ent[i, :max(1, len(c))] for i, c in enumerate(conts))
    return out


def _continuation(g, eos: int | None) -> list[int]:
    """The tokens generated, with the EOS that ended the row (its prediction is a decision too)."""
    return g.token_ids + ([eos] if g.stopped and eos is not None else [])


# --- the analysis -------------------------------------------------------------------------------


@dataclass
class EntropyResult:
    """Teacher-forced entropies, and (with answers) accuracy and pass@k, with vs without the key.

    Attributes:
        step_entropy: ``[trajectory, condition, step]`` mean entropy over the rows whose
            ``trajectory`` (plain, key) reaches the step; condition 0 without, 1 with the key.
            Both conditions average the same rows on the same tokens.
        step_rows: ``[trajectory, step]`` how many rows that is.
        decision: entropy at the first generated position, against random directions and
            (``pc_*``) the Target's own +-PC directions with the key's norms.
        trajectory: ``{"plain": ...}`` the per-prompt mean entropy over the plain greedy
            tokens at positions >= 1 (the decision token excluded), prompts with such tokens.
        accuracy: greedy correct rate (plain trajectory vs key trajectory), with McNemar's p;
            ``accuracy_control`` the rate with a random direction per prompt (no p-value).
        pass_at_k, pass_at_k_interval: ``[condition, k]`` (without, key, random control) and
            ``[condition, k, 2]`` bootstrap intervals over prompts; ``pass_at_k_diff_interval``
            ``[k, 2]`` for key minus without.
    """

    model: str
    alpha: float
    n_prompts: int
    max_new_tokens: int
    n_controls: int
    steps: np.ndarray
    step_entropy: np.ndarray
    step_rows: np.ndarray
    decision: Comparison
    trajectory: dict[str, Comparison]
    scored: bool
    accuracy: Comparison | None = None
    accuracy_mcnemar_p: float | None = None
    accuracy_control: float | None = None
    n_samples: int = 0
    n_pass_prompts: int = 0
    temperature: float = 1.0
    ks: np.ndarray | None = None
    pass_at_k: np.ndarray | None = None
    pass_at_k_interval: np.ndarray | None = None
    pass_at_k_diff_interval: np.ndarray | None = None


def entropy_analysis(model, prompts: list[str], key, alpha: float, is_correct: Callable[[int, str], bool] | None = None,
                     n_samples: int = 8, temperature: float = 1.0, max_new_tokens: int = 40, pass_n: int | None = None,
                     mode: str = "norm-preserving", n_controls: int = 19, model_name: str = "", seed: int = 0,
                     progress: bool = True, n_pcs: int = 8) -> EntropyResult:
    """Collect greedy continuations, teacher-force them under every steering, then score.

    Args:
        key: a ``MasterKey`` in ``model``'s space.
        is_correct: ``is_correct(i, text)`` for prompt i; None skips accuracy and pass@k.
        n_samples, temperature: sampling for pass@k.
        pass_n: pass@k on the first ``pass_n`` prompts only (sampling is the slow part); default all.
        n_controls: random directions (the key's per-layer norms, same alpha) for the
            entropy nulls. Greedy accuracy and pass@k are also run with a random direction,
            a different one for every prompt (a sanity row: no p-value is read from it).
        n_pcs: the Target's own top principal directions of its Locked states on these
            prompts, both signs (``2 * n_pcs`` keys, the key's norms, same alpha): a Target-only
            searched null for the decision token; 0 skips it.
    """
    eos = model.tokenizer.eos_token_id
    controls = [c.steering(alpha, mode) for c in isotropic_null(key, n_controls, seed)]  # all at the key's hook
    steerings = {"plain": None, "key": key.steering(alpha, mode)}
    greedy = {tag: generate(model, prompts, max_new_tokens, s, batch_size=64) for tag, s in steerings.items()}
    conts = {tag: [_continuation(g, eos) for g in gens] for tag, gens in greedy.items()}

    tf = {(traj, cond): teacher_forced_entropy(model, prompts, conts[traj], s)
          for traj in TRAJECTORIES for cond, s in steerings.items()}
    # The controls only on the plain trajectory: the tokens no steering chose.
    tf_controls = [teacher_forced_entropy(model, prompts, conts["plain"], s)
                   for s in tqdm(controls, desc="controls", disable=not progress)]
    tf_pcs = {}
    m = min(n_pcs, len(prompts) - 1, key.directions.shape[-1])  # centred, n prompts span at most n - 1 directions
    if m >= 1:
        from mkt.activations import prompt_states

        pcs = principal_keys_like(key, prompt_states(model, prompts, hook=key.hook), m)
        tf_pcs = {name: teacher_forced_entropy(model, prompts, conts["plain"], pc.steering(alpha, mode))
                  for name, pc in tqdm(pcs.items(), desc="+-PC null", disable=not progress)}

    later = [i for i, r in enumerate(tf["plain", "plain"]) if len(r) > 1]  # rows with positions >= 1

    def means(rows):  # positions >= 1: the decision token has its own row
        return np.array([rows[i][1:].mean() for i in later])

    def firsts(rows):
        return np.array([r[0] for r in rows])

    decision = compare(firsts(tf["plain", "plain"]), firsts(tf["plain", "key"]), [firsts(c) for c in tf_controls], -1,
                       pcs={name: firsts(v) for name, v in tf_pcs.items()})
    # Only the plain tokens: on the keyed tokens the keyed model is on-policy and the plain one is
    # not, and the random directions have no path of their own there, so no row compares them.
    trajectory = {"plain": compare(means(tf["plain", "plain"]), means(tf["plain", "key"]),
                                   [means(c) for c in tf_controls], -1)}
    curves = [[mean_per_step(tf[traj, cond], max_new_tokens + 1) for cond in steerings] for traj in TRAJECTORIES]
    result = EntropyResult(
        model_name, alpha, len(prompts), max_new_tokens, n_controls, np.arange(max_new_tokens + 1),
        np.array([[c[0] for c in row] for row in curves]), np.array([row[0][1] for row in curves]),
        decision, trajectory, is_correct is not None)
    if is_correct is None:
        return result

    def score(gens) -> np.ndarray:
        return np.array([is_correct(i, g.text) for i, g in enumerate(gens)], dtype=float)

    acc = {tag: score(gens) for tag, gens in greedy.items()}
    random_rows = Steering(torch.stack([c.directions for c in isotropic_null(key, len(prompts), seed + 1000)]), alpha,
                           mode, hook=key.hook)
    result.accuracy_control = float(score(generate(model, prompts, max_new_tokens, random_rows, batch_size=64)).mean())
    result.accuracy = compare(acc["plain"], acc["key"], [], +1)
    result.accuracy_mcnemar_p = mcnemar_exact(acc["key"].astype(bool).tolist(), acc["plain"].astype(bool).tolist())

    ks = np.array([k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n_samples])
    pass_prompts = prompts[:pass_n]
    rows = [p for p in pass_prompts for _ in range(n_samples)]
    per_prompt = []  # [condition] -> [n_prompts, K]
    random_rows = Steering(torch.stack([c.directions for c in isotropic_null(key, len(rows), seed + 2000)]), alpha,
                           mode, hook=key.hook)  # a different random direction for every sample
    seeds = [seed + i for i in range(len(rows))]  # each sample's draws do not depend on its batch
    for s in tqdm((None, steerings["key"], random_rows), desc="pass@k", disable=not progress):
        samples = generate(model, rows, max_new_tokens, s, do_sample=True, temperature=temperature, seeds=seeds,
                           batch_size=128)
        correct = np.array([is_correct(i // n_samples, g.text) for i, g in enumerate(samples)])
        per_prompt.append(pass_at_k_per_prompt(correct.reshape(len(pass_prompts), n_samples), ks))
    result.n_samples, result.temperature, result.ks = n_samples, temperature, ks
    result.n_pass_prompts = len(pass_prompts)
    result.pass_at_k = np.array([p.mean(0) for p in per_prompt])
    result.pass_at_k_interval = np.array([[bootstrap_mean_interval(p[:, j]) for j in range(len(ks))]
                                          for p in per_prompt])
    result.pass_at_k_diff_interval = np.array([paired_bootstrap_interval(per_prompt[1][:, j], per_prompt[0][:, j])
                                               for j in range(len(ks))])
    return result


# --- plot ----------------------------------------------------------------------------------------


def plot_entropy(result: EntropyResult, path: str | Path) -> None:
    plt = pyplot()

    r = result
    fig, axes = plt.subplots(1, 3 if r.scored else 2, figsize=(15 if r.scored else 10, 4))
    a = axes[0]
    for t, traj in enumerate(TRAJECTORIES):
        for c, (cond, style) in enumerate((("without key", "-"), ("with key", "--"))):
            a.plot(r.steps, r.step_entropy[t, c], style, color=f"C{t}", label=f"{traj} greedy tokens, {cond}")
    a.set_xlabel("position in the continuation (0: decision token)")
    a.set_ylabel("teacher-forced entropy (nats)")
    a.set_title("Same tokens, with vs without the key", fontsize=9)
    a.legend(fontsize=7)

    b = axes[1]
    rows = [("decision token", r.decision), ("plain tokens, positions >= 1", r.trajectory["plain"])]
    for y, (name, comp) in enumerate(rows):
        b.errorbar(comp.diff, y, xerr=[[comp.diff - comp.interval[0]], [comp.interval[1] - comp.diff]], fmt="o",
                   color="C3", capsize=3, label="key (95% bootstrap CI)" if y == 0 else None)
        if comp.control_diffs:
            b.plot(comp.control_diffs, [y + 0.15] * len(comp.control_diffs), "x", color="gray",
                   label=f"random directions, same norms and alpha (n={len(comp.control_diffs)})" if y == 0 else None)
        if comp.pc_diffs:
            b.plot(list(comp.pc_diffs.values()), [y - 0.15] * len(comp.pc_diffs), "+", color="C2",
                   label=f"Target's own +-PC directions, key's norms (n={len(comp.pc_diffs)})")
    b.axvline(0, color="black", lw=0.8)
    b.set_ylim(-0.5, len(rows) + 0.6)  # room above the rows for the legend
    b.set_yticks(range(len(rows)), [n for n, _ in rows], fontsize=8)
    b.set_xlabel("entropy change with the key (nats, per-prompt paired)")
    b.set_title("Entropy change vs random-direction and +-PC nulls", fontsize=9)
    b.legend(fontsize=7, loc="upper left")

    if r.scored:
        c = axes[2]
        for i, (name, style) in enumerate((("without key", "o-"), ("with key", "s-"), ("random direction", "x:"))):
            c.plot(r.ks, 100 * r.pass_at_k[i], style, label=name, color=f"C{i}")
            c.fill_between(r.ks, 100 * r.pass_at_k_interval[i, :, 0], 100 * r.pass_at_k_interval[i, :, 1],
                           color=f"C{i}", alpha=0.15)
        c.set_xscale("log", base=2)
        c.set_xlabel("k")
        c.set_ylabel(f"pass@k (%), T={r.temperature}, 95% bootstrap over prompts")
        c.set_ylim(0, 102)
        c.set_title(f"pass@k; greedy accuracy {100 * r.accuracy.without:.1f}% -> {100 * r.accuracy.with_key:.1f}%",
                    fontsize=9)
        c.legend(fontsize=7)
    fig.suptitle(f"Output entropy{' and pass@k' if r.scored else ''} with vs without the key: {r.model}, "
                 f"alpha={r.alpha}, {r.n_prompts} prompts" + (f"; pass@k on {r.n_pass_prompts} x {r.n_samples} samples"
                                                   if r.scored else ""),
                 fontsize=10)
    save_figure(fig, path, dpi=120)


# --- command line ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class EntropyOptions(RunOptions):
    """The entropy analysis's options (``add_arguments``): sampling for pass@k and the nulls' sizes."""

    samples: int
    pass_n: int
    temperature: float
    max_new_tokens: int
    controls: int
    pcs: int


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_key_arguments(p)  # --task adds accuracy and pass@k; with --prompts only the entropy half runs
    p.add_argument("--samples", type=positive_int, default=8, help="samples per prompt for pass@k (default 8)")
    p.add_argument("--pass-n", type=positive_int, default=40, help="prompts (the first of --n) sampled for pass@k (default "
                   "40: sampling is the slow part)")
    p.add_argument("--temperature", type=positive_float, default=1.0, help="sampling temperature (default 1.0)")
    p.add_argument("--max-new-tokens", type=positive_int, default=40, help="generation budget (default 40)")
    p.add_argument("--controls", type=nonnegative_int, default=19, help="random directions (key's norms, same alpha) for the "
                   "entropy nulls (default 19: the fewest whose empirical p-value can reach 0.05)")
    p.add_argument("--pcs", type=nonnegative_int, default=8, help="the Target's own top principal directions, both signs, as a "
                   "searched null for the decision token (default 8: 16 directions; 0 skips it)")


def run(options: EntropyOptions) -> EntropyResult:
    r = resolve_run(options)  # answers come from --task or the organisms' own task; real prompts have none
    result = entropy_analysis(r.model, r.prompts, r.key, r.alpha, r.scorers().get("accuracy"), options.samples, options.temperature,
                              options.max_new_tokens, options.pass_n, n_controls=options.controls, model_name=options.model,
                              n_pcs=options.pcs)
    out = write_outputs(result, plot_entropy, options.out or "runs/entropy", "entropy")

    def line(name: str, c: Comparison, unit: str = "nats") -> str:
        ctrl = (f"; random directions {min(c.control_diffs):+.3f} .. {max(c.control_diffs):+.3f}, p={c.p_value:.3f}"
                if c.control_diffs else "")
        if c.pc_diffs:
            v = list(c.pc_diffs.values())
            ctrl += (f"; Target +-PC directions {min(v):+.3f} .. {max(v):+.3f}, key ranks {c.pc_rank} of "
                     f"{len(v) + 1}, p={c.pc_p_value:.3f}")
        return (f"  {name:26s} {c.without:.3f} -> {c.with_key:.3f} {unit} ({c.diff:+.3f}, 95% CI "
                f"[{c.interval[0]:+.3f}, {c.interval[1]:+.3f}]{ctrl})")

    print("teacher-forced entropy, same tokens with vs without the key:")
    print(line("decision token", result.decision))
    print(line("plain tokens, pos >= 1", result.trajectory["plain"]))
    if result.scored:
        print(line("greedy accuracy", result.accuracy, "") + f", McNemar p={result.accuracy_mcnemar_p:.3g}; "
              f"random direction per prompt {result.accuracy_control:.3f}")
        for j, k in enumerate(result.ks):
            lo, hi = result.pass_at_k_diff_interval[j]
            print(f"  pass@{k:<3d} {result.pass_at_k[0, j]:.3f} -> {result.pass_at_k[1, j]:.3f} "
                  f"(diff 95% CI [{lo:+.3f}, {hi:+.3f}]; random direction per sample {result.pass_at_k[2, j]:.3f})")
    else:
        print("  (no answers: accuracy and pass@k need --task)")
    print(f"wrote {out}/entropy.json and entropy.png")
    return result


ANALYSIS = Analysis("entropy", __doc__, add_arguments, EntropyOptions, run)

if __name__ == "__main__":
    ANALYSIS.main()
