"""Atomic vs non-atomic probe: is a capability latent in a Target, ready to be unlocked?

For one capability and one Target, the gain over the Target's plain baseline from
(a) the transferred key, (b) the Target's own key, (c) prompting (the Unlocked template)
and (d) a post-trained model, each with a 95% interval. The verdict's criterion:

    ATOMIC      if max(gain from any key, gain from prompting) >= threshold
                (the capability can be elicited without training: it is latent);
    NON-ATOMIC  otherwise (only training could add it; the post-trained gain, when
                given, shows what is missing).

The threshold (default 10 points) is a decision, stated in every result; a gain counts
only if the lower end of its 95% interval is above zero as well.

    mkt analyze atomic --targets organism:target-base organism:target-nonatomic
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from analyses._common import command_line, pyplot, write_outputs
from mkt.eval.stats import difference_interval
from mkt.generation import generate
from mkt.steering import Steering


@dataclass
class AtomicProbe:
    target: str
    metric: str
    n: int
    baseline: float
    rates: dict[str, float]  # condition -> rate
    gains: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    threshold: float
    verdict: str
    criterion: str = field(default="atomic iff the best elicitation gain (any key or prompting) >= threshold "
                                   "and its 95% interval excludes 0")


def probe(target_name: str, rate: Callable[..., float], conditions: dict[str, dict], n: int,
          threshold: float = 0.10, metric: str = "") -> AtomicProbe:
    """Compare conditions against the plain baseline and give the verdict.

    Args:
        rate: ``rate(**condition) -> float`` evaluates one condition on the n prompts.
        conditions: name -> keyword arguments of ``rate``; must hold ``baseline``. Names
            starting with ``key`` or ``prompt`` count as elicitation (no training).
    """
    rates = {name: rate(**kw) for name, kw in conditions.items()}
    base = rates.pop("baseline")
    gains = {name: r - base for name, r in rates.items()}
    intervals = {name: difference_interval(r, base, n) for name, r in rates.items()}
    elicit = [name for name in gains if name.startswith(("key", "prompt"))]
    best = max(elicit, key=gains.get) if elicit else None
    atomic = best is not None and gains[best] >= threshold and intervals[best][0] > 0
    return AtomicProbe(target_name, metric, n, base, rates, gains, intervals, threshold,
                       "ATOMIC" if atomic else "NON-ATOMIC")


def organism_probe(target_name: str, n: int = 200, threshold: float = 0.10, metric: str = "clean_step_by_step",
                   post_trained: str | None = None, alpha_grid=(0.1, 0.2, 0.5, 1.0)) -> AtomicProbe:
    """The probe on an organism Target, for the step-by-step capability of the organisms."""
    from analyses._common import organism_key
    from mkt.extract import extract_prompt_key
    from mkt.models import load_model
    from mkt.organisms.task import (
        LOCKED_TEMPLATE,
        UNLOCKED_TEMPLATE,
        problems,
        score_answer,
    )

    target = load_model(target_name, device="cpu")
    test, dev = problems(n, "test"), problems(64, "dev")
    own = extract_prompt_key(target, [p.question for p in problems(256, "train", 1)], LOCKED_TEMPLATE,
                             UNLOCKED_TEMPLATE)
    transferred = organism_key(target, target_name)
    models = {"target": target}
    if post_trained:
        models["post"] = load_model(post_trained, device="cpu")

    def rate(model: str = "target", cue: bool = False, key=None, alpha: float = 0.0, probs=test) -> float:
        steering = Steering(key.directions, alpha) if key is not None else None
        gens = generate(models[model], [p.prompt(cue) for p in probs], 40, steering, batch_size=len(probs))
        return sum(getattr(score_answer(g.text, p), metric) for g, p in zip(gens, probs)) / len(probs)

    def best_alpha(key) -> float:  # chosen on dev, never on test
        return max(alpha_grid, key=lambda a: (rate(key=key, alpha=a, probs=dev), -a))

    conditions = {"baseline": {}, "prompting (Unlocked template)": dict(cue=True),
                  "key: transferred from source-base": dict(key=transferred, alpha=best_alpha(transferred)),
                  "key: the Target's own": dict(key=own, alpha=best_alpha(own))}
    if post_trained:
        conditions["post-trained model (training)"] = dict(model="post")
    return probe(target_name, rate, conditions, n, threshold, metric)


def plot_probes(probes: list[AtomicProbe], path: str | Path) -> None:
    plt = pyplot()
    import numpy as np

    names = list(probes[0].gains)
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(probes)
    for i, pr in enumerate(probes):
        x = np.arange(len(names)) + (i - (len(probes) - 1) / 2) * width
        g = np.array([100 * pr.gains.get(n, np.nan) for n in names])
        err = np.array([[100 * (pr.gains[n] - pr.intervals[n][0]) for n in names],
                        [100 * (pr.intervals[n][1] - pr.gains[n]) for n in names]])
        ax.bar(x, g, width, yerr=err, capsize=3, label=f"{pr.target}: {pr.verdict}")
    ax.axhline(100 * probes[0].threshold, color="gray", ls="--", lw=1, label="threshold")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(names)), names, rotation=15, ha="right", fontsize=8)
    ax.set_ylabel(f"gain over plain baseline (points of {probes[0].metric})")
    ax.set_title("Atomic vs non-atomic: what elicits the capability in each Target (95% intervals)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--targets", nargs="+", default=["organism:target-base", "organism:target-nonatomic"],
                   help="organism Targets to probe (default: target-base and target-nonatomic)")
    p.add_argument("--post-trained", default="organism:source-post",
                   help="post-trained model for the training gain (default organism:source-post)")
    p.add_argument("--metric", choices=["clean_step_by_step", "correct"], default="clean_step_by_step",
                   help="the capability's measure (default: clean step-by-step rate)")
    p.add_argument("--threshold", type=float, default=0.10, help="gain that counts as elicited (default 0.10)")
    p.add_argument("--n", type=int, default=200, help="test prompts (default 200)")
    p.add_argument("--out", default=None, help="output directory (default runs/atomic)")


def run(args) -> list[AtomicProbe]:
    probes = [organism_probe(t, args.n, args.threshold, args.metric, args.post_trained) for t in args.targets]
    out = write_outputs(probes, plot_probes, args.out or "runs/atomic", "atomic")
    for pr in probes:
        print(f"{pr.target}: {pr.verdict} (baseline {pr.baseline:.3f} {pr.metric}; criterion: {pr.criterion}, "
              f"threshold {pr.threshold})")
        for name, g in pr.gains.items():
            lo, hi = pr.intervals[name]
            print(f"  {name:38s} gain {g:+.3f}  [{lo:+.3f}, {hi:+.3f}]")
    print(f"wrote {out}/atomic.json and atomic.png")
    return probes


main = command_line(__doc__, add_arguments, run)


if __name__ == "__main__":
    main()
