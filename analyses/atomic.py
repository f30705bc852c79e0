"""Atomic vs non-atomic probe: is a capability latent in a Target, ready to be unlocked?

For one capability and one Target, each route's gain over the Target's plain baseline,
scored on the same prompts, with Newcombe's paired score interval and McNemar's exact p: prompting
(the Unlocked template), the transferred key, the Target's own key (organisms), a random
direction with the transferred key's norms at its alpha (the keys' null), and the
Target's own post-trained variant when one is given (the training gain; none is guessed).

The verdict reads ONE condition fixed in advance (``--primary``, default prompting), never
the best of several noisy ones:

    ATOMIC        gain >= threshold, the 95% interval's lower end > 0 and McNemar p < 0.05
    NON-ATOMIC    the interval's upper end < threshold (a gain that large is ruled out)
    INCONCLUSIVE  otherwise (too few prompts to tell)

The interval is Newcombe's score interval for a paired difference of proportions (built
from the two Wilson intervals and the pairs' correlation), not a percentile bootstrap: the
bootstrap collapses to [0, 0] when no prompt is discordant and is too narrow at small n,
so it would call 3 all-zero prompts NON-ATOMIC. The verdict is asymmetric on purpose:
ATOMIC needs both the interval and the exact test; NON-ATOMIC needs only the upper end, and
Wilson-based upper ends do not collapse (0 discordant of 200 still gives +1.9 points).

Prompting is the default because it needs no direction and no alpha: it measures whether the
capability is latent without using the key whose success atomicity is meant to predict.

    mkt analyze atomic --targets organism:target-base organism:target-nonatomic
    mkt analyze atomic --model DIR --pack PACK --task gsm8k.jsonl [--post-trained DIR]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import torch

from analyses._common import RunOptions, add_chat_argument, chat_formatted, pyplot, save_figure, write_outputs
from analyses.contract import Analysis
from mkt.cliargs import add_model_arguments, finite_float, positive_int
from mkt.eval.stats import mcnemar_exact, paired_difference_interval
from mkt.generation import generate
from mkt.steering import Steering

PROMPTING = "prompting (Unlocked template)"
TRANSFERRED = "key: transferred"
OWN = "key: the Target's own"
RANDOM = "control: random direction"
POST = "post-trained variant (training)"


@dataclass
class AtomicProbe:
    """One Target's probe. Every gain is paired (same prompts) against the baseline.

    Attributes:
        rates, gains, intervals, mcnemar_p: per condition (baseline excluded).
        alphas: the alpha each steered condition ran at (chosen on dev for organisms).
        key_vs_control: per key condition, the paired interval of its rate minus the random
            direction's: a key whose interval includes 0 did no more than any push.
        notes: what was not measured and why (e.g. no post-trained variant exists).
    """

    target: str
    metric: str
    n: int
    baseline: float
    rates: dict[str, float]
    gains: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    mcnemar_p: dict[str, float]
    alphas: dict[str, float]
    key_vs_control: dict[str, tuple[float, float]]
    primary: str
    threshold: float
    verdict: str
    post_trained: str | None = None
    notes: list[str] = field(default_factory=list)
    test_alpha_sweep: dict[str, dict[str, float]] = field(default_factory=dict)
    criterion: str = ("reads only the primary condition, fixed in advance: ATOMIC if its gain >= threshold, its "
                      "paired 95% Newcombe interval's lower end > 0 and McNemar p < 0.05; NON-ATOMIC if the upper end "
                      "< threshold; else INCONCLUSIVE")


def verdict(gain: float, interval: tuple[float, float], threshold: float, p_value: float) -> str:
    """The three-way verdict on the primary condition's gain, its 95% interval and McNemar p.

    Asymmetric: ATOMIC needs the interval above 0 AND the exact test (p < 0.05); NON-ATOMIC
    needs the interval's upper end below the threshold, which a score interval keeps away
    from 0 when nothing varies.
    """
    if gain >= threshold and interval[0] > 0 and p_value < 0.05:
        return "ATOMIC"
    if interval[1] < threshold:
        return "NON-ATOMIC"
    return "INCONCLUSIVE"


def probe(target_name: str, scores: dict[str, np.ndarray], primary: str = PROMPTING, threshold: float = 0.10,
          metric: str = "", alphas: dict[str, float] | None = None, post_trained: str | None = None,
          notes: list[str] = ()) -> AtomicProbe:
    """Paired gains of every condition over ``scores["baseline"]`` and the verdict on ``primary``.

    Args:
        scores: condition -> per-prompt 0/1 scores ``[n]``, all on the same prompts; must hold
            ``baseline`` and ``primary``. Key conditions (names starting ``key``) are also set
            against ``control: random direction`` when it is there.
    """
    if primary not in scores:
        raise ValueError(f"the primary condition {primary!r} was not run; run one of {sorted(scores)}")
    base = np.asarray(scores["baseline"], dtype=float)
    others = {name: np.asarray(s, dtype=float) for name, s in scores.items() if name != "baseline"}
    gains = {name: float(s.mean() - base.mean()) for name, s in others.items()}
    intervals = {name: paired_difference_interval(s, base) for name, s in others.items()}
    key_vs_control = {name: paired_difference_interval(s, others[RANDOM]) for name, s in others.items()
                      if name.startswith("key") and RANDOM in others}
    p = {n: mcnemar_exact(s.astype(bool).tolist(), base.astype(bool).tolist()) for n, s in others.items()}
    return AtomicProbe(
        target_name, metric, len(base), float(base.mean()), {n: float(s.mean()) for n, s in others.items()}, gains,
        intervals, p, dict(alphas or {}), key_vs_control, primary, threshold,
        verdict(gains[primary], intervals[primary], threshold, p[primary]), post_trained, list(notes))


def _scorer(model, steering_for: Callable, max_new_tokens: int = 40):
    """``score(prompts, score_one, key=None, alpha=0.0) -> [n]`` 0/1 scores of greedy generations."""
    def score(prompts: list[str], score_one: Callable[[int, str], bool], key=None, alpha: float = 0.0,
              on=None) -> np.ndarray:
        gens = generate(on or model, prompts, max_new_tokens, steering_for(key, alpha), batch_size=64)
        return np.array([score_one(i, g.text) for i, g in enumerate(gens)], dtype=float)

    return score


def _steering(key, alpha: float) -> Steering | None:
    return None if key is None else Steering(key.directions, alpha, hook=key.hook)  # at the key's own hook


def _post_trained(target, post_trained: str | None, notes: list[str]):
    """The Target's own post-trained variant, or None with a note saying none was measured."""
    from mkt.models import load_model, model_identity

    if post_trained is None:
        notes.append("no post-trained variant of this Target was given (--post-trained), so the training gain is "
                     "not measured; another model's (e.g. the Source's) would say nothing about this Target")
        return None
    post = load_model(post_trained, device="cpu")
    t, p = model_identity(target), model_identity(post)
    if (t.n_layers, t.d_model, t.d_vocab) != (p.n_layers, p.d_model, p.d_vocab):
        raise ValueError(f"--post-trained {post_trained} ({p.n_layers} layers x {p.d_model}) is not a variant of the "
                         f"Target ({t.n_layers} layers x {t.d_model}): give the Target's own post-trained model")
    return post


def probe_organism_target(target_name: str, n: int = 200, threshold: float = 0.10, metric: str = "clean_step_by_step",
                   post_trained: str | None = None, primary: str = PROMPTING,
                   alpha_grid=(0.1, 0.2, 0.5, 1.0), n_dev: int = 32) -> AtomicProbe:
    """The probe on an organism Target, for the organisms' step-by-step capability.

    Key alphas are chosen on ``n_dev`` dev prompts. When a key scores 0 on dev at every
    alpha there is nothing to choose by: its row runs at the smallest alpha, and the key is
    also scored on test at every alpha (``test_alpha_sweep``), whose largest gain is an
    upper bound chosen on test, reported as such, never as the row's estimate.
    The random-direction control gives every test prompt its own direction (the key's
    per-layer norms, the transferred key's alpha), so its rate averages over ``n`` draws.
    """
    from mkt.eval.organism_task import LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, problems, score_answer
    from mkt.extract import extract_prompt_key
    from mkt.models import load_model
    from mkt.organisms.keys import cached_organism_key

    target = load_model(target_name, device="cpu")
    test, dev = problems(n, "test"), problems(n_dev, "dev")
    notes: list[str] = []
    post = _post_trained(target, post_trained, notes)
    score = _scorer(target, _steering)

    def run(probs, cue: bool = False, **kw) -> np.ndarray:
        return score([p.prompt(cue) for p in probs], lambda i, text: getattr(score_answer(text, probs[i]), metric),
                     **kw)

    keys = {TRANSFERRED: cached_organism_key(target, target_name),
            OWN: extract_prompt_key(target, [p.question for p in problems(256, "train", 1)], LOCKED_TEMPLATE,
                                    UNLOCKED_TEMPLATE)}
    dev_rates = {name: {a: float(run(dev, key=key, alpha=a).mean()) for a in alpha_grid} for name, key in keys.items()}
    alphas = {name: choose_alpha(rates) for name, rates in dev_rates.items()}  # chosen on dev, never on test
    alphas[RANDOM] = alphas[TRANSFERRED]
    scores = {"baseline": run(test), PROMPTING: run(test, cue=True),
              **{name: run(test, key=key, alpha=alphas[name]) for name, key in keys.items()}}
    scores[RANDOM] = run(test, key=per_prompt_random(keys[TRANSFERRED], len(test)), alpha=alphas[RANDOM])
    sweep: dict[str, dict[str, float]] = {}
    for name, rates in dev_rates.items():
        if max(rates.values()) > 0:
            continue
        sweep[name] = {str(a): float((run(test, key=keys[name], alpha=a) if a != alphas[name] else scores[name]).mean()
                                     - scores["baseline"].mean()) for a in alpha_grid}
        best = max(sweep[name], key=sweep[name].get)
        notes.append(f"{name}: 0 on dev at every alpha {list(alpha_grid)}, so its row ran at the smallest; scored on "
                     f"test at every alpha, its largest gain is {sweep[name][best]:+.3f} (alpha {best}): an upper "
                     "bound chosen on test, not an estimate")
    if post is not None:
        scores[POST] = run(test, on=post)
    result = probe(target_name, scores, primary, threshold, metric, alphas, post_trained, notes)
    result.test_alpha_sweep = sweep
    return result


def per_prompt_random(key, n: int, seed: int = 1):
    """A key-like object whose directions are ``[n, layer, d]``: prompt i steered by its own random
    direction with the key's per-layer norms (``mkt.controls.isotropic_null``), at the key's hook."""
    from mkt.controls import isotropic_null

    return SimpleNamespace(directions=torch.stack([k.directions for k in isotropic_null(key, n, seed)]), hook=key.hook)


def choose_alpha(dev_rates: dict[float, float]) -> float:
    """The alpha with the highest dev rate; ties go to the smallest (the gentlest push)."""
    return max(dev_rates, key=lambda a: (dev_rates[a], -a))


def model_probe(options: AtomicOptions) -> AtomicProbe:
    """The probe on any model with a pack and a task file: baseline = the task's direct template,
    prompting = its step-by-step template, the pack's key, and the random-direction control."""
    from analyses._common import resolve
    from mkt.eval.tasks import build_prompts, extract_and_score, load_task, template_for

    if not options.task:
        raise ValueError(f"{options.model}: the atomic probe scores answers, so it needs --task FILE (GSM8K, MATH or "
                         "AGIEval-Math fields, as `mkt eval --task`)")
    model, key, alpha, _, _ = resolve(options)
    examples = load_task(options.task, options.kind, options.n)
    notes = ["the Target's own key is not extracted on a real model here: only the pack's key is probed"]
    post = _post_trained(model, options.post_trained, notes)
    score = _scorer(model, _steering, options.max_new_tokens)

    def correct(i: int, text: str) -> bool:
        return extract_and_score(examples[i].kind, text, examples[i].gold)[1]

    direct, cued = (chat_formatted(options, model.tokenizer, build_prompts(examples, template_for(examples[0].kind, t)))
                    for t in ("direct", "step_by_step"))
    scores = {"baseline": score(direct, correct), PROMPTING: score(cued, correct),
              TRANSFERRED: score(direct, correct, key, alpha),
              RANDOM: score(direct, correct, per_prompt_random(key, len(direct)), alpha)}
    if post is not None:
        scores[POST] = score(direct, correct, on=post)
    return probe(options.model, scores, options.primary, options.threshold, "correct", {TRANSFERRED: alpha, RANDOM: alpha},
                 options.post_trained, notes)


def plot_probes(probes: list[AtomicProbe], path: str | Path) -> None:
    plt = pyplot()

    names = list(dict.fromkeys(name for pr in probes for name in pr.gains))
    fig, ax = plt.subplots(figsize=(10, 4.4))
    width = 0.8 / len(probes)
    for i, pr in enumerate(probes):
        x = np.arange(len(names)) + (i - (len(probes) - 1) / 2) * width
        g = np.array([100 * pr.gains.get(n, np.nan) for n in names])
        lo = np.array([100 * pr.intervals[n][0] if n in pr.intervals else np.nan for n in names])
        hi = np.array([100 * pr.intervals[n][1] if n in pr.intervals else np.nan for n in names])
        bars = ax.bar(x, g, width, yerr=np.nan_to_num([g - lo, hi - g]), capsize=3,
                      label=f"{pr.target}: {pr.verdict} (baseline {100 * pr.baseline:.0f}%)")
        for b, n in zip(bars, names):  # the one condition the verdict reads
            if n == pr.primary:
                b.set_edgecolor("black")
                b.set_linewidth(1.5)
    ax.axhline(100 * probes[0].threshold, color="gray", ls="--", lw=1, label="threshold")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=12, ha="right", fontsize=8)
    ax.set_ylabel(f"gain over plain baseline (points of {probes[0].metric})")
    ax.set_title(f"Atomic vs non-atomic: gains with paired 95% Newcombe score intervals; the verdict reads only "
                 f"'{probes[0].primary}' (outlined)", fontsize=9)
    ax.legend(fontsize=8, loc="center right")
    save_figure(fig, path, dpi=120)


@dataclass(frozen=True)
class AtomicOptions(RunOptions):
    """The atomic probe's options (``add_arguments``): the organism Targets, or one model with a pack and a task."""

    targets: list[str]
    kind: str | None
    post_trained: str | None
    primary: str
    metric: str
    threshold: float
    max_new_tokens: int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--targets", nargs="+", default=["organism:target-base", "organism:target-nonatomic"],
                   help="organism Targets to probe (default: target-base and target-nonatomic)")
    p.add_argument("--model", default=None, help="a model to probe instead (hub name or local dir): needs --pack "
                   "and --task")
    p.add_argument("--pack", default=None, help="capability pack for --model (its key and alpha)")
    p.add_argument("--task", default=None, help="task file with answers for --model, as `mkt eval --task`")
    p.add_argument("--kind", choices=["gsm8k", "math", "agieval-math"], default=None, help="task format")
    p.add_argument("--post-trained", default=None,
                   help="the Target's own post-trained variant (same architecture and size) for the training gain; "
                   "none of the organism Targets has one, so by default none is measured")
    p.add_argument("--primary", default=PROMPTING,
                   help=f"the one condition the verdict reads, fixed in advance (default {PROMPTING!r}; e.g. "
                   f"{TRANSFERRED!r})")
    p.add_argument("--metric", choices=["clean_step_by_step", "correct"], default="clean_step_by_step",
                   help="the capability's measure on the organisms (default: clean step-by-step rate)")
    p.add_argument("--threshold", type=finite_float, default=0.10, help="gain that counts as elicited (default 0.10)")
    p.add_argument("--n", type=positive_int, default=200, help="test prompts (default 200)")
    p.add_argument("--alpha", type=finite_float, default=None, help="alpha for --model's key (default: the pack's)")
    p.add_argument("--max-new-tokens", type=positive_int, default=40, help="generation budget for --model (default 40)")
    add_model_arguments(p, batch_size=False)  # for --model
    add_chat_argument(p)
    p.add_argument("--prompts", default=None, help=argparse.SUPPRESS)  # resolve()'s field: prompts come from --task
    p.add_argument("--field", default="question", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="output directory (default runs/atomic)")


def run(options: AtomicOptions) -> list[AtomicProbe]:
    if options.chat and not (options.model and not str(options.model).startswith("organism:")):
        raise ValueError("--chat formats a chat model's prompts: pass --model (the organisms have no chat template)")
    if options.model and not str(options.model).startswith("organism:"):
        probes = [model_probe(options)]
    else:
        targets = [options.model] if options.model else options.targets
        probes = [probe_organism_target(t, options.n, options.threshold, options.metric, options.post_trained, options.primary)
                  for t in targets]
    out = write_outputs(probes, plot_probes, options.out or "runs/atomic", "atomic")
    for pr in probes:
        print(f"{pr.target}: {pr.verdict} on {pr.primary!r} (baseline {pr.baseline:.3f} {pr.metric}, n={pr.n}, "
              f"threshold {pr.threshold}; {pr.criterion})")
        for name, g in pr.gains.items():
            lo, hi = pr.intervals[name]
            extra = ""
            if name in pr.key_vs_control:
                c_lo, c_hi = pr.key_vs_control[name]
                extra = f"  vs random direction [{c_lo:+.3f}, {c_hi:+.3f}]"
            print(f"  {name:34s} gain {g:+.3f}  [{lo:+.3f}, {hi:+.3f}]  McNemar p={pr.mcnemar_p[name]:.2g}{extra}")
        for note in pr.notes:
            print(f"  note: {note}")
    print(f"wrote {out}/atomic.json and atomic.png")
    return probes


ANALYSIS = Analysis("atomic", __doc__, add_arguments, AtomicOptions, run)

if __name__ == "__main__":
    ANALYSIS.main()
