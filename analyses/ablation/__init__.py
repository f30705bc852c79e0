"""Per-layer ablation: which layers suffice for the key's effect, and is the key's direction necessary?

Three parts, each beside the null that would produce the same number if the effect were
not real; every steering, projection and patch acts at the key's own hook (``key.hook``):

- **Sufficiency**: the key at one layer, at layers <= l and at layers >= l, over a grid of
  alphas, beside a few random directions (descriptive); then at one layer at the alpha that
  makes the same KL divergence at the decision token as the key at all layers, beside
  non-key directions matched the same way: isotropic random ones, +/- the top principal
  directions of the Target's Locked-only states, and unembedding columns of other tokens.
  Those that never reach the target are counted as unmatched; against the matched ones the
  key's empirical p, ``(1 + #null >= key) / (1 + N)``.
- **Necessity**: the key's direction projected out at every layer (at the last prompt token,
  or at every position) from the Unlocked run (cue prompt, task template or a post-trained
  model) and from the steered Target: the share of the capability that survives, beside
  random directions and the top Locked principal directions projected out; the Locked run
  ablated the same way, and a mean ablation (h.u set to its Locked mean).
- **Activation patching**: the Unlocked run's state at one layer (last prompt token) written
  into the Locked run; beside the Locked state moved by a random vector of the same size
  (``||h_U - h_L||``). At the last layer the patch is the identity.

    mkt analyze ablation --model organism:target-family --metric logit_diff --tokens T rest
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from analyses._common import (
    UnlockedRunOptions,
    add_model_key_arguments,
    add_unlocked_arguments,
    resolve_run,
    write_outputs,
)
from analyses.ablation.metric import REST, Metric, decision_token_metric, token_pair_metric
from analyses.ablation.parts import AblationResult, layer_ablation
from analyses.ablation.report import plot_ablation, report
from analyses.contract import Analysis
from mkt.cliargs import finite_float, nonnegative_int, positive_int
from mkt.conditions import next_token_logprobs


@dataclass(frozen=True)
class AblationOptions(UnlockedRunOptions):
    """The ablation's options (``add_arguments``): the metric, the grids and the null families' sizes."""

    metric: str
    tokens: list[str] | None
    alphas: list[float]
    null_seeds: int
    matched_seeds: int
    pc_nulls: int
    unembed_nulls: int
    max_new_tokens: int


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_key_arguments(p)
    add_unlocked_arguments(p)
    p.add_argument("--metric", choices=["logit_diff", "accuracy", "step_by_step"], default="logit_diff",
                   help="logit difference at the decision token (one forward pass), or accuracy (organisms or "
                        "--task) / clean step-by-step rate (organisms) of greedy generations")
    p.add_argument("--tokens", nargs=2, default=None, metavar=("UNLOCKED", "LOCKED"),
                   help="tokens of the logit difference; LOCKED 'rest' gives the log-odds of UNLOCKED (default on "
                   "organisms: T rest; elsewhere each prompt's Unlocked vs Locked top next token)")
    p.add_argument("--alphas", type=finite_float, nargs="+", default=[0.1, 0.2, 0.5, 1.0], help="sufficiency alpha grid")
    p.add_argument("--null-seeds", type=positive_int, default=3,
                   help="random directions beside each cell of the sufficiency grid (default 3: descriptive)")
    p.add_argument("--matched-seeds", type=positive_int, default=50,
                   help="random directions of the KL-matched, necessity and patching nulls (default 50: at one layer "
                   "most cannot reach the KL target, and the key's p is bounded by how many do)")
    p.add_argument("--pc-nulls", type=nonnegative_int, default=3,
                   help="top principal directions of the Locked states used as nulls (+/- each when steering; default 3)")
    p.add_argument("--unembed-nulls", type=nonnegative_int, default=20,
                   help="unembedding columns of other tokens used as KL-matched nulls (default 20)")
    p.add_argument("--max-new-tokens", type=positive_int, default=40, help="budget of generation metrics")


def choose_metric(options: AblationOptions, run) -> Metric:
    """The metric the arguments ask for; answer-checking ones only where answers exist."""
    if options.metric != "logit_diff":
        scorers = run.scorers()
        if options.metric not in scorers:
            raise ValueError(f"--metric {options.metric} checks answers, which {options.model} with these prompts does not "
                             f"have ({sorted(scorers) or 'none'} available): use --task FILE or --metric logit_diff")
        return Metric(options.metric, score=scorers[options.metric], max_new_tokens=options.max_new_tokens)
    tokens = options.tokens or (["T", REST] if run.is_organism else None)
    if tokens:
        return token_pair_metric(run.model, len(run.prompts), *tokens)
    if not run.has_unlocked:
        raise ValueError("the logit difference needs --tokens A B or an Unlocked run whose top next token it contrasts "
                         "with the Locked run's (--unlocked-prompts, --unlocked-model or --task)")
    return decision_token_metric(next_token_logprobs(run.model, run.prompts), next_token_logprobs(*run.unlocked_run()))


def run(options: AblationOptions) -> AblationResult:
    r = resolve_run(options)
    metric = choose_metric(options, r)
    result = layer_ablation(r.model, r.prompts, r.key, metric, r.alpha, options.alphas, list(range(options.null_seeds)),
                            list(range(options.matched_seeds)), options.pc_nulls, options.unembed_nulls, r.unlocked_model,
                            r.unlocked_prompts, r.unlocked_label, model_name=options.model)
    out = write_outputs(result, plot_ablation, options.out or "runs/ablation", "ablation")
    print(report(result))
    print(f"wrote {out}/ablation.json and ablation.png")
    return result


ANALYSIS = Analysis("ablation", __doc__, add_arguments, AblationOptions, run)
