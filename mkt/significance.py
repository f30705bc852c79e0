"""Is a transferred key's effect real? The key against its nulls, under one procedure.

Every condition (the transferred key, each null draw, each control, each oracle) goes
through the same two steps, so that none gets a better chance than another:

1. its alpha is chosen on dev prompts: best rate of the first metric, then of the next
   ones, then the smaller alpha (all conditions x alphas x dev prompts in one batched
   generation, one direction set and one alpha per row);
2. it is scored on test prompts at that alpha.

Its *effect* is its test rate minus the unsteered baseline's on the same prompts. The
key's empirical p-value is the share of subspace-matched null draws whose effect reaches
the key's (``mkt.eval.stats.empirical_p_value``); gains over the baseline carry a paired
bootstrap interval and an exact McNemar test, since both score the same prompts.

    report = run_transfer(source, target, ...)                 # the paper's protocol
    sig = assess_transfer(target, report.source_key, report.alignment, dev, test)  # Probe: prompts + scorer
    print(sig.table())
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

import torch

from mkt.alignment import SubspaceAlignment, transfer
from mkt.controls import isotropic_null, subspace_matched_null
from mkt.engines import as_engine
from mkt.eval.stats import empirical_p_value, mcnemar_exact, paired_bootstrap_interval
from mkt.key import MasterKey
from mkt.models import RESID_HOOK
from mkt.steering import Steering

ALPHAS = (0.05, 0.1, 0.2, 0.5)  # the paper's grid
GROUPS = ("baseline", "method", "null", "control", "oracle")


@dataclass
class Probe:
    """Prompts and how to score what a model writes after them.

    ``score(texts)`` gets one generated text per prompt, in order, and returns, per metric
    name, one bool per prompt.
    """

    prompts: list[str]
    score: Callable[[list[str]], dict[str, list[bool]]]

    def __post_init__(self) -> None:
        if isinstance(self.prompts, str) or not self.prompts:
            raise ValueError("a Probe needs a non-empty list of prompts")


@dataclass
class Decoding:
    """How every condition generates: greedy, the same budget, stops and steering form."""

    max_new_tokens: int = 64
    stop: list[str] | None = None
    mode: str = "norm-preserving"
    scope: str = "prompt-last"
    layers: list[int] | None = None
    batch_size: int | None = None  # None: the largest batch that fits in memory (mkt.batch_size)
    hook: str = RESID_HOOK  # where every condition is written: the key's own hook point


@dataclass
class ScoredCondition:
    """One condition's alpha choice and per-prompt test scores."""

    name: str
    group: str
    alpha: float | None
    test: dict[str, list[bool]]
    dev: dict[float, dict[str, float]] = field(default_factory=dict)
    chosen: str | None = None  # for a search: the candidate chosen on dev

    def rate(self, metric: str) -> float:
        scores = self.test[metric]
        return sum(scores) / len(scores)


def _rates(scores: dict[str, list[bool]], metrics: Sequence[str]) -> dict[str, float]:
    return {m: sum(scores[m]) / len(scores[m]) for m in metrics}


def _score(probe: Probe, texts: list[str], metrics: Sequence[str]) -> dict[str, list[bool]]:
    scores = probe.score(texts)
    missing = [m for m in metrics if m not in scores]
    if missing:
        raise ValueError(f"the probe's scorer returned no {missing}: it returns {sorted(scores)}")
    return {m: [bool(x) for x in scores[m]] for m in metrics}


def _generate_rows(model, prompts: list[str], directions: torch.Tensor | None, alpha: torch.Tensor | None,
                   decoding: Decoding, progress: bool, sets: torch.Tensor | None = None) -> list[str]:
    steering = None
    if directions is not None:  # with ``sets``, each row's index into the table of directions
        steering = Steering(directions, alpha=alpha, mode=decoding.mode, layers=decoding.layers, scope=decoding.scope,
                            hook=decoding.hook, sets=sets)
    gens = as_engine(model).generate(prompts, decoding.max_new_tokens, steering, stop=decoding.stop,
                                     batch_size=decoding.batch_size, progress=progress)
    return [g.text for g in gens]


def evaluate_conditions(
    model,
    keys: dict[str, MasterKey],
    dev: Probe,
    test: Probe,
    metrics: Sequence[str],
    groups: dict[str, str] | None = None,
    alphas: Sequence[float] = ALPHAS,
    decoding: Decoding = Decoding(),
    progress: bool = False,
    searches: dict[str, dict[str, MasterKey]] | None = None,
) -> dict[str, ScoredCondition]:
    """Choose each key's alpha on ``dev`` and score it on ``test``, all in two batched generations.

    A *search* (``searches[name] = {candidate: key}``) is one condition whose key is also
    chosen on dev, among its candidates, by the same rule as alpha; only the winner is
    scored on test (``ScoredCondition.chosen`` names it).
    """
    searches = searches or {}
    if not keys and not searches:
        return {}
    if not alphas or any(not a > 0 for a in alphas):
        raise ValueError(f"alphas must be a non-empty list of positive numbers, got {list(alphas)}")
    dev_keys = dict(keys)
    for search, candidates in searches.items():
        if not candidates:
            raise ValueError(f"search {search!r} has no candidate keys")
        dev_keys.update({f"{search} :: {c}": k for c, k in candidates.items()})
    elsewhere = {name: k.hook for name, k in dev_keys.items() if k.hook != decoding.hook}
    if elsewhere:  # every condition is written at one hook point: a key read elsewhere would be misplaced
        raise ValueError(f"keys {sorted(elsewhere)} live at {sorted(set(elsewhere.values()))} but the conditions are "
                         f"steered at {decoding.hook}: give every key at one hook point (Decoding.hook)")
    for key in dev_keys.values():
        key.check_fits(model)
    names = list(dev_keys)
    stacked = torch.stack([dev_keys[n].directions.float() for n in names])  # [C, L, d]
    n_dev, n_alpha = len(dev.prompts), len(alphas)
    # dev: rows ordered (condition, alpha, prompt)
    cond_index = torch.arange(len(names)).repeat_interleave(n_alpha * n_dev)
    alpha = torch.tensor(list(alphas), dtype=torch.float32).repeat_interleave(n_dev).repeat(len(names))
    texts = _generate_rows(model, dev.prompts * (len(names) * n_alpha), stacked, alpha, decoding, progress,
                           sets=cond_index)

    def rank(curve: dict, a: float) -> tuple:  # the one selection rule: metrics in order, then the smaller alpha
        return (*(curve[a][m] for m in metrics), -a)

    curves = {}
    for c, name in enumerate(names):
        curves[name] = {}
        for a_i, a in enumerate(alphas):
            start = (c * n_alpha + a_i) * n_dev
            curves[name][float(a)] = _rates(_score(dev, texts[start : start + n_dev], metrics), metrics)
    entries = []  # (condition name, dev key name, alpha, chosen candidate)
    for name in keys:
        entries.append((name, name, max(curves[name], key=lambda a: rank(curves[name], a)), None))
    for search, candidates in searches.items():
        options = [(f"{search} :: {c}", c, a) for c in candidates for a in curves[f"{search} :: {c}"]]
        dev_name, candidate, a = max(options, key=lambda o: rank(curves[o[0]], o[2]))
        entries.append((search, dev_name, a, candidate))
    n_test = len(test.prompts)
    cond_index = torch.tensor([names.index(dev_name) for _, dev_name, _, _ in entries]).repeat_interleave(n_test)
    alpha = torch.tensor([a for _, _, a, _ in entries], dtype=torch.float32).repeat_interleave(n_test)
    texts = _generate_rows(model, test.prompts * len(entries), stacked, alpha, decoding, progress, sets=cond_index)
    groups = groups or {}
    return {
        name: ScoredCondition(name, groups.get(name, "method"), a, _score(test, texts[i * n_test : (i + 1) * n_test], metrics),
                        curves[dev_name], chosen)
        for i, (name, dev_name, a, chosen) in enumerate(entries)
    }


def evaluate_unsteered(model, probe: Probe, metrics: Sequence[str], name: str = "baseline",
                       decoding: Decoding = Decoding()) -> ScoredCondition:
    """A condition with no steering (the baseline, or a prompting ceiling on other prompts)."""
    texts = _generate_rows(model, probe.prompts, None, None, decoding, False)
    return ScoredCondition(name, "baseline", None, _score(probe, texts, metrics))


@dataclass
class TransferSignificance:
    """A transferred key, its subspace-matched null, its controls and oracles, on one test set.

    Attributes:
        metrics: scored metrics; the first one chose every alpha.
        baseline: the unsteered Target on the test prompts.
        conditions: every steered condition by name (group: method, null, control, oracle).
        key_name: the transferred key's condition.
        diagnostics: coverage, held-out alignment error, cosines with the own key.
    """

    metrics: tuple[str, ...]
    baseline: ScoredCondition
    conditions: dict[str, ScoredCondition]
    key_name: str
    diagnostics: dict = field(default_factory=dict)
    n_boot: int = 2000

    def names(self, group: str) -> list[str]:
        return [n for n, c in self.conditions.items() if c.group == group]

    def effect(self, name: str, metric: str) -> float:
        return self.conditions[name].rate(metric) - self.baseline.rate(metric)

    def null_effects(self, metric: str) -> list[float]:
        return [self.effect(n, metric) for n in self.names("null")]

    def p_value(self, name: str, metric: str) -> float:
        """Empirical one-sided p-value of ``name``'s effect against the subspace-matched null."""
        return empirical_p_value(self.effect(name, metric), self.null_effects(metric))

    def null_quantile(self, metric: str, q: float = 0.95) -> float:
        effects = torch.tensor(self.null_effects(metric), dtype=torch.float64)
        return float(torch.quantile(effects, q))

    def paired(self, name: str, metric: str, reference: str | None = None) -> dict:
        """Gain of ``name`` over ``reference`` (default the baseline) on the same prompts."""
        ref = self.baseline if reference is None else self.conditions[reference]
        a, b = self.conditions[name].test[metric], ref.test[metric]
        lo, hi = paired_bootstrap_interval(a, b, self.n_boot)
        return dict(gain=sum(a) / len(a) - sum(b) / len(b), ci95=[lo, hi], mcnemar_p=mcnemar_exact(a, b))

    def significant(self, metric: str | None = None, level: float = 0.05) -> bool:
        """The key's effect on ``metric`` (default the first) beats the subspace-matched null at ``level``.

        Only that null: the controls (a Source-free search, Source-free pipelines) are
        reported beside it and must be read too; a key can pass this and tie a control.
        """
        return self.p_value(self.key_name, metric or self.metrics[0]) < level

    def summary(self) -> dict:
        """Everything as JSON-ready numbers."""
        rows = {"baseline": dict(group="baseline", **_rates(self.baseline.test, self.metrics))}
        for name, c in self.conditions.items():
            row = dict(group=c.group, alpha=c.alpha, **{m: c.rate(m) for m in self.metrics})
            if c.chosen is not None:
                row["chosen"] = c.chosen
            if c.group != "null":
                for m in self.metrics:
                    row[f"{m}_effect"] = self.effect(name, m)
                    row[f"{m}_p_vs_null"] = self.p_value(name, m)
                    row[f"{m}_paired"] = self.paired(name, m)
                    if c.chosen is not None:  # a search: the key head to head with it
                        row[f"{m}_key_vs_this"] = self.paired(self.key_name, m, reference=name)
            rows[name] = row
        null = {m: dict(effects=self.null_effects(m), q95=self.null_quantile(m)) for m in self.metrics}
        return dict(metrics=list(self.metrics), key=self.key_name, n_test=len(self.baseline.test[self.metrics[0]]),
                    n_null=len(self.names("null")), significant={m: self.significant(m) for m in self.metrics},
                    rows=rows, null=null, diagnostics=self.diagnostics,
                    dev_curves={n: {str(a): r for a, r in c.dev.items()} for n, c in self.conditions.items()})

    def table(self) -> str:
        """A plain-text table: every non-null condition, then the null's spread."""
        head = f"  {'condition':46s} {'alpha':>5s}" + "".join(f" {m[:18]:>18s}" for m in self.metrics)
        lines = [head + "   p vs subspace-matched null (" + ", ".join(m[:8] for m in self.metrics) + ")"]
        lines.append(f"  {'baseline (no steering)':46s} {'':>5s}"
                     + "".join(f" {self.baseline.rate(m):18.1%}" for m in self.metrics))
        for name, c in self.conditions.items():
            if c.group == "null":
                continue
            cells = "".join(f" {c.rate(m):8.1%} ({self.effect(name, m):+6.1%})" for m in self.metrics)
            ps = ", ".join(f"{self.p_value(name, m):.3f}" for m in self.metrics)
            label = ("[oracle] " if c.group == "oracle" else "") + name + (f" [{c.chosen}]" if c.chosen else "")
            lines.append(f"  {label:46s} {c.alpha:5.2f}{cells}   {ps}")
        for m in self.metrics:
            paired = self.paired(self.key_name, m)
            lo, hi = paired["ci95"]
            lines.append(f"  transferred key vs baseline, {m}: gain {paired['gain']:+.1%} [{lo:+.1%}, {hi:+.1%}] "
                         f"(paired bootstrap 95%), McNemar p = {paired['mcnemar_p']:.2g}")
        for m in self.metrics:
            eff = self.null_effects(m)
            lines.append(f"  subspace-matched null, {len(eff)} draws, {m}: effect median {self.null_quantile(m, 0.5):+.1%}"
                         f", 95th pct {self.null_quantile(m):+.1%}, max {max(eff):+.1%}")
        for name in self.names("control"):
            if self.conditions[name].chosen is None:
                continue
            for m in self.metrics:  # a dev-chosen Source-free search, head to head with the key
                paired = self.paired(self.key_name, m, reference=name)
                lo, hi = paired["ci95"]
                lines.append(f"  transferred key vs {name}, {m}: {paired['gain']:+.1%} [{lo:+.1%}, {hi:+.1%}], "
                             f"McNemar p = {paired['mcnemar_p']:.2g}")
        return "\n".join(lines)


def assess_transfer(
    target,
    source_key: MasterKey,
    alignment: SubspaceAlignment,
    dev: Probe,
    test: Probe,
    metrics: Sequence[str] = ("correct",),
    n_null: int = 20,
    n_isotropic: int = 3,
    controls: dict[str, MasterKey] | None = None,
    searches: dict[str, dict[str, MasterKey]] | None = None,
    oracles: dict[str, MasterKey] | None = None,
    own_key: MasterKey | None = None,
    alphas: Sequence[float] = ALPHAS,
    decoding: Decoding = Decoding(),
    seed: int = 0,
    progress: bool = False,
) -> TransferSignificance:
    """Test the transfer of ``source_key`` through ``alignment`` against its nulls, in one call.

    Args:
        target: the Target (the alignment's Target): a bridge or an engine (``mkt.engines``).
        source_key, alignment: what ``run_transfer`` returns as ``report.source_key`` and
            ``report.alignment``; the transferred key is ``transfer(source_key, alignment)``.
        dev, test: disjoint probes; alphas are chosen on ``dev``, effects measured on ``test``.
        metrics: metric names of the probes' scorer; the first decides alpha and significance.
        n_null: subspace-matched null draws (>= 20 gives p-values down to 1/21).
        n_isotropic: isotropic random Target directions (a weak control, shown for contrast).
        controls: more keys that must NOT pass (a nuisance direction, a Source-free pipeline).
        searches: controls chosen on dev among candidate keys, e.g. the Target's own top
            principal directions (``mkt.controls.target_principal_keys``): a Source-free
            procedure the transfer must beat to show the Source added something.
        oracles: keys that look at the Target's own elicited capability; shown apart, never
            as the method.
        own_key: the Target's own key (prompt-induced), shown as an oracle; its per-layer
            cosine with the transferred key is reported as a diagnostic.
    """
    if n_null < 1:
        raise ValueError(f"n_null must be >= 1 (20 or more for a p-value below 0.05), got {n_null}")
    if set(dev.prompts) & set(test.prompts):
        raise ValueError("dev and test share prompts: alpha would be chosen on the prompts it is scored on")
    key_name = "transferred key"
    target_key = transfer(source_key, alignment)
    decoding = replace(decoding, hook=source_key.hook)  # the key, its nulls and controls at the key's hook point
    keys, groups = {key_name: target_key}, {key_name: "method"}
    for i, k in enumerate(subspace_matched_null(source_key, alignment, n_null, seed=seed + 1000)):
        keys[f"null {i}"], groups[f"null {i}"] = k, "null"
    for i, k in enumerate(isotropic_null(target_key, n_isotropic, seed=seed + 2000) if n_isotropic else []):
        keys[f"isotropic random {i}"], groups[f"isotropic random {i}"] = k, "control"
    for name, k in (controls or {}).items():
        keys[name], groups[name] = k, "control"
    oracles = dict(oracles or {})
    if own_key is not None:
        oracles = {"Target's own key": own_key, **oracles}
    for name, k in oracles.items():
        keys[name], groups[name] = k, "oracle"
    for name in searches or {}:
        groups[name] = "control"
    conditions = evaluate_conditions(target, keys, dev, test, metrics, groups, alphas, decoding, progress, searches)
    baseline = evaluate_unsteered(target, test, metrics, decoding=decoding)
    coverage = alignment.coverage(source_key.directions).tolist()
    diagnostics = dict(alignment.summary(), coverage=coverage, mean_coverage=sum(coverage) / len(coverage))
    if own_key is not None:
        diagnostics["cosine_with_own_key"] = target_key.cosine(own_key).tolist()
    return TransferSignificance(tuple(metrics), baseline, conditions, key_name, diagnostics)
