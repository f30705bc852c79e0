"""The numbers of an assessment: each condition's scores, effects, p-values against the null, the table.

Pure arithmetic over per-prompt scores (no model): a condition's *effect* is its test rate
minus the unsteered baseline's on the same prompts; the key's empirical p-value is the share
of subspace-matched null draws whose effect reaches its own (``mkt.eval.stats.empirical_p_value``),
so with N draws no p-value is below 1/(N+1), the *p-value floor*, and a p at the floor says
only that the key beat every draw. Gains between two conditions carry a paired bootstrap
interval and an exact McNemar test, since both score the same prompts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mkt.eval.stats import empirical_p_value, mcnemar_exact, paired_bootstrap_interval

BASELINE = "baseline"
CUE = "cue ceiling"


@dataclass
class ScoredCondition:
    """One condition's alpha choice and per-prompt test scores.

    Attributes:
        group: baseline, ceiling (the cue prompt, unsteered), method, null, control or oracle.
        alpha: the strength chosen on dev (None for an unsteered condition).
        test: per metric, one score per test prompt.
        dev: per alpha, the dev rate of each metric (the curve alpha was chosen on).
        chosen: for a search, the candidate chosen on dev.
    """

    name: str
    group: str
    alpha: float | None
    test: dict[str, list[bool]]
    dev: dict[float, dict[str, float]] = field(default_factory=dict)
    chosen: str | None = None

    def rate(self, metric: str) -> float:
        scores = self.test[metric]
        return sum(scores) / len(scores)


def p_value_floor(n_null: int) -> float:
    """The smallest empirical p-value N null draws can give: 1/(N+1)."""
    return 1 / (n_null + 1)


def format_p_value(p: float, n_null: int) -> str:
    """``p`` to 3 decimals, or ``<=1/(N+1)`` (as a number) where it is at the floor of N draws."""
    floor = p_value_floor(n_null)
    return f"<={floor:.3f}" if p <= floor * (1 + 1e-9) else f"{p:.3f}"


@dataclass
class TransferSignificance:
    """A transferred key, its subspace-matched null, its controls and oracles, on one test set.

    Attributes:
        metrics: scored metrics; the first one chose every alpha.
        baseline: the unsteered Target on the test prompts.
        conditions: every steered condition by name (group: method, null, control, oracle).
        key_name: the transferred key's condition.
        cue: the unsteered Target on the same test questions in the Unlocked format (the
            prompting ceiling the transfer is compared with), when given.
        diagnostics: coverage, held-out alignment error, cosines with the own key.
    """

    metrics: tuple[str, ...]
    baseline: ScoredCondition
    conditions: dict[str, ScoredCondition]
    key_name: str
    cue: ScoredCondition | None = None
    diagnostics: dict = field(default_factory=dict)
    n_boot: int = 2000

    def names(self, group: str) -> list[str]:
        return [n for n, c in self.conditions.items() if c.group == group]

    def _condition(self, name: str) -> ScoredCondition:
        if name == BASELINE:
            return self.baseline
        if name == CUE and self.cue is not None:
            return self.cue
        return self.conditions[name]

    def effect(self, name: str, metric: str) -> float:
        return self._condition(name).rate(metric) - self.baseline.rate(metric)

    def null_effects(self, metric: str) -> list[float]:
        return [self.effect(n, metric) for n in self.names("null")]

    def p_value(self, name: str, metric: str) -> float:
        """Empirical one-sided p-value of ``name``'s effect against the subspace-matched null."""
        return empirical_p_value(self.effect(name, metric), self.null_effects(metric))

    @property
    def p_floor(self) -> float:
        """1/(N+1) for N null draws: no p-value here is smaller."""
        return p_value_floor(len(self.names("null")))

    def null_quantile(self, metric: str, q: float = 0.95) -> float:
        effects = torch.tensor(self.null_effects(metric), dtype=torch.float64)
        return float(torch.quantile(effects, q))

    def paired(self, name: str, metric: str, reference: str = BASELINE) -> dict:
        """Gain of ``name`` over ``reference`` (a condition, the baseline or the cue ceiling) on the same prompts."""
        a, b = self._condition(name).test[metric], self._condition(reference).test[metric]
        lo, hi = paired_bootstrap_interval(a, b, self.n_boot)
        return dict(gain=sum(a) / len(a) - sum(b) / len(b), ci95=[lo, hi], mcnemar_p=mcnemar_exact(a, b))

    def significant(self, metric: str | None = None, level: float = 0.05) -> bool:
        """The key's effect on ``metric`` (default the first) beats the subspace-matched null at ``level``.

        Only that null: the controls (a Source-free search, Source-free pipelines) are
        reported beside it and must be read too; a key can pass this and tie a control.
        """
        return self.p_value(self.key_name, metric or self.metrics[0]) < level

    def summary(self) -> dict:
        """Everything as JSON-ready numbers (``p_floor``: 1/(N+1), the smallest p-value N draws can give)."""
        rows = {BASELINE: dict(group="baseline", **{m: self.baseline.rate(m) for m in self.metrics})}
        if self.cue is not None:
            rows[CUE] = dict(group="ceiling", **{m: self.cue.rate(m) for m in self.metrics})
            for m in self.metrics:
                rows[CUE][f"{m}_effect"] = self.effect(CUE, m)
                rows[CUE][f"{m}_paired"] = self.paired(CUE, m)
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
                    if name == self.key_name and self.cue is not None:  # how far toward the prompting ceiling
                        row[f"{m}_vs_cue"] = self.paired(name, m, reference=CUE)
            rows[name] = row
        null = {m: dict(effects=self.null_effects(m), q95=self.null_quantile(m)) for m in self.metrics}
        return dict(metrics=list(self.metrics), key=self.key_name, n_test=len(self.baseline.test[self.metrics[0]]),
                    n_null=len(self.names("null")), p_floor=self.p_floor,
                    significant={m: self.significant(m) for m in self.metrics},
                    rows=rows, null=null, diagnostics=self.diagnostics,
                    dev_curves={n: {str(a): r for a, r in c.dev.items()} for n, c in self.conditions.items()})

    def _paired_line(self, name: str, metric: str, reference: str, label: str) -> str:
        paired = self.paired(name, metric, reference)
        lo, hi = paired["ci95"]
        return (f"  {label}, {metric}: gain {paired['gain']:+.1%} [{lo:+.1%}, {hi:+.1%}] (paired bootstrap 95%), "
                f"McNemar p = {paired['mcnemar_p']:.2g}")

    def table(self) -> str:
        """A plain-text table: baseline and cue, every non-null condition, then the null's spread."""
        n_null = len(self.names("null"))
        lines = [f"  p vs the subspace-matched null of N = {n_null} draws: p >= 1/(N+1) = {self.p_floor:.3f}; "
                 f"'<={self.p_floor:.3f}' means it beat every draw (more draws resolve smaller p)"]
        lines.append(f"  {'condition':46s} {'alpha':>5s}" + "".join(f" {m[:18]:>18s}" for m in self.metrics)
                     + "   p vs subspace-matched null (" + ", ".join(m[:8] for m in self.metrics) + ")")
        lines.append(f"  {'baseline (no steering)':46s} {'':>5s}"
                     + "".join(f" {self.baseline.rate(m):18.1%}" for m in self.metrics))
        if self.cue is not None:
            lines.append(f"  {'cue prompt, no steering (ceiling)':46s} {'':>5s}"
                         + "".join(f" {self.cue.rate(m):8.1%} ({self.effect(CUE, m):+6.1%})" for m in self.metrics))
        for name, c in self.conditions.items():
            if c.group == "null":
                continue
            cells = "".join(f" {c.rate(m):8.1%} ({self.effect(name, m):+6.1%})" for m in self.metrics)
            ps = ", ".join(format_p_value(self.p_value(name, m), n_null) for m in self.metrics)
            label = ("[oracle] " if c.group == "oracle" else "") + name + (f" [{c.chosen}]" if c.chosen else "")
            lines.append(f"  {label:46s} {c.alpha:5.2f}{cells}   {ps}")
        lines += [self._paired_line(self.key_name, m, BASELINE, "transferred key vs baseline") for m in self.metrics]
        if self.cue is not None:
            lines += [self._paired_line(self.key_name, m, CUE, "transferred key vs cue ceiling") for m in self.metrics]
        for m in self.metrics:
            eff = self.null_effects(m)
            lines.append(f"  subspace-matched null, {len(eff)} draws, {m}: effect median "
                         f"{self.null_quantile(m, 0.5):+.1%}, 95th pct {self.null_quantile(m):+.1%}, max {max(eff):+.1%}")
        for name in self.names("control"):
            if self.conditions[name].chosen is not None:  # a dev-chosen Source-free search, head to head with the key
                lines += [self._paired_line(self.key_name, m, name, f"transferred key vs {name}") for m in self.metrics]
        return "\n".join(lines)
