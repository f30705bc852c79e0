"""The ablation's metric: a logit difference at the decision token or an answer-checking rate, its KL and
survival, and the bisection that matches a KL."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from mkt.conditions import (
    Condition,
    PrefixCache,
    next_token_logprobs,
    no_condition,
)
from mkt.generation import generate
from mkt.models import single_token_id

REST = "rest"  # as token_b: every other token, i.e. the log-odds of token_a


def kl_divergence(logp: Float[Tensor, "... vocab"], logq: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """KL(p || q) in nats from log-probabilities."""
    return (logp.exp() * (logp - logq)).sum(-1)


def decision_metric(logp: Float[Tensor, "n vocab"], a: Int[Tensor, "n"], b: Int[Tensor, "n"] | None
                    ) -> Float[Tensor, "n"]:
    """logit(a) - logit(b) per row (equal to the log-probability difference); with ``b`` None the
    log-odds of ``a``, ``log p - log(1 - p)``."""
    la = logp.gather(-1, a[:, None])[:, 0]
    if b is None:
        return la - torch.log(-torch.expm1(la))
    return la - logp.gather(-1, b[:, None])[:, 0]


def survival(ablated: float, locked: float, unlocked: float) -> float:
    """The share of the Locked -> Unlocked change that is left after an ablation: 1 nothing lost, 0 all lost."""
    return (ablated - locked) / (unlocked - locked) if unlocked != locked else float("nan")


def bisect_increasing(f: Callable[[np.ndarray, np.ndarray], np.ndarray], target: float, lo: float, hi: float,
                      n: int = 1, steps: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """For ``n`` functions at once, the evaluated point whose value is closest to ``target``: (x[n], f(x)[n]).

    ``f(x, idx)`` evaluates function ``idx[i]`` at ``x[i]``. Each is bisected in log x on
    [lo, hi] as if increasing; a function whose target lies outside [f(lo), f(hi)] is not
    bisected (``hi`` or ``lo`` is returned, and comparing f(x) with the target tells the
    caller it is out of reach). A non-monotone function can make bisection miss a closer
    point; what is returned is always the closest point *evaluated*, never an unevaluated
    midpoint.
    """
    xs: list[list[float]] = [[] for _ in range(n)]
    fs: list[list[float]] = [[] for _ in range(n)]

    def evaluate(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        fx = np.asarray(f(x, idx), dtype=float)
        for i, a, b in zip(idx, x, fx):
            xs[i].append(float(a))
            fs[i].append(float(b))
        return fx

    idx = np.arange(n)
    idx = idx[evaluate(np.full(n, hi, dtype=float), idx) > target]
    if idx.size:
        idx = idx[evaluate(np.full(idx.size, lo, dtype=float), idx) < target]
    log_lo, log_hi = np.full(idx.size, np.log(lo)), np.full(idx.size, np.log(hi))
    for _ in range(steps if idx.size else 0):
        mid = (log_lo + log_hi) / 2
        below = evaluate(np.exp(mid), idx) < target
        log_lo, log_hi = np.where(below, mid, log_lo), np.where(below, log_hi, mid)
    best = [int(np.argmin(np.abs(np.array(fs[i]) - target))) for i in range(n)]
    return np.array([xs[i][b] for i, b in enumerate(best)]), np.array([fs[i][b] for i, b in enumerate(best)])


def variance_share(states: Float[Tensor, "n layer d"], directions: Float[Tensor, "layer d"]) -> Float[Tensor, "layer"]:
    """The share of each layer's total variance (over the n rows) that lies along ``directions[layer]``."""
    x = states.double() - states.double().mean(0)
    u = directions.double() / directions.double().norm(dim=-1, keepdim=True)
    return ((x * u).sum(-1).pow(2).sum(0) / x.pow(2).sum((0, 2))).float()




@dataclass
class Metric:
    """A capability score of a model on prompts under a condition.

    ``a``/``b`` set: the mean ``decision_metric`` at the decision token (one forward pass);
    ``score`` set: the mean ``score(prompt_index, text)`` over greedy generations. A logit
    metric keeps its prompts' prefixes cached (``PrefixCache``): conditions that edit only the
    last prompt token then run that token alone.
    """

    name: str
    a: Int[Tensor, "n"] | None = None
    b: Int[Tensor, "n"] | None = None
    score: Callable[[int, str], float] | None = None
    max_new_tokens: int = 40
    batch_size: int = 128
    prefixes: PrefixCache = field(default_factory=PrefixCache, repr=False)

    def logprobs(self, model, prompts: list[str], condition: Condition = no_condition, repeat: int = 1) -> Tensor:
        """``next_token_logprobs`` of ``prompts * repeat`` over this metric's prefix cache."""
        return next_token_logprobs(model, prompts, condition, self.batch_size, repeat, self.prefixes)

    def __call__(self, model, prompts: list[str], condition: Condition = no_condition) -> float:
        if self.score is None:
            return decision_metric(self.logprobs(model, prompts, condition), self.a, self.b).mean().item()
        texts = []
        for start in range(0, len(prompts), self.batch_size):
            rows = slice(start, min(start + self.batch_size, len(prompts)))
            with condition(model, rows):
                texts += [g.text for g in generate(model, prompts[rows], self.max_new_tokens,
                                                   batch_size=self.batch_size)]
        return float(np.mean([self.score(i, t) for i, t in enumerate(texts)]))

    def per_row_set(self, model, prompts: list[str], make: Callable[[Tensor, slice], Condition], sets: Tensor,
                    clean: Tensor | None = None, rows_per_call: int = 1024, per_prompt: bool = False,
                    values: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(metric, KL at the decision token against ``clean``) for each of ``sets`` (first axis: one per condition).

        ``make(per_row, which)`` builds the condition from a tensor whose first axis runs over
        prompt rows, for the sets ``sets[which]``; the prompts are repeated once per set so that a logit metric evaluates several
        sets in one forward pass. A generation metric is run set by set. The KL is NaN
        without ``clean``. ``per_prompt``: each set already holds one row per prompt
        (``[m, n, ...]``) instead of one value for all prompts. ``values=False``: the KL only
        (the metric is NaN; no generations).
        """
        m, n = sets.shape[0], len(prompts)
        want_values = values
        values, kls = np.full(m, np.nan), np.full(m, np.nan)
        group = max(1, rows_per_call // n)
        for g in range(0, m, group):
            chunk = sets[g : g + group]
            k = chunk.shape[0]
            per_row = chunk.flatten(0, 1) if per_prompt else chunk.repeat_interleave(n, dim=0)
            logp = self.logprobs(model, prompts, make(per_row, slice(g, g + k)), repeat=k)
            if clean is not None:
                kls[g : g + k] = kl_divergence(clean.repeat(k, 1), logp).view(k, n).mean(1).numpy()
            if not want_values:
                continue
            if self.score is None:
                values[g : g + k] = decision_metric(logp, self.a.repeat(k), None if self.b is None else self.b.repeat(k)
                                                    ).view(k, n).mean(1).numpy()
            else:
                # one set at a time: per prompt ([n, ...]) or one for all rows, never expanded per row, since
                # generation drops finished rows from the batch and a per-row tensor would no longer line up
                values[g : g + k] = [self(model, prompts, make(chunk[i], slice(g + i, g + i + 1))) for i in range(k)]
        return values, kls


def token_pair_metric(model, n: int, token_a: str, token_b: str) -> Metric:
    """logit(token_a) - logit(token_b) for every prompt, or the log-odds of token_a with ``token_b="rest"``."""
    a = torch.full((n,), single_token_id(model, token_a))
    b = None if token_b == REST else torch.full((n,), single_token_id(model, token_b))
    name = f"log-odds of {token_a!r}" if b is None else f"logit({token_a!r}) - logit({token_b!r})"
    return Metric(name, a, b)


def decision_token_metric(locked_logp: Float[Tensor, "n vocab"], unlocked_logp: Float[Tensor, "n vocab"]) -> Metric:
    """Per prompt, logit(the Unlocked run's top next token) - logit(the Locked run's): needs no answers.

    Prompts where both runs pick the same token score 0 under every condition (they dilute
    the mean but not a survival ratio).
    """
    a, b = unlocked_logp.argmax(-1), locked_logp.argmax(-1)
    differ = int((a != b).sum())
    if differ == 0:
        raise ValueError("the Unlocked run picks the Locked run's next token on every prompt, so there is no decision "
                         "to measure: pass --tokens A B")
    return Metric(f"logit(Unlocked top token) - logit(Locked top token), {differ}/{len(a)} prompts differ", a, b)
