"""Per-layer ablation: which layers suffice for the key's effect, and is the key's direction necessary?

Three parts, each beside the null that would produce the same number if the effect were
not real:

- **Sufficiency**: the key at one layer, at layers <= l and at layers >= l, over a grid of
  alphas, and again at the alpha that makes the same KL divergence at the decision token
  as the key at all layers (so that layers are compared on the size of the change they
  make); each cell beside random directions of the key's norm steered the same way.
- **Necessity**: the key's direction projected out at every layer (at the last prompt
  token, or at every position) from the Unlocked run (cue prompt, task template or a
  post-trained model) and from the steered Target: the share of the capability that
  survives, beside projecting out random directions.
- **Activation patching**: the Unlocked run's whole residual at one layer (last prompt
  token) written into the Locked run, the most any single-layer change there can do;
  beside a Locked residual of another prompt written the same way.

    mkt analyze ablation --model organism:target-family --metric logit_diff --tokens T rest
"""

from __future__ import annotations

import argparse
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, ContextManager

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from analyses._common import (
    add_model_key_arguments,
    add_unlocked_arguments,
    command_line,
    pyplot,
    relative_depth,
    resolve_run,
    write_outputs,
)
from mkt.activations import last_token_resid
from mkt.cliargs import finite_float, positive_int
from mkt.generation import generate
from mkt.key import random_like
from mkt.models import resid_hook_name, single_token_id, tokenize_left_padded
from mkt.steering import Steering

# A condition hooks a model while open, for the prompt rows ``rows`` of the batch it runs.
Condition = Callable[[object, slice], ContextManager]
REST = "rest"  # as token_b: every other token, i.e. the log-odds of token_a
WINDOWS = ("only", "upto", "from")  # layer l alone, layers <= l, layers >= l
WINDOW_LABELS = {"only": "layer l only", "upto": "layers <= l", "from": "layers >= l"}
SCOPES = ("last", "all")  # projection at the last prompt token (the key's site) / at every position


# ---- pure tensor math ------------------------------------------------------------------------------------


def project_out(h: Float[Tensor, "... d"], direction: Float[Tensor, "d"]) -> Float[Tensor, "... d"]:
    """``h`` without its component along ``direction`` (any norm): ``h - (h.u) u`` with ``u`` the unit vector."""
    u = direction / direction.norm().clamp_min(1e-30)
    return h - (h @ u)[..., None] * u


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


def bisect_increasing(f: Callable[[float], float], target: float, lo: float, hi: float, steps: int = 8
                      ) -> tuple[float, float]:
    """(x, f(x)) with f(x) ~ target for f increasing on [lo, hi], bisecting in log x.

    When the target lies outside [f(lo), f(hi)] the nearer end is returned, so a caller can
    tell an unreachable target by comparing f(x) with it.
    """
    f_hi = f(hi)
    if f_hi <= target:
        return hi, f_hi
    f_lo = f(lo)
    if f_lo >= target:
        return lo, f_lo
    x, fx = hi, f_hi
    for _ in range(steps):
        x = float(np.sqrt(lo * hi))
        fx = f(x)
        lo, hi = (x, hi) if fx < target else (lo, x)
    return x, fx


# ---- model I/O -------------------------------------------------------------------------------------------


def no_condition(model, rows: slice) -> ContextManager:
    return nullcontext()


def steering_condition(steering: Steering) -> Condition:
    return lambda model, rows: steering.rows(rows.start, rows.stop).attach(model)


def projection_condition(directions: Float[Tensor, "layer d"], scope: str) -> Condition:
    """Project ``directions[l]`` out of ``resid_post`` of every layer l, at the last prompt token or everywhere.

    ``last`` acts on the prefill only (generated tokens are left alone, like the key's own
    ``prompt-last`` scope); ``all`` on every position of every forward, generated tokens too.
    """
    def hook(act: Float[Tensor, "batch pos d"], hook, layer: int) -> Tensor:
        u = directions[layer].to(device=act.device, dtype=torch.float32)
        if scope == "all":
            return project_out(act.float(), u).to(act.dtype)
        if act.shape[1] == 1:
            return act
        out = act.clone()
        out[:, -1] = project_out(act[:, -1].float(), u).to(act.dtype)
        return out

    def condition(model, rows: slice) -> ContextManager:
        return model.hooks(fwd_hooks=[(resid_hook_name(layer), partial(hook, layer=layer))
                                      for layer in range(directions.shape[0])])

    return condition


def patch_condition(layer: int, values: Float[Tensor, "n d"]) -> Condition:
    """Write ``values[i]`` over prompt i's residual after ``layer`` at its last prompt token (prefill only)."""
    def hook(act: Float[Tensor, "batch pos d"], hook, rows: slice) -> Tensor:
        if act.shape[1] == 1:
            return act
        out = act.clone()
        out[:, -1] = values[rows].to(device=act.device, dtype=act.dtype)
        return out

    return lambda model, rows: model.hooks(fwd_hooks=[(resid_hook_name(layer), partial(hook, rows=rows))])


def combine(*conditions: Condition) -> Condition:
    """Several conditions at once, registered in order (a later one sees what an earlier one wrote)."""
    @contextmanager
    def condition(model, rows: slice):
        with ExitStack() as stack:
            for c in conditions:
                stack.enter_context(c(model, rows))
            yield

    return condition


@torch.no_grad()
def next_token_logprobs(model, prompts: list[str], condition: Condition = no_condition, batch_size: int = 128
                        ) -> Float[Tensor, "n vocab"]:
    """Log-probabilities of the next token after each prompt (float64, CPU), under ``condition``."""
    out = []
    for start in range(0, len(prompts), batch_size):
        rows = slice(start, min(start + batch_size, len(prompts)))
        ids, mask = tokenize_left_padded(model, prompts[rows])
        with condition(model, rows):
            logits = model(ids, attention_mask=mask)[:, -1]
        out.append(torch.log_softmax(logits.double(), -1).cpu())
    return torch.cat(out)


@dataclass
class Metric:
    """A capability score of a model on prompts under a condition.

    ``a``/``b`` set: the mean ``decision_metric`` at the decision token (one forward pass);
    ``score`` set: the mean ``score(prompt_index, text)`` over greedy generations.
    """

    name: str
    a: Int[Tensor, "n"] | None = None
    b: Int[Tensor, "n"] | None = None
    score: Callable[[int, str], float] | None = None
    max_new_tokens: int = 40
    batch_size: int = 128

    def __call__(self, model, prompts: list[str], condition: Condition = no_condition) -> float:
        if self.score is None:
            return decision_metric(next_token_logprobs(model, prompts, condition, self.batch_size),
                                   self.a, self.b).mean().item()
        texts = []
        for start in range(0, len(prompts), self.batch_size):
            rows = slice(start, min(start + self.batch_size, len(prompts)))
            with condition(model, rows):
                texts += [g.text for g in generate(model, prompts[rows], self.max_new_tokens,
                                                   batch_size=self.batch_size)]
        return float(np.mean([self.score(i, t) for i, t in enumerate(texts)]))


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


# ---- the three parts -------------------------------------------------------------------------------------


def window_layers(window: str, layer: int, n_layers: int) -> list[int]:
    return {"only": [layer], "upto": list(range(layer + 1)), "from": list(range(layer, n_layers))}[window]


@dataclass
class Sufficiency:
    """Metric of the key (and of random directions) steered at windows of layers.

    Grid arrays are ``[window, layer, alpha]``; the KL-matched ones ``[layer]``, the key at
    one layer only at the alpha whose KL at the decision token equals that of the key at
    all layers at the reference alpha.
    """

    alphas: list[float]
    windows: list[str]
    key: np.ndarray  # [window, layer, alpha]
    random_mean: np.ndarray  # [window, layer, alpha], over the null seeds
    random_max: np.ndarray
    kl_target: float  # KL at the decision token of the key at all layers at the reference alpha
    matched_alpha: np.ndarray  # [layer]: the alpha making kl_target at layer l alone (the cap where out of reach)
    matched_kl: np.ndarray  # [layer]: the KL it made (below kl_target where the target is out of reach)
    matched_key: np.ndarray  # [layer]
    matched_random_mean: np.ndarray  # [layer]: random directions, each at its own KL-matched alpha
    matched_random_max: np.ndarray
    matched_random_kl: np.ndarray  # [layer], mean over seeds
    alpha_cap: float  # the largest alpha tried when matching


def sufficiency(model, prompts: list[str], key, metric: Metric, alphas: list[float], ref_alpha: float,
                seeds: list[int], mode: str = "norm-preserving", alpha_range: tuple[float, float] = (0.01, 16.0),
                match_steps: int = 6, progress: bool = True) -> Sufficiency:
    """The key and ``len(seeds)`` random directions of its norms at every window x alpha, and KL-matched per layer."""
    n_layers = model.cfg.n_layers
    clean = next_token_logprobs(model, prompts, batch_size=metric.batch_size)
    cache: dict[tuple, tuple[float, float]] = {}

    def evaluate(d: int, directions, layers: tuple, alpha: float) -> tuple[float, float]:
        """(metric, KL at the decision token); a logit metric shares the KL's forward pass."""
        if (d, layers, alpha) not in cache:
            condition = steering_condition(Steering(directions, alpha, mode, list(layers)))
            logp = next_token_logprobs(model, prompts, condition, metric.batch_size)
            value = (decision_metric(logp, metric.a, metric.b).mean().item() if metric.score is None
                     else metric(model, prompts, condition))
            cache[d, layers, alpha] = value, kl_divergence(clean, logp).mean().item()
        return cache[d, layers, alpha]

    every = tuple(range(n_layers))
    kl_target = evaluate(0, key.directions, every, ref_alpha)[1]
    directions = [key.directions] + [random_like(key, s).directions for s in seeds]
    grid = np.zeros((len(WINDOWS), n_layers, len(alphas), len(directions)))
    matched = np.zeros((n_layers, len(directions), 3))  # alpha, metric, KL
    cells = [(w, l) for w in range(len(WINDOWS)) for l in range(n_layers)]
    for w, l in tqdm(cells, desc="sufficiency", disable=not progress):
        layers = tuple(window_layers(WINDOWS[w], l, n_layers))
        for d, dirs in enumerate(directions):
            for j, alpha in enumerate(alphas):
                grid[w, l, j, d] = evaluate(d, dirs, layers, alpha)[0]
            if WINDOWS[w] == "only":
                alpha, kl = bisect_increasing(lambda a: evaluate(d, dirs, layers, a)[1], kl_target, *alpha_range,
                                              steps=match_steps)
                matched[l, d] = alpha, evaluate(d, dirs, layers, alpha)[0], kl
        cache.clear()  # each cell's evaluations are its own
    rnd, m_rnd = grid[..., 1:], matched[:, 1:]
    return Sufficiency(list(alphas), list(WINDOWS), grid[..., 0], rnd.mean(-1), rnd.max(-1), kl_target,
                       matched[:, 0, 0], matched[:, 0, 2], matched[:, 0, 1], m_rnd[..., 1].mean(-1),
                       m_rnd[..., 1].max(-1), m_rnd[..., 2].mean(-1), alpha_range[1])


@dataclass
class Necessity:
    """The key's direction projected out of Unlocked runs; arrays ``[run, scope]``."""

    runs: list[str]
    scopes: list[str]
    locked: float  # the Locked run: the model on the Locked prompts, no key
    unlocked: np.ndarray  # [run]
    ablated: np.ndarray  # [run, scope]
    random_mean: np.ndarray  # [run, scope]: random directions (the key's norms) projected out instead
    random_min: np.ndarray
    survival: np.ndarray  # [run, scope]
    random_survival: np.ndarray  # [run, scope], of random_mean


def necessity(model, prompts: list[str], key, metric: Metric, alpha: float, seeds: list[int],
              unlocked_model=None, unlocked_prompts: list[str] | None = None, unlocked_label: str = "",
              mode: str = "norm-preserving") -> Necessity:
    """Project the key out at every layer from the Unlocked run and from the steered model; random directions too.

    The steered run is checked, not tested: the projection sits after the injection at every
    layer, so it removes what the key wrote by construction and only the rotation's norm
    change can survive; a survival near 1 there would mean the hooks miss the injection.
    """
    runs: list[tuple[str, object, list[str], Condition]] = []
    if unlocked_model is not None or unlocked_prompts is not None:
        runs.append((unlocked_label or "Unlocked run", unlocked_model or model, unlocked_prompts or prompts,
                     no_condition))
    runs.append((f"steered (alpha={alpha:g})", model, prompts, steering_condition(key.steering(alpha=alpha, mode=mode))))
    locked = metric(model, prompts)
    nulls = [random_like(key, s).directions for s in seeds]
    unlocked = np.zeros(len(runs))
    ablated = np.zeros((len(runs), len(SCOPES)))
    rnd = np.zeros((len(runs), len(SCOPES), len(seeds)))
    for r, (_, m, ps, base) in enumerate(runs):
        unlocked[r] = metric(m, ps, base)
        for s, scope in enumerate(SCOPES):
            ablated[r, s] = metric(m, ps, combine(base, projection_condition(key.directions, scope)))
            for i, null in enumerate(nulls):
                rnd[r, s, i] = metric(m, ps, combine(base, projection_condition(null, scope)))
    surv = np.vectorize(survival)
    return Necessity([r[0] for r in runs], list(SCOPES), locked, unlocked, ablated, rnd.mean(-1), rnd.min(-1),
                     surv(ablated, locked, unlocked[:, None]), surv(rnd.mean(-1), locked, unlocked[:, None]))


@dataclass
class Patching:
    """Unlocked -> Locked activation patching at one layer at a time (last prompt token); arrays ``[layer]``."""

    locked: float
    unlocked: float
    patched: np.ndarray  # the Unlocked run's residual written into the Locked run at layer l
    control: np.ndarray  # another prompt's Locked residual written the same way


def activation_patching(model, prompts: list[str], metric: Metric, unlocked_model=None,
                        unlocked_prompts: list[str] | None = None) -> Patching:
    """Patch the Unlocked run's last-token residual into the Locked run, layer by layer.

    The control writes the Locked residual of the next prompt (rolled by one): a foreign state
    of the same kind, which moves the metric only as far as any replacement does.
    """
    donor = last_token_resid(unlocked_model or model, unlocked_prompts or prompts)
    own = last_token_resid(model, prompts)
    shifted = own.roll(1, dims=0)
    n_layers = model.cfg.n_layers
    patched = [metric(model, prompts, patch_condition(layer, donor[:, layer])) for layer in range(n_layers)]
    control = [metric(model, prompts, patch_condition(layer, shifted[:, layer])) for layer in range(n_layers)]
    return Patching(metric(model, prompts), metric(unlocked_model or model, unlocked_prompts or prompts),
                    np.array(patched), np.array(control))


@dataclass
class AblationResult:
    model: str
    metric: str
    alpha: float  # the reference alpha: the key at all layers, and the KL it makes
    n_prompts: int
    null_seeds: list[int]
    relative_depth: np.ndarray
    no_key: float
    all_layers: float
    sufficiency: Sufficiency
    necessity: Necessity
    patching: Patching | None = None  # None without an Unlocked run
    notes: list[str] = field(default_factory=list)


def layer_ablation(model, prompts: list[str], key, metric: Metric, alpha: float, alphas: list[float],
                   seeds: list[int], unlocked_model=None, unlocked_prompts: list[str] | None = None,
                   unlocked_label: str = "", mode: str = "norm-preserving", model_name: str = "",
                   progress: bool = True) -> AblationResult:
    """Sufficiency, necessity and (with an Unlocked run) activation patching of ``key`` on ``model``."""
    has_unlocked = unlocked_model is not None or unlocked_prompts is not None
    suff = sufficiency(model, prompts, key, metric, alphas, alpha, seeds, mode, progress=progress)
    nec = necessity(model, prompts, key, metric, alpha, seeds, unlocked_model, unlocked_prompts, unlocked_label, mode)
    patch = activation_patching(model, prompts, metric, unlocked_model, unlocked_prompts) if has_unlocked else None
    notes = [] if has_unlocked else ["no Unlocked run: necessity from the steered model only, no activation patching"]
    return AblationResult(model_name, metric.name, alpha, len(prompts), list(seeds),
                          relative_depth(model.cfg.n_layers), metric(model, prompts),
                          metric(model, prompts, steering_condition(key.steering(alpha=alpha, mode=mode))),
                          suff, nec, patch, notes)


# ---- figure and command line -----------------------------------------------------------------------------


def plot_ablation(result: AblationResult, path: str | Path) -> None:
    plt = pyplot()
    s = result.sufficiency
    x = result.relative_depth
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    colors = plt.cm.viridis(np.linspace(0, 0.85, len(s.alphas)))

    ax = axes[0, 0]
    for j, alpha in enumerate(s.alphas):
        ax.plot(x, s.key[0, :, j], "o-", color=colors[j], label=f"key, alpha {alpha:g}")
        ax.plot(x, s.random_mean[0, :, j], ":", color=colors[j], alpha=0.8)
    if result.patching is not None:
        ax.plot(x, result.patching.patched, "k^-", label="patch Unlocked -> Locked (ceiling)")
        ax.plot(x, result.patching.control, "kv:", label="patch another Locked prompt (control)")
    ax.set_title("one layer at a time (dotted: random directions, same alpha)", fontsize=10)

    ax = axes[0, 1]
    j = int(np.argmin(np.abs(np.array(s.alphas) - result.alpha)))
    for w, marker in zip((1, 2), ("s", "D")):
        ax.plot(x, s.key[w, :, j], marker + "-", label=f"key, {WINDOW_LABELS[s.windows[w]]}")
        ax.plot(x, s.random_mean[w, :, j], marker + ":", alpha=0.7, label=f"random, {WINDOW_LABELS[s.windows[w]]}")
    ax.set_title(f"cumulative windows at alpha {s.alphas[j]:g}", fontsize=10)

    ax = axes[1, 0]
    ax.plot(x, s.matched_key, "o-", color="C0", label="key, layer l only")
    ax.plot(x, s.matched_random_mean, "o:", color="C3", label=f"random, layer l only (mean of {len(result.null_seeds)})")
    ax.plot(x, s.matched_random_max, "v", color="C3", alpha=0.6, label="random, max")
    for values, kls, color in ((s.matched_key, s.matched_kl, "C0"), (s.matched_random_mean, s.matched_random_kl, "C3")):
        for i in np.flatnonzero(kls < 0.9 * s.kl_target):  # the target was out of reach below the alpha cap
            ax.annotate(f"KL {kls[i]:.2g}", (x[i], values[i]), xytext=(3, -10), textcoords="offset points",
                        fontsize=7, color=color)
    ax.set_title(f"one layer, alpha matched on KL at the decision token ({s.kl_target:.3g} nats = key at all layers;\n"
                 f"labels: the KL reached where the target is out of reach at alpha <= {s.alpha_cap:g})", fontsize=9)

    for ax in (axes[0, 0], axes[0, 1], axes[1, 0]):
        ax.axhline(result.all_layers, color="green", ls="--", lw=1, label=f"key at all layers, alpha {result.alpha:g}")
        ax.axhline(result.no_key, color="gray", ls="--", lw=1, label="no key")
        ax.set_xlabel("relative depth of layer l")
        ax.set_ylabel(result.metric if len(result.metric) < 40 else "metric")
        ax.legend(fontsize=7)

    ax = axes[1, 1]
    nec = result.necessity
    labels = [f"{run}\n{scope}" for run in nec.runs for scope in nec.scopes]
    pos = np.arange(len(labels))
    ax.bar(pos - 0.2, nec.survival.ravel(), 0.4, label="key projected out")
    ax.bar(pos + 0.2, nec.random_survival.ravel(), 0.4, label=f"random directions projected out ({len(result.null_seeds)})")
    ax.axhline(1, color="gray", lw=0.8)
    ax.axhline(0, color="gray", lw=0.8)
    ax.set_xticks(pos, labels, fontsize=8)
    ax.set_ylabel("share of the capability that survives")
    ax.set_title("necessity: project the direction out at every layer (last token / all positions)", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle(f"Ablation of the key: {result.model}, {result.n_prompts} prompts; metric: {result.metric}",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    p.add_argument("--null-seeds", type=positive_int, default=3, help="random directions per control (default 3)")
    p.add_argument("--max-new-tokens", type=positive_int, default=40, help="budget of generation metrics")


def choose_metric(args, run) -> Metric:
    """The metric the arguments ask for; answer-checking ones only where answers exist."""
    if args.metric != "logit_diff":
        scorers = run.scorers()
        if args.metric not in scorers:
            raise ValueError(f"--metric {args.metric} checks answers, which {args.model} with these prompts does not "
                             f"have ({sorted(scorers) or 'none'} available): use --task FILE or --metric logit_diff")
        return Metric(args.metric, score=scorers[args.metric], max_new_tokens=args.max_new_tokens)
    tokens = args.tokens or (["T", REST] if run.is_organism else None)
    if tokens:
        return token_pair_metric(run.model, len(run.prompts), *tokens)
    if not run.has_unlocked:
        raise ValueError("the logit difference needs --tokens A B or an Unlocked run whose top next token it contrasts "
                         "with the Locked run's (--unlocked-prompts, --unlocked-model or --task)")
    return decision_token_metric(next_token_logprobs(run.model, run.prompts), next_token_logprobs(*run.unlocked_run()))


def run(args) -> AblationResult:
    r = resolve_run(args)
    metric = choose_metric(args, r)
    result = layer_ablation(r.model, r.prompts, r.key, metric, r.alpha, args.alphas, list(range(args.null_seeds)),
                            r.unlocked_model, r.unlocked_prompts, r.unlocked_label, model_name=args.model)
    out = write_outputs(result, plot_ablation, args.out or "runs/ablation", "ablation")
    print(report(result))
    print(f"wrote {out}/ablation.json and ablation.png")
    return result


def report(result: AblationResult) -> str:
    """The result as text: every key number beside its control."""
    s, lines = result.sufficiency, [f"{result.metric}: no key {result.no_key:.3f}, key at all layers "
                                    f"(alpha {result.alpha:g}) {result.all_layers:.3f}"]
    lines.append(f"sufficiency (key / random mean / random max), {len(result.null_seeds)} random directions:")
    for w, window in enumerate(s.windows):
        for layer in range(len(result.relative_depth)):
            cells = "  ".join(f"a{a:g} {s.key[w, layer, j]:+.2f}/{s.random_mean[w, layer, j]:+.2f}/"
                              f"{s.random_max[w, layer, j]:+.2f}" for j, a in enumerate(s.alphas))
            lines.append(f"  {WINDOW_LABELS[window]:12s} l={layer}: {cells}")
    lines.append(f"one layer, KL-matched to {s.kl_target:.3g} nats (key / random mean / random max):")
    for layer in range(len(result.relative_depth)):
        lines.append(f"  l={layer}: alpha {s.matched_alpha[layer]:.3g} (KL {s.matched_kl[layer]:.3g}) "
                     f"{s.matched_key[layer]:+.2f} / {s.matched_random_mean[layer]:+.2f} / "
                     f"{s.matched_random_max[layer]:+.2f} (random KL {s.matched_random_kl[layer]:.3g})")
    n = result.necessity
    lines.append(f"necessity (Locked {n.locked:+.3f}); survival of the key's projection / of random projections:")
    for r, name in enumerate(n.runs):
        cells = "  ".join(f"{scope}: {n.ablated[r, s]:+.3f} ({n.survival[r, s]:.2f}) / {n.random_mean[r, s]:+.3f} "
                          f"({n.random_survival[r, s]:.2f})" for s, scope in enumerate(n.scopes))
        lines.append(f"  {name} {n.unlocked[r]:+.3f}: {cells}")
    if result.patching is not None:
        p = result.patching
        lines.append(f"patching Unlocked -> Locked per layer (Locked {p.locked:+.3f}, Unlocked {p.unlocked:+.3f}): "
                     + "  ".join(f"l{i} {v:+.2f} (ctrl {c:+.2f})" for i, (v, c) in enumerate(zip(p.patched, p.control))))
    lines += result.notes
    return "\n".join(lines)


main = command_line(__doc__, add_arguments, run)


if __name__ == "__main__":
    main()
