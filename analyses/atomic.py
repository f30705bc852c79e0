"""Atomic vs non-atomic probe: is a capability latent in a Target, ready to be unlocked?

For one capability and one Target, each route's gain over the Target's plain baseline,
scored on the same prompts, with a paired bootstrap interval and McNemar's p: prompting
(the Unlocked template), the transferred key, the Target's own key (organisms), a random
direction with the transferred key's norms at its alpha (the keys' null), and the
Target's own post-trained variant when one is given (the training gain; none is guessed).

The verdict reads ONE condition fixed in advance (``--primary``, default prompting), never
the best of several noisy ones:

    ATOMIC        gain >= threshold and the 95% interval's lower end > 0
    NON-ATOMIC    the interval's upper end < threshold (a gain that large is ruled out)
    INCONCLUSIVE  otherwise (too few prompts to tell)

Prompting is the default because it needs no direction and no alpha: it measures whether the
capability is latent without using the key whose success atomicity is meant to predict.

    mkt analyze atomic --targets organism:target-base organism:target-nonatomic
    mkt analyze atomic --model DIR --pack PACK --task gsm8k.jsonl [--post-trained DIR]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from analyses._common import command_line, pyplot, write_outputs
from mkt.eval.stats import mcnemar_exact, paired_bootstrap_interval
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
    criterion: str = ("reads only the primary condition, fixed in advance: ATOMIC if its gain >= threshold and its "
                      "paired 95% interval's lower end > 0; NON-ATOMIC if the upper end < threshold; else INCONCLUSIVE")


def verdict(gain: float, interval: tuple[float, float], threshold: float) -> str:
    """The three-way verdict on the primary condition's gain and its 95% interval."""
    if gain >= threshold and interval[0] > 0:
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
    intervals = {name: paired_bootstrap_interval(s, base) for name, s in others.items()}
    key_vs_control = {name: paired_bootstrap_interval(s, others[RANDOM]) for name, s in others.items()
                      if name.startswith("key") and RANDOM in others}
    return AtomicProbe(
        target_name, metric, len(base), float(base.mean()), {n: float(s.mean()) for n, s in others.items()}, gains,
        intervals, {n: mcnemar_exact(s.astype(bool).tolist(), base.astype(bool).tolist()) for n, s in others.items()},
        dict(alphas or {}), key_vs_control, primary, threshold, verdict(gains[primary], intervals[primary], threshold),
        post_trained, list(notes))


def _scorer(model, steering_for: Callable, max_new_tokens: int = 40):
    """``score(prompts, score_one, key=None, alpha=0.0) -> [n]`` 0/1 scores of greedy generations."""
    def score(prompts: list[str], score_one: Callable[[int, str], bool], key=None, alpha: float = 0.0,
              on=None) -> np.ndarray:
        gens = generate(on or model, prompts, max_new_tokens, steering_for(key, alpha), batch_size=64)
        return np.array([score_one(i, g.text) for i, g in enumerate(gens)], dtype=float)

    return score


def _steering(key, alpha: float) -> Steering | None:
    return None if key is None else Steering(key.directions, alpha)


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


def organism_probe(target_name: str, n: int = 200, threshold: float = 0.10, metric: str = "clean_step_by_step",
                   post_trained: str | None = None, primary: str = PROMPTING,
                   alpha_grid=(0.1, 0.2, 0.5, 1.0)) -> AtomicProbe:
    """The probe on an organism Target, for the organisms' step-by-step capability."""
    from analyses._common import organism_key
    from mkt.controls import isotropic_null
    from mkt.extract import extract_prompt_key
    from mkt.models import load_model
    from mkt.organisms.task import LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, problems, score_answer

    target = load_model(target_name, device="cpu")
    test, dev = problems(n, "test"), problems(64, "dev")
    notes: list[str] = []
    post = _post_trained(target, post_trained, notes)
    score = _scorer(target, _steering)

    def run(probs, cue: bool = False, **kw) -> np.ndarray:
        return score([p.prompt(cue) for p in probs], lambda i, text: getattr(score_answer(text, probs[i]), metric),
                     **kw)

    def best_alpha(key) -> float:  # chosen on dev, never on test
        return max(alpha_grid, key=lambda a: (run(dev, key=key, alpha=a).mean(), -a))

    keys = {TRANSFERRED: organism_key(target, target_name),
            OWN: extract_prompt_key(target, [p.question for p in problems(256, "train", 1)], LOCKED_TEMPLATE,
                                    UNLOCKED_TEMPLATE)}
    alphas = {name: best_alpha(key) for name, key in keys.items()}
    alphas[RANDOM] = alphas[TRANSFERRED]
    scores = {"baseline": run(test), PROMPTING: run(test, cue=True),
              **{name: run(test, key=key, alpha=alphas[name]) for name, key in keys.items()},
              RANDOM: run(test, key=isotropic_null(keys[TRANSFERRED], 1)[0], alpha=alphas[RANDOM])}
    if post is not None:
        scores[POST] = run(test, on=post)
    return probe(target_name, scores, primary, threshold, metric, alphas, post_trained, notes)


def model_probe(args) -> AtomicProbe:
    """The probe on any model with a pack and a task file: baseline = the task's direct template,
    prompting = its step-by-step template, the pack's key, and the random-direction control."""
    from analyses._common import resolve
    from mkt.controls import isotropic_null
    from mkt.eval.tasks import build_prompts, extract_and_score, load_task, template_for

    if not args.task:
        raise ValueError(f"{args.model}: the atomic probe scores answers, so it needs --task FILE (GSM8K, MATH or "
                         "AGIEval-Math fields, as `mkt eval --task`)")
    model, key, alpha, _, _ = resolve(args)
    examples = load_task(args.task, args.kind, args.n)
    notes = ["the Target's own key is not extracted on a real model here: only the pack's key is probed"]
    post = _post_trained(model, args.post_trained, notes)
    score = _scorer(model, _steering, args.max_new_tokens)

    def correct(i: int, text: str) -> bool:
        return extract_and_score(examples[i].kind, text, examples[i].gold)[1]

    direct, cued = (build_prompts(examples, template_for(examples[0].kind, t)) for t in ("direct", "step_by_step"))
    scores = {"baseline": score(direct, correct), PROMPTING: score(cued, correct),
              TRANSFERRED: score(direct, correct, key, alpha),
              RANDOM: score(direct, correct, isotropic_null(key, 1)[0], alpha)}
    if post is not None:
        scores[POST] = score(direct, correct, on=post)
    return probe(args.model, scores, args.primary, args.threshold, "correct", {TRANSFERRED: alpha, RANDOM: alpha},
                 args.post_trained, notes)


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
    ax.set_title(f"Atomic vs non-atomic: gains with paired 95% bootstrap intervals; the verdict reads only "
                 f"'{probes[0].primary}' (outlined)", fontsize=9)
    ax.legend(fontsize=8, loc="center right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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
    p.add_argument("--threshold", type=float, default=0.10, help="gain that counts as elicited (default 0.10)")
    p.add_argument("--n", type=int, default=200, help="test prompts (default 200)")
    p.add_argument("--alpha", type=float, default=None, help="alpha for --model's key (default: the pack's)")
    p.add_argument("--max-new-tokens", type=int, default=40, help="generation budget for --model (default 40)")
    p.add_argument("--device", default="cpu", help="device for --model (default cpu)")
    p.add_argument("--dtype", default="float32", help="dtype for --model (default float32)")
    p.add_argument("--prompts", default=None, help=argparse.SUPPRESS)  # resolve()'s field: prompts come from --task
    p.add_argument("--field", default="question", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="output directory (default runs/atomic)")


def run(args) -> list[AtomicProbe]:
    if args.model and not str(args.model).startswith("organism:"):
        probes = [model_probe(args)]
    else:
        targets = [args.model] if args.model else args.targets
        probes = [organism_probe(t, args.n, args.threshold, args.metric, args.post_trained, args.primary)
                  for t in targets]
    out = write_outputs(probes, plot_probes, args.out or "runs/atomic", "atomic")
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


main = command_line(__doc__, add_arguments, run)


if __name__ == "__main__":
    main()
