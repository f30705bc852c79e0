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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from analyses._common import (
    UnlockedRunOptions,
    add_model_key_arguments,
    add_unlocked_arguments,
    pyplot,
    relative_depth,
    resolve_run,
    write_outputs,
)
from analyses.contract import Analysis
from mkt.activations import prompt_states
from mkt.cliargs import finite_float, positive_int
from mkt.conditions import (
    Condition,
    PrefixCache,
    combine,
    mean_ablation_condition,
    next_token_logprobs,
    no_condition,
    patch_condition,
    project_out,
    projection_condition,
    steering_condition,
)
from mkt.controls import size_matched_noise, top_principal_directions
from mkt.eval.stats import empirical_p_value
from mkt.generation import generate
from mkt.key import random_like
from mkt.models import PER_HEAD_HOOKS, RESID_HOOK, single_token_id
from mkt.steering import Steering

REST = "rest"  # as token_b: every other token, i.e. the log-odds of token_a
WINDOWS = ("only", "upto", "from")  # layer l alone, layers <= l, layers >= l
WINDOW_LABELS = {"only": "layer l only", "upto": "layers <= l", "from": "layers >= l"}
ABLATION_SCOPES = ("last", "all")  # projection at the last prompt token (the key's site) / at every position


# ---- pure tensor math ------------------------------------------------------------------------------------


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


# ---- the metric ------------------------------------------------------------------------------------------


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


# ---- the null directions ---------------------------------------------------------------------------------


def locked_states(model, prompts: list[str], key) -> Float[Tensor, "n layer d"]:
    """The Locked run's last-token states at the key's own hook point."""
    return prompt_states(model, prompts, hook=key.hook)


def scaled_like(key, units: Float[Tensor, "m layer d"]) -> Float[Tensor, "m layer d"]:
    """Directions with the key's per-layer norms (only the direction matters to the rotation and projection)."""
    return units / units.norm(dim=-1, keepdim=True).clamp_min(1e-30) * key.norms()[None, :, None]


def null_direction_sets(model, key, states: Float[Tensor, "n layer d"], seeds: list[int], n_pcs: int,
                        n_unembed: int, exclude_tokens: list[int]) -> dict[str, tuple[list[str], Tensor]]:
    """Families of non-key directions (each ``[m, layer, d]``, the key's norms) with a label per member.

    - ``random``: isotropic Gaussian (``random_like``), one per seed;
    - ``Locked PCs``: +/- the top principal directions of the Target's Locked-only states
      (pooling Unlocked states would put the cue's difference into the variance);
    - ``unembedding``: the unembedding columns ``W_U[:, t]`` of other tokens, the same at every
      layer (a push straight at another output token); not at a per-head hook, whose states
      are not in the residual stream's basis.
    """
    out: dict[str, tuple[list[str], Tensor]] = {}
    if seeds:
        out["random"] = ([f"seed {s}" for s in seeds], torch.stack([random_like(key, s).directions for s in seeds]))
    if n_pcs:
        pcs = top_principal_directions(states, n_pcs)
        out["Locked PCs"] = ([f"{s}PC{k + 1}" for k in range(n_pcs) for s in "+-"],
                             scaled_like(key, torch.stack([s * pcs[k] for k in range(n_pcs) for s in (1, -1)])))
    if n_unembed and key.hook not in PER_HEAD_HOOKS:
        skip = set(exclude_tokens) | set(model.tokenizer.all_special_ids)  # no <pad>, <bos>, <eos> pushes
        others = [t for t in range(model.cfg.d_vocab) if t not in skip]
        pick = torch.randperm(len(others), generator=torch.Generator().manual_seed(0))[:n_unembed]
        tokens = [others[i] for i in pick.tolist()]
        w_u = model.W_U.detach().float().cpu()
        cols = torch.stack([w_u[:, t][None].expand(key.n_layers, -1) for t in tokens])
        out["unembedding"] = ([repr(model.tokenizer.convert_ids_to_tokens(t)) for t in tokens], scaled_like(key, cols))
    return out


# ---- the three parts -------------------------------------------------------------------------------------


def window_layers(window: str, layer: int, n_layers: int) -> list[int]:
    return {"only": [layer], "upto": list(range(layer + 1)), "from": list(range(layer, n_layers))}[window]


@dataclass
class MatchedNull:
    """One family of null directions, each at one layer at the alpha matching the key's KL target: ``[layer, m]``."""

    family: str
    labels: list[str]
    alpha: np.ndarray
    kl: np.ndarray
    value: np.ndarray
    matched: np.ndarray  # bool: the KL reached is within the tolerance of the target; the rest are "unmatched"
    p: np.ndarray  # [layer]: (1 + #matched nulls with a metric >= the key's) / (1 + #matched)


@dataclass
class Sufficiency:
    """Metric of the key (and of random directions) steered at windows of layers.

    Grid arrays are ``[window, layer, alpha]`` (random: a few seeds, descriptive); the
    KL-matched ones ``[layer]``: the key at one layer only at the alpha whose KL at the
    decision token equals that of the key at all layers at the reference alpha, beside each
    null family matched the same way (``nulls``).
    """

    alphas: list[float]
    windows: list[str]
    key: np.ndarray  # [window, layer, alpha]
    random_mean: np.ndarray  # [window, layer, alpha], over the grid's null seeds
    random_max: np.ndarray
    kl_target: float  # KL at the decision token of the key at all layers at the reference alpha
    kl_tolerance: float  # a KL within this relative distance of the target counts as matched
    matched_alpha: np.ndarray  # [layer]: the evaluated alpha whose KL is closest to kl_target at layer l alone
    matched_kl: np.ndarray  # [layer]
    matched_key: np.ndarray  # [layer]
    key_matched: np.ndarray  # [layer] bool
    nulls: list[MatchedNull]
    alpha_cap: float  # the largest alpha tried when matching


# Families pooled into the key's p: draws that could point toward the decision as well as the key does.
# Unembedding columns of *other* tokens push away from it by construction, so they would lower p for
# free; they stay beside it as the reference that reaching the KL is not special.
POOLED_FAMILIES = ("random", "Locked PCs")


def pooled_nulls(s: Sufficiency, layer: int) -> np.ndarray:
    """The matched nulls of the pooled families at ``layer``."""
    return np.concatenate([n.value[layer][n.matched[layer]] for n in s.nulls if n.family in POOLED_FAMILIES]
                          or [np.zeros(0)])


def pooled_p(s: Sufficiency) -> np.ndarray:
    """[layer]: the key's empirical p against the matched nulls of ``POOLED_FAMILIES`` at once."""
    return np.array([empirical_p_value(s.matched_key[l], pooled_nulls(s, l)) for l in range(len(s.matched_key))])


def sufficiency(model, prompts: list[str], key, metric: Metric, alphas: list[float], ref_alpha: float,
                seeds: list[int], null_sets: dict[str, tuple[list[str], Tensor]], mode: str = "norm-preserving",
                alpha_range: tuple[float, float] = (0.01, 16.0), match_steps: int = 5, kl_tolerance: float = 0.2,
                progress: bool = True) -> Sufficiency:
    """The key and ``len(seeds)`` random directions at every window x alpha; the key and ``null_sets`` KL-matched."""
    n_layers, hook = model.cfg.n_layers, key.hook
    clean = metric.logprobs(model, prompts)

    def steer(layers: list[int], alpha: float | Tensor):
        """Steering at ``layers`` with one alpha, or one per set (``alpha[which]``)."""
        def make(per_row: Tensor, which: slice) -> Condition:
            a = alpha[which].repeat_interleave(len(prompts)) if torch.is_tensor(alpha) else alpha
            return steering_condition(Steering(per_row, a, mode, layers, hook=hook))

        return make

    kl_target = metric.per_row_set(model, prompts, steer(list(range(n_layers)), ref_alpha), key.directions[None],
                                   clean)[1][0]
    grid_sets = torch.stack([key.directions] + [random_like(key, s).directions for s in seeds])
    grid = np.zeros((len(WINDOWS), n_layers, len(alphas), grid_sets.shape[0]))
    cells = [(w, l) for w in range(len(WINDOWS)) for l in range(n_layers)]
    for w, l in tqdm(cells, desc="sufficiency grid", disable=not progress):
        for j, alpha in enumerate(alphas):
            grid[w, l, j] = metric.per_row_set(model, prompts, steer(window_layers(WINDOWS[w], l, n_layers), alpha),
                                               grid_sets)[0]

    families = [("key", (["key"], key.directions[None]))] + list(null_sets.items())
    matched = {name: np.zeros((3, n_layers, sets.shape[0])) for name, (_, sets) in families}  # alpha, KL, metric
    for l in tqdm(range(n_layers), desc="KL matching", disable=not progress):
        for name, (_, sets) in families:
            seen: dict[tuple[int, float], float] = {}

            def kl_at(x: np.ndarray, idx: np.ndarray) -> np.ndarray:
                values, kls = metric.per_row_set(model, prompts, steer([l], torch.tensor(x, dtype=torch.float32)),
                                                 sets[idx], clean, values=metric.score is None)
                seen.update({(int(i), float(a)): v for i, a, v in zip(idx, x, values)})
                return kls

            x, fx = bisect_increasing(kl_at, kl_target, *alpha_range, n=sets.shape[0], steps=match_steps)
            if metric.score is None:  # a logit metric came with the KL's forward passes
                value = [seen[int(i), float(a)] for i, a in enumerate(x)]
            else:  # a generation metric: generate once per direction, at the alpha chosen
                value = metric.per_row_set(model, prompts, steer([l], torch.tensor(x, dtype=torch.float32)), sets)[0]
            matched[name][:, l] = x, fx, value
    within = {name: np.abs(m[1] / kl_target - 1) <= kl_tolerance for name, m in matched.items()}
    key_value = matched["key"][2][:, 0]
    nulls = []
    for name, (labels, _) in families[1:]:
        a, kl, value = matched[name]
        p = [empirical_p_value(key_value[l], np.where(within[name][l], value[l], np.nan)) for l in range(n_layers)]
        nulls.append(MatchedNull(name, labels, a, kl, value, within[name], np.array(p)))
    k = matched["key"]
    return Sufficiency(list(alphas), list(WINDOWS), grid[..., 0], grid[..., 1:].mean(-1), grid[..., 1:].max(-1),
                       float(kl_target), kl_tolerance, k[0][:, 0], k[1][:, 0], key_value, within["key"][:, 0], nulls,
                       alpha_range[1])


@dataclass
class Necessity:
    """The key's direction projected out (and mean-ablated) at every layer; arrays ``[run, scope]``.

    Runs are the Unlocked run(s) and the steered model; the Locked run itself is ablated too
    (``locked_ablated``): the projection moves it as well, and ``survival_net`` compares the
    ablated Unlocked run with the ablated Locked run instead of the intact one.
    """

    runs: list[str]
    scopes: list[str]
    locked: float  # the Locked run: the model on the Locked prompts, no key
    locked_ablated: np.ndarray  # [scope]: the Locked run with the key's direction projected out
    locked_mean_ablated: float  # the Locked run with h.u set to its Locked mean (last token)
    unlocked: np.ndarray  # [run]
    ablated: np.ndarray  # [run, scope]
    survival: np.ndarray  # [run, scope]: (ablated - Locked) / (Unlocked - Locked)
    survival_net: np.ndarray  # [run, scope]: (ablated - Locked ablated) / (Unlocked - Locked)
    mean_ablated: np.ndarray  # [run]: h.u set to its Locked-run mean at the last token of every layer
    mean_survival: np.ndarray  # [run]
    null_families: list[str]
    null_labels: list[list[str]]
    null_survival: list[np.ndarray]  # per family [run, scope, m]
    p: np.ndarray  # [family, run, scope]: (1 + #nulls with survival <= the key's) / (1 + m)
    variance_share_key: np.ndarray  # [layer]: share of the Locked states' variance along the key
    variance_share_nulls: list[np.ndarray]  # per family [m, layer]


def necessity(model, prompts: list[str], key, metric: Metric, alpha: float, null_sets: dict[str, tuple[list[str], Tensor]],
              states: Float[Tensor, "n layer d"], unlocked_model=None, unlocked_prompts: list[str] | None = None,
              unlocked_label: str = "", mode: str = "norm-preserving") -> Necessity:
    """Project the key (and each null direction) out at every layer, at the key's hook, from each run.

    The steered run is checked, not tested: the projection sits after the injection at every
    layer, so it removes what the key wrote by construction and only the rotation's norm
    change can survive; a survival near 1 there would mean the hooks miss the injection.
    Null families: directions that can fail this test, the top principal directions of the
    Locked states hold more variance than the key (``variance_share_*`` says how much).
    """
    hook = key.hook
    runs: list[tuple[str, object, list[str], Condition]] = []
    if unlocked_model is not None or unlocked_prompts is not None:
        runs.append((unlocked_label or "Unlocked run", unlocked_model or model, unlocked_prompts or prompts,
                     no_condition))
    runs.append((f"steered (alpha={alpha:g})", model, prompts, steering_condition(key.steering(alpha=alpha, mode=mode))))
    units = key.directions / key.directions.norm(dim=-1, keepdim=True)
    means = (states * units).sum(-1).mean(0)  # [layer]: the Locked run's mean h.u
    locked = metric(model, prompts)
    locked_ablated = np.array([metric(model, prompts, projection_condition(key.directions, s, hook)) for s in ABLATION_SCOPES])
    locked_mean = metric(model, prompts, mean_ablation_condition(key.directions, means, hook))
    unlocked = np.zeros(len(runs))
    ablated = np.zeros((len(runs), len(ABLATION_SCOPES)))
    mean_ablated = np.zeros(len(runs))
    null_values = [np.zeros((len(runs), len(ABLATION_SCOPES), sets.shape[0])) for _, sets in null_sets.values()]
    for r, (_, m, ps, base) in enumerate(runs):
        unlocked[r] = metric(m, ps, base)
        mean_ablated[r] = metric(m, ps, combine(base, mean_ablation_condition(key.directions, means, hook)))
        for s, scope in enumerate(ABLATION_SCOPES):
            ablated[r, s] = metric(m, ps, combine(base, projection_condition(key.directions, scope, hook)))
            for f, (_, sets) in enumerate(null_sets.values()):
                null_values[f][r, s] = metric.per_row_set(
                    m, ps, lambda per_row, which: combine(base, projection_condition(per_row, scope, hook)), sets)[0]
    surv = np.vectorize(survival)
    with np.errstate(invalid="ignore", divide="ignore"):  # no Locked -> Unlocked change: NaN survival, said so
        key_surv = surv(ablated, locked, unlocked[:, None])
        null_surv = [surv(v, locked, unlocked[:, None, None]) for v in null_values]
        net = (ablated - locked_ablated[None]) / (unlocked[:, None] - locked)
    p = np.array([[[empirical_p_value(key_surv[r, s], ns[r, s], larger=False) for s in range(len(ABLATION_SCOPES))]
                   for r in range(len(runs))] for ns in null_surv])
    return Necessity([r[0] for r in runs], list(ABLATION_SCOPES), locked, locked_ablated, locked_mean, unlocked, ablated, key_surv,
                     net, mean_ablated,
                     surv(mean_ablated, locked, unlocked), list(null_sets), [labels for labels, _ in null_sets.values()],
                     null_surv, p.reshape(len(null_sets), len(runs), len(ABLATION_SCOPES)), variance_share(states, key.directions).numpy(),
                     [torch.stack([variance_share(states, d) for d in sets]).numpy() for _, sets in null_sets.values()])


@dataclass
class Patching:
    """Unlocked -> Locked activation patching at one layer at a time (last prompt token); arrays ``[layer]``.

    With the same model on both sides (a cue prompt), patching the last layer replaces the final
    residual and reproduces the Unlocked run by identity (``identity_at_last``). The patch is
    also split along one direction ``u``: ``h_L + ((h_U - h_L).u) u`` (its component along
    ``u`` alone) and ``h_U - ((h_U - h_L).u) u`` (everything but that component), for ``u`` the
    key, random directions (a weak null: a random unit vector holds about 1/d of the
    difference), the top principal directions of the Locked states (a harder null), and the
    mean Unlocked - Locked difference of these very prompts (a reference: what the simplest
    fitted direction does; not an upper bound, an optimised direction does somewhat better).
    """

    hook: str
    locked: float
    unlocked: float
    identity_at_last: bool  # the donor is this model (cue prompts): the last layer's patch is the identity
    patched: np.ndarray  # the Unlocked run's state written into the Locked run at layer l
    control: np.ndarray  # [layer, seed]: the Locked state plus a random vector of norm ||h_U - h_L||, per prompt
    p: np.ndarray  # [layer]: (1 + #controls >= patched) / (1 + seeds)
    along_key: np.ndarray  # the patch's component along the key only
    without_key: np.ndarray  # the patch without its component along the key
    along_random: np.ndarray  # [layer, seed]: the component along a random direction only
    p_along: np.ndarray  # [layer]: (1 + #random >= along_key) / (1 + seeds)
    along_pcs: np.ndarray  # [layer, pc]: the component along a top principal direction of the Locked states only
    along_mean_difference: np.ndarray  # reference: the component along these prompts' mean difference only


def along(own: Float[Tensor, "n d"], donor: Float[Tensor, "n d"], direction: Float[Tensor, "d"]) -> Float[Tensor, "n d"]:
    """``own`` moved by the component of ``donor - own`` along ``direction``."""
    return donor - project_out(donor - own, direction)


def activation_patching(model, prompts: list[str], metric: Metric, seeds: list[int], hook: str = RESID_HOOK,
                        unlocked_model=None, unlocked_prompts: list[str] | None = None,
                        key_directions: Float[Tensor, "layer d"] | None = None, n_pcs: int = 3) -> Patching:
    """Patch the Unlocked run's last-token state at ``hook`` into the Locked run, layer by layer.

    The control moves the Locked state as far as the patch does (per prompt, ||h_U - h_L||),
    in a random direction: it fails if any change of that size carries the decision (a weak
    control: it says nothing about *which* direction). The split along the key, beside the
    same split along random and Locked principal directions, says how much of the patch the
    key's direction carries.
    """
    donor = prompt_states(unlocked_model or model, unlocked_prompts or prompts, hook=hook)
    own = prompt_states(model, prompts, hook=hook)
    pcs = top_principal_directions(own, n_pcs) if n_pcs else torch.zeros(0, *own.shape[1:])
    n_layers = model.cfg.n_layers

    def score(layer: int, values: Tensor) -> float:
        return metric(model, prompts, patch_condition(layer, values, hook))

    def score_sets(layer: int, values: Tensor) -> np.ndarray:  # [m, n, d]: one value per prompt per set
        return metric.per_row_set(model, prompts, lambda per_row, which: patch_condition(layer, per_row, hook),
                                  values, per_prompt=True)[0]

    patched, along_key, without_key, along_mean = (np.full(n_layers, np.nan) for _ in range(4))
    control, along_random = np.zeros((n_layers, len(seeds))), np.zeros((n_layers, len(seeds)))
    along_pcs = np.zeros((n_layers, pcs.shape[0]))
    for layer in range(n_layers):
        h_l, h_u = own[:, layer], donor[:, layer]
        patched[layer] = score(layer, h_u)
        control[layer] = score_sets(layer, torch.stack([h_l + size_matched_noise(h_u - h_l, 1000 * layer + s)
                                                        for s in seeds]))
        along_mean[layer] = score(layer, along(h_l, h_u, (h_u - h_l).mean(0)))
        randoms = torch.randn(len(seeds), h_l.shape[-1], generator=torch.Generator().manual_seed(2000 + layer))
        along_random[layer] = score_sets(layer, torch.stack([along(h_l, h_u, r) for r in randoms]))
        if pcs.shape[0]:
            along_pcs[layer] = score_sets(layer, torch.stack([along(h_l, h_u, pc[layer]) for pc in pcs]))
        if key_directions is not None:
            along_key[layer] = score(layer, along(h_l, h_u, key_directions[layer]))
            without_key[layer] = score(layer, h_l + project_out(h_u - h_l, key_directions[layer]))
    p = np.array([empirical_p_value(patched[l], control[l]) for l in range(n_layers)])
    p_along = np.array([empirical_p_value(along_key[l], along_random[l]) for l in range(n_layers)])
    return Patching(hook, metric(model, prompts), metric(unlocked_model or model, unlocked_prompts or prompts),
                    unlocked_model is None, patched, control, p, along_key, without_key, along_random, p_along,
                    along_pcs, along_mean)


@dataclass
class AblationResult:
    model: str
    metric: str
    hook: str  # the key's hook point: every steering, projection and patch acts there
    alpha: float  # the reference alpha: the key at all layers, and the KL it makes
    n_prompts: int
    null_seeds: list[int]  # random directions of the sufficiency grid (descriptive)
    matched_seeds: list[int]  # random directions of the KL-matched and necessity nulls
    relative_depth: np.ndarray
    no_key: float
    all_layers: float
    sufficiency: Sufficiency
    necessity: Necessity
    patching: Patching | None = None  # None without an Unlocked run
    notes: list[str] = field(default_factory=list)


def layer_ablation(model, prompts: list[str], key, metric: Metric, alpha: float, alphas: list[float],
                   seeds: list[int], matched_seeds: list[int] | None = None, n_pcs: int = 3, n_unembed: int = 20,
                   unlocked_model=None, unlocked_prompts: list[str] | None = None, unlocked_label: str = "",
                   mode: str = "norm-preserving", model_name: str = "", match_steps: int = 5,
                   progress: bool = True) -> AblationResult:
    """Sufficiency, necessity and (with an Unlocked run) activation patching of ``key`` on ``model``."""
    matched_seeds = list(seeds) if matched_seeds is None else list(matched_seeds)
    has_unlocked = unlocked_model is not None or unlocked_prompts is not None
    states = locked_states(model, prompts, key)
    exclude = [int(t) for t in {*metric.a.tolist(), *([] if metric.b is None else metric.b.tolist())}] \
        if metric.a is not None else []
    null_sets = null_direction_sets(model, key, states, matched_seeds, n_pcs, n_unembed, exclude)
    suff = sufficiency(model, prompts, key, metric, alphas, alpha, seeds, null_sets, mode, match_steps=match_steps,
                       progress=progress)
    necessity_nulls = {name: (labels, sets) for name, (labels, sets) in null_sets.items() if name != "unembedding"}
    if "Locked PCs" in necessity_nulls:  # projecting out +PC and -PC is the same: keep one of each
        labels, sets = necessity_nulls["Locked PCs"]
        necessity_nulls["Locked PCs"] = ([lab.lstrip("+") for lab in labels[::2]], sets[::2])
    nec = necessity(model, prompts, key, metric, alpha, necessity_nulls, states, unlocked_model, unlocked_prompts,
                    unlocked_label, mode)
    patch = (activation_patching(model, prompts, metric, matched_seeds, key.hook, unlocked_model, unlocked_prompts,
                                 key.directions, n_pcs) if has_unlocked else None)
    notes = [] if has_unlocked else ["no Unlocked run: necessity from the steered model only, no activation patching"]
    if n_unembed and key.hook in PER_HEAD_HOOKS:
        notes.append(f"no unembedding-column nulls: the key is per head ({key.hook}), not in the residual stream")
    return AblationResult(model_name, metric.name, key.hook, alpha, len(prompts), list(seeds), matched_seeds,
                          relative_depth(model.cfg.n_layers), metric(model, prompts),
                          metric(model, prompts, steering_condition(key.steering(alpha=alpha, mode=mode))),
                          suff, nec, patch, notes)


# ---- figure and command line -----------------------------------------------------------------------------


FAMILY_COLORS = {"random": "C3", "Locked PCs": "C1", "unembedding": "C4"}


def plot_ablation(result: AblationResult, path: str | Path) -> None:
    plt = pyplot()
    s = result.sufficiency
    x = result.relative_depth
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(s.alphas)))

    ax = axes[0, 0]
    for j, alpha in enumerate(s.alphas):
        ax.plot(x, s.key[0, :, j], "o-", color=colors[j], label=f"key, alpha {alpha:g}")
        ax.plot(x, s.random_mean[0, :, j], ":", color=colors[j], alpha=0.8)
    if result.patching is not None:
        p = result.patching
        ax.plot(x, p.patched, "k^-", label="patch Unlocked -> Locked" + (" (last layer: identity)"
                                                                         if p.identity_at_last else ""))
        ax.plot(x, p.control.mean(-1), "kv:", label=f"control: Locked + random vector of norm ||h_U - h_L|| "
                                                    f"(mean of {p.control.shape[1]})")
        if not np.isnan(p.along_key).all():
            ax.plot(x, p.along_key, "^-", color="C6", label="patch, its component along the key only")
            ax.plot(x, p.without_key, "x:", color="C6", label="patch without its component along the key")
        ax.plot(x, p.along_random.mean(-1), "^:", color="gray", ms=4,
                label=f"patch, component along a random direction only (mean of {p.along_random.shape[1]})")
    ax.set_title(f"one layer at a time (dotted: random directions, same alpha, mean of {len(result.null_seeds)})",
                 fontsize=10)

    ax = axes[0, 1]
    j = int(np.argmin(np.abs(np.array(s.alphas) - result.alpha)))
    for w, marker in zip((1, 2), ("s", "D")):
        ax.plot(x, s.key[w, :, j], marker + "-", label=f"key, {WINDOW_LABELS[s.windows[w]]}")
        ax.plot(x, s.random_mean[w, :, j], marker + ":", alpha=0.7, label=f"random, {WINDOW_LABELS[s.windows[w]]}")
    ax.set_title(f"cumulative windows at alpha {s.alphas[j]:g}", fontsize=10)

    ax = axes[1, 0]
    ax.plot(x, s.matched_key, "o-", color="C0", lw=2, label="key, layer l only")
    for i in np.flatnonzero(~s.key_matched):
        ax.annotate(f"unmatched (KL {s.matched_kl[i]:.2g})", (x[i], s.matched_key[i]), xytext=(3, 6),
                    textcoords="offset points", fontsize=7, color="C0")
    width = 0.012
    for f, null in enumerate(s.nulls):
        color = FAMILY_COLORS.get(null.family, f"C{5 + f}")
        offset = (f - (len(s.nulls) - 1) / 2) * width
        for l in range(len(x)):
            v = null.value[l][null.matched[l]]
            ax.plot(np.full(v.size, x[l] + offset), v, "o", ms=3.5, color=color, alpha=0.7,
                    label=None if l else f"{null.family}: KL-matched (each a point)")
        n_un = (~null.matched).sum(-1)
        ax.plot([], [], " ", label=f"{null.family}: unmatched per layer " + " ".join(str(k) for k in n_un)
                + f" of {null.matched.shape[1]}")
    pooled = pooled_p(s)
    for l in range(len(x) if s.nulls else 0):
        n_matched = pooled_nulls(s, l).size
        ax.annotate(f"p={pooled[l]:.2g}\n(of {n_matched})", (x[l], s.matched_key[l]), xytext=(4, -20),
                    textcoords="offset points", fontsize=7, color="C0")
    ax.set_title(f"one layer, alpha matched on KL at the decision token ({s.kl_target:.3g} nats = key at all layers, "
                 f"+/-{s.kl_tolerance:.0%});\nunmatched nulls (alpha <= {s.alpha_cap:g}) counted, not plotted; "
                 "p: key vs matched random + PC nulls", fontsize=9)

    for ax in (axes[0, 0], axes[0, 1], axes[1, 0]):
        ax.axhline(result.all_layers, color="green", ls="--", lw=1, label=f"key at all layers, alpha {result.alpha:g}")
        ax.axhline(result.no_key, color="gray", ls="--", lw=1, label="no key")
        ax.set_xlabel("relative depth of layer l")
        ax.set_ylabel(result.metric if len(result.metric) < 40 else "metric")
    axes[0, 1].legend(fontsize=6.5)
    lo, hi = axes[0, 0].get_ylim()
    axes[0, 0].set_ylim(lo, hi + 0.8 * (hi - lo))  # room for the legend above the curves
    axes[0, 0].legend(fontsize=6.5, loc="upper center", ncol=2)
    lo, hi = axes[1, 0].get_ylim()
    axes[1, 0].set_ylim(lo - 0.75 * (hi - lo), hi)  # room for the legend below the points
    axes[1, 0].legend(fontsize=6.5, loc="lower center", ncol=2)

    ax = axes[1, 1]
    nec = result.necessity
    labels = [f"{run}\n{scope}" for run in nec.runs for scope in nec.scopes]
    pos = np.arange(len(labels))
    bars = [("key projected out", nec.survival.ravel(), "C0", None)]
    for name, ns in zip(nec.null_families, nec.null_survival):
        if name == "random":
            flat = ns.reshape(len(labels), -1)
            bars.append((f"random projected out (mean, min-max of {flat.shape[1]})", flat.mean(-1), "C3",
                         np.stack([flat.mean(-1) - flat.min(-1), flat.max(-1) - flat.mean(-1)])))
        else:
            for k, lab in enumerate(nec.null_labels[nec.null_families.index(name)]):
                bars.append((f"Locked {lab} projected out", ns[..., k].ravel(), plt.cm.Oranges(0.8 - 0.2 * k), None))
    w = 0.8 / len(bars)
    for b, (lab, values, color, err) in enumerate(bars):
        ax.bar(pos - 0.4 + w * (b + 0.5), values, w, color=color, yerr=err, capsize=2, label=lab)
    mean_pos = [i for i, lab in enumerate(labels) if lab.endswith("last")]
    ax.plot(np.array(mean_pos) - 0.4 + w * 0.5, nec.mean_survival, "k*", ms=9, label="key mean-ablated (last token)")
    ax.axhline(1, color="gray", lw=0.8)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xticks(pos, labels, fontsize=8)
    ax.set_ylabel("share of the capability that survives")
    ax.set_title("necessity: the direction projected out at every layer (last token / all positions);\n"
                 f"the Locked run itself moves {nec.locked:+.2f} -> " + "/".join(f"{v:+.2f}" for v in nec.locked_ablated)
                 + " when the key is projected out", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"Ablation of the key ({result.hook}): {result.model}, {result.n_prompts} prompts; metric: "
                 f"{result.metric}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    p.add_argument("--pc-nulls", type=int, default=3,
                   help="top principal directions of the Locked states used as nulls (+/- each when steering; default 3)")
    p.add_argument("--unembed-nulls", type=int, default=20,
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


def report(result: AblationResult) -> str:
    """The result as text: every key number beside its control."""
    s, lines = result.sufficiency, [f"{result.metric} at {result.hook}: no key {result.no_key:.3f}, key at all layers "
                                    f"(alpha {result.alpha:g}) {result.all_layers:.3f}"]
    lines.append(f"sufficiency grid (key / random mean / random max), {len(result.null_seeds)} random directions:")
    for w, window in enumerate(s.windows):
        for layer in range(len(result.relative_depth)):
            cells = "  ".join(f"a{a:g} {s.key[w, layer, j]:+.2f}/{s.random_mean[w, layer, j]:+.2f}/"
                              f"{s.random_max[w, layer, j]:+.2f}" for j, a in enumerate(s.alphas))
            lines.append(f"  {WINDOW_LABELS[window]:12s} l={layer}: {cells}")
    lines.append(f"one layer, KL-matched to {s.kl_target:.3g} nats (+/-{s.kl_tolerance:.0%}); per null family: matched "
                 "count, their mean / max metric, p = (1 + #matched >= key) / (1 + #matched); unmatched: max KL reached")
    for layer in range(len(result.relative_depth)):
        cells = []
        for null in s.nulls:
            ok = null.matched[layer]
            v = null.value[layer][ok]
            un = (f"; {(~ok).sum()} unmatched (KL <= {null.kl[layer][~ok].max():.3g})" if (~ok).any() else "")
            cells.append(f"{null.family} {ok.sum()}/{ok.size}" + (f" {v.mean():+.2f}/{v.max():+.2f} p={null.p[layer]:.2g}"
                                                                  if ok.any() else "") + un)
        flag = "" if s.key_matched[layer] else " UNMATCHED"
        lines.append(f"  l={layer}: key alpha {s.matched_alpha[layer]:.3g} (KL {s.matched_kl[layer]:.3g}{flag}) "
                     f"{s.matched_key[layer]:+.2f}, p(random+PCs)={pooled_p(s)[layer]:.2g} | " + " | ".join(cells))
    n = result.necessity
    lines.append(f"necessity (Locked {n.locked:+.3f}; the Locked run with the key projected out "
                 + "/".join(f"{v:+.3f}" for v in n.locked_ablated) + f", mean-ablated {n.locked_mean_ablated:+.3f})")
    lines.append("  variance share of the Locked states along the key per layer " + " ".join(
        f"{v:.3f}" for v in n.variance_share_key) + "; " + "; ".join(
        f"{name} (mean of {len(vs)}) " + " ".join(f"{v:.3f}" for v in vs.mean(0)) if name == "random" else
        "; ".join(f"{lab} " + " ".join(f"{v:.3f}" for v in row) for lab, row in zip(labels, vs))
        for name, labels, vs in zip(n.null_families, n.null_labels, n.variance_share_nulls)))
    for r, name in enumerate(n.runs):
        lines.append(f"  {name} {n.unlocked[r]:+.3f}: mean-ablated {n.mean_ablated[r]:+.3f} "
                     f"(survival {n.mean_survival[r]:.2f})")
        for sc, scope in enumerate(n.scopes):
            nulls = "  ".join(
                f"{fam}: " + ("/".join(f"{v:.2f}" for v in ns[r, sc]) if ns.shape[-1] <= 4 else
                              f"mean {ns[r, sc].mean():.2f} min {ns[r, sc].min():.2f}") + f" p={n.p[f, r, sc]:.2g}"
                for f, (fam, ns) in enumerate(zip(n.null_families, n.null_survival)))
            lines.append(f"    {scope}: key {n.ablated[r, sc]:+.3f} survival {n.survival[r, sc]:.2f} "
                         f"(net of the ablated Locked run {n.survival_net[r, sc]:.2f}) | {nulls}")
    if result.patching is not None:
        p = result.patching
        lines.append(f"patching Unlocked -> Locked per layer at {p.hook} (Locked {p.locked:+.3f}, Unlocked "
                     f"{p.unlocked:+.3f}{'; last layer = identity' if p.identity_at_last else ''}): " + "  ".join(
                         f"l{i} {v:+.2f} (ctrl mean {c.mean():+.2f} max {c.max():+.2f}, p={pv:.2g})"
                         for i, (v, c, pv) in enumerate(zip(p.patched, p.control, p.p))))
        lines.append("  the patch split along one direction u: along the key only / without the key's component / "
                     "along random (mean, max; p of the key) / along Locked PCs / along these prompts' mean "
                     "difference (reference): " + "  ".join(
                         f"l{i} {a:+.2f}/{w:+.2f}/{r.mean():+.2f},{r.max():+.2f} p={pa:.2g}/"
                         + ",".join(f"{v:+.2f}" for v in pc) + f"/{m:+.2f}"
                         for i, (a, w, r, pa, pc, m) in enumerate(zip(p.along_key, p.without_key, p.along_random,
                                                                      p.p_along, p.along_pcs,
                                                                      p.along_mean_difference))))
    lines += result.notes
    return "\n".join(lines)


ANALYSIS = Analysis("ablation", __doc__, add_arguments, AblationOptions, run)
main = ANALYSIS.main


if __name__ == "__main__":
    main()
