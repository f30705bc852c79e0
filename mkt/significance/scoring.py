"""Each condition's alpha chosen on dev and its scores on test, under one procedure.

Every condition (a key, each null draw, each control, each oracle) goes through the same two
steps, so that none gets a better chance than another:

1. its alpha is chosen on dev prompts: best rate of the first metric, then of the next ones,
   then the smaller alpha (a *search* chooses among its candidate keys by the same rule);
2. it is scored on test prompts at that alpha.

A condition's dev grid (every alpha x every dev prompt, one :class:`~mkt.battery.Battery`)
and its test prompts at the chosen alpha are each one *unit*, generated in a call of its own:
its texts then never depend on which other conditions ran beside it (left padding and batch
shape can move a greedy near-tie), so a unit read back from a run directory
(:mod:`mkt.significance.store`) is exactly what generating it again would give, and an
assessment resumed after an interruption, or sharing a Target's units with another pair,
equals an uninterrupted one. A progress bar counts the rows still to generate, names the
stage and condition in hand and gives an ETA.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mkt.battery import Battery
from mkt.engines import Engine, as_engine
from mkt.key import MasterKey
from mkt.models import RESID_HOOK
from mkt.significance.report import ScoredCondition
from mkt.significance.store import GenerationStore, open_store, unit_key

ALPHAS = (0.05, 0.1, 0.2, 0.5)  # the paper's grid


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


def _rates(scores: dict[str, list[bool]], metrics: Sequence[str]) -> dict[str, float]:
    return {m: sum(scores[m]) / len(scores[m]) for m in metrics}


def _score(probe: Probe, texts: list[str], metrics: Sequence[str]) -> dict[str, list[bool]]:
    scores = probe.score(texts)
    missing = [m for m in metrics if m not in scores]
    if missing:
        raise ValueError(f"the probe's scorer returned no {missing}: it returns {sorted(scores)}")
    return {m: [bool(x) for x in scores[m]] for m in metrics}


@dataclass(frozen=True)
class _Unit:
    """One generation call: a condition's ``directions`` at each of ``alphas`` (none: unsteered) on ``prompts``."""

    stage: str
    condition: str
    prompts: list[str]
    directions: Float[Tensor, "layer d"] | None = None
    alphas: tuple[float, ...] = ()

    @property
    def rows(self) -> int:
        return len(self.prompts) * max(1, len(self.alphas))

    def battery(self) -> Battery | None:
        if self.directions is None:
            return None
        return Battery({self.condition: self.directions.float()}, [(self.condition, a) for a in self.alphas],
                       self.prompts)


class _Generations:
    """Runs units on one engine, reading finished ones from a store, counting rows on a progress bar."""

    def __init__(self, engine: Engine, decoding: Decoding, store: GenerationStore | None, bar: tqdm) -> None:
        self.engine, self.decoding, self.store, self.bar = engine, decoding, store, bar
        self.context = None if store is None else dict(model=engine.identity.to_dict(), weights=engine.weights_digest(),
                                                       engine=engine.name, decoding=asdict(decoding))

    def _key(self, unit: _Unit) -> str | None:
        return None if self.store is None else unit_key(self.context, unit.prompts, unit.alphas, unit.directions)

    def _stored(self, unit: _Unit) -> list[str] | None:
        key = self._key(unit)
        return None if key is None else self.store.get(key, unit.rows)

    def pending(self, units: Sequence[_Unit]) -> int:
        """The rows of ``units`` that no earlier run finished."""
        return sum(u.rows for u in units if self._stored(u) is None)

    def run(self, unit: _Unit) -> list[list[str]]:
        """Per alpha of ``unit`` (one list when unsteered), its texts in prompt order."""
        battery = unit.battery()
        texts = self._stored(unit)
        if texts is None:
            self.bar.set_description_str(f"{unit.stage}: {unit.condition}")
            d = self.decoding
            steering = battery.steering(d.mode, d.layers, d.scope, d.hook) if battery is not None else None
            gens = self.engine.generate(battery.prompts if battery is not None else unit.prompts, d.max_new_tokens,
                                        steering, stop=d.stop, batch_size=d.batch_size)
            texts = [g.text for g in gens]
            if self.store is not None:
                self.store.put(self._key(unit), unit.condition, texts)
            self.bar.update(len(texts))
        if battery is None:
            return [texts]
        by_cell = battery.split(texts)
        return [by_cell[(unit.condition, float(a))] for a in unit.alphas]


@contextmanager
def _generations(model, decoding: Decoding, run_dir: str | Path | None, progress: bool) -> Iterator[_Generations]:
    with open_store(run_dir) as store, tqdm(total=0, unit="row", desc="assess", disable=not progress) as bar:
        yield _Generations(as_engine(model), decoding, store, bar)


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
    unsteered: dict[str, Probe] | None = None,
    run_dir: str | Path | None = None,
) -> dict[str, ScoredCondition]:
    """Choose each key's alpha on ``dev`` and score it on ``test``, one unit of generation per condition and split.

    Args:
        model: a bridge or an engine (``mkt.engines``).
        keys: the steered conditions by name.
        dev, test: disjoint probes: alpha is chosen on ``dev``, scores are measured on ``test``.
        metrics: metric names of the probes' scorer; the first decides alpha first.
        groups: each condition's group (default ``method``; unsteered ones ``baseline``).
        searches: ``{name: {candidate: key}}``: one condition whose key is also chosen on dev,
            among its candidates, by the same rule as alpha; only the winner is scored on test
            (``ScoredCondition.chosen`` names it).
        unsteered: conditions with no steering, each on its own probe (the baseline on
            ``test``; the cue prompt on the test questions in the Unlocked format).
        run_dir: a directory that keeps every finished unit (:mod:`mkt.significance.store`):
            a rerun reads them back instead of generating them again.
        progress: a progress bar over the rows to generate, with the stage and an ETA.
    """
    searches, unsteered = searches or {}, unsteered or {}
    if not keys and not searches and not unsteered:
        return {}
    if not alphas or any(not a > 0 for a in alphas) or len(set(alphas)) != len(alphas):
        raise ValueError(f"alphas must be a non-empty list of distinct positive numbers, got {list(alphas)}")
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
    groups = groups or {}
    alphas = tuple(float(a) for a in alphas)
    n_test = len(test.prompts)
    plain = [_Unit("unsteered", name, probe.prompts) for name, probe in unsteered.items()]
    dev_units = [_Unit("dev", name, dev.prompts, k.directions, alphas) for name, k in dev_keys.items()]
    with _generations(model, decoding, run_dir, progress) as runs:
        # test units are counted as to do until their alpha is chosen (then the bar's total is exact)
        runs.bar.total = runs.pending(plain) + runs.pending(dev_units) + (len(keys) + len(searches)) * n_test
        scored = {u.condition: ScoredCondition(u.condition, groups.get(u.condition, "baseline"), None,
                                               _score(unsteered[u.condition], runs.run(u)[0], metrics))
                  for u in plain}

        curves = {}
        for unit in dev_units:
            curves[unit.condition] = {a: _rates(_score(dev, texts, metrics), metrics)
                                      for a, texts in zip(alphas, runs.run(unit))}

        def rank(curve: dict, a: float) -> tuple:  # the one selection rule: metrics in order, then the smaller alpha
            return (*(curve[a][m] for m in metrics), -a)

        entries = [(name, name, max(alphas, key=lambda a: rank(curves[name], a)), None) for name in keys]
        for search, candidates in searches.items():  # (condition, dev key name, alpha, chosen candidate)
            options = [(f"{search} :: {c}", c, a) for c in candidates for a in alphas]
            dev_name, candidate, a = max(options, key=lambda o: rank(curves[o[0]], o[2]))
            entries.append((search, dev_name, a, candidate))
        test_units = [_Unit("test", name, test.prompts, dev_keys[dev_name].directions, (a,))
                      for name, dev_name, a, _ in entries]
        runs.bar.total = runs.bar.n + runs.pending(test_units)
        runs.bar.refresh()
        for (name, dev_name, a, chosen), unit in zip(entries, test_units):
            scored[name] = ScoredCondition(name, groups.get(name, "method"), a,
                                           _score(test, runs.run(unit)[0], metrics), curves[dev_name], chosen)
    return scored
