"""Logit lens at the last prompt token: where does the key's push toward the opener become readable?

At the last prompt token, every layer's residual (``blocks.{l}.hook_resid_post``) is read
through the final norm and the unembedding. Per layer: the probability of the tokens that
open the unlocked behaviour, the entropy, and the entropy over the *other* tokens
(renormalised: how decided the read-out is apart from the opener, which P -> 1 alone does not
imply), for

- no key, and the key at every layer at its own hook (the paper's intervention);
- random directions of the key's norms steered the same way (the null of "any push of this
  strength"), ``--null-seeds`` of them (default 20), with the key's rank among them;
- the direct path: the no-key residual plus, for every layer j <= l, the change the key's
  formula makes to the *no-key* state at j (``rot(h_j) - h_j``): the injection with no layer
  reacting to it; the same for the random directions, so that the model's reaction (steered
  minus direct) is compared between the key and a random push;
- single-site injection: the key at layer l only, read at layers > l only, beside random
  directions at the same site.

The last layer's lens equals the model's real logits (tested).

    mkt analyze logit_lens --model organism:target-base --tokens T
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from analyses._common import (
    UnlockedRunOptions,
    add_model_key_arguments,
    add_unlocked_arguments,
    pyplot,
    relative_depth,
    resolve_run,
    save_figure,
    write_outputs,
)
from analyses.contract import Analysis
from mkt.activations import last_token_resid, prompt_states
from mkt.cliargs import finite_float, nonnegative_int, positive_int
from mkt.conditions import next_token_logprobs
from mkt.eval.stats import empirical_p_value
from mkt.intervention import MODES
from mkt.key import random_like
from mkt.models import PER_HEAD_HOOKS, single_token_id
from mkt.steering import Steering


@torch.no_grad()
def lens_logits(model, residual: Float[Tensor, "... d"]) -> Float[Tensor, "... vocab"]:
    """Read residual-stream vectors through the final norm and the unembedding."""
    return model.unembed(model.ln_final(residual))


def entropy(logits: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """Shannon entropy in nats of softmax(logits)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def entropy_excluding(logp: Float[Tensor, "... vocab"], token_ids: Int[Tensor, "... m"]) -> Float[Tensor, "..."]:
    """Entropy in nats of the distribution over every token but ``token_ids``, renormalised."""
    rest = logp.scatter(-1, token_ids, float("-inf"))
    rest = torch.log_softmax(rest, -1)
    return -(rest.exp() * torch.nan_to_num(rest, neginf=0.0)).sum(-1)


def injection_deltas(states: Float[Tensor, "n layer d"], directions: Float[Tensor, "layer d"], alpha: float,
                     mode: str = "norm-preserving") -> Float[Tensor, "n layer d"]:
    """What the steering formula would change in ``states`` (each layer's state at the key's hook): f(h) - h."""
    units = directions.float() / directions.float().norm(dim=-1, keepdim=True)
    return MODES[mode](states.float(), units, alpha) - states.float()


def residual_changes(model, prompts: list[str], states: Float[Tensor, "n layer w"], directions: Float[Tensor, "layer w"],
                     alpha: float, mode: str, hook: str) -> Float[Tensor, "n layer d"]:
    """The change each layer's injection alone makes to the residual stream, from the no-key run.

    At a residual-width hook that is the formula's change itself (``injection_deltas``). At a
    per-head hook the change passes through W_O and, in Gemma and OLMo-2, a norm on the
    attention output: it is measured instead, steering layer l alone and reading
    ``hook_resid_mid`` of layer l against the no-key run.
    """
    if hook not in PER_HEAD_HOOKS:
        return injection_deltas(states, directions, alpha, mode)
    clean = prompt_states(model, prompts, hook="hook_resid_mid")
    changes = []
    for layer in range(model.cfg.n_layers):
        with Steering(directions, alpha, mode, [layer], hook=hook).attach(model):
            changes.append(prompt_states(model, prompts, [layer], hook="hook_resid_mid")[:, 0] - clean[:, layer])
    return torch.stack(changes, dim=1)


def direct_path(clean: Float[Tensor, "n layer d"], deltas: Float[Tensor, "n layer d"]) -> Float[Tensor, "n layer d"]:
    """The no-key residual plus every change made at layers <= l: the steered stream if no layer reacted.

    ``deltas`` from ``injection_deltas`` of the *no-key* states, so that nothing of the
    steered run's reaction to earlier layers enters (a change at any hook point of block j
    reaches the residual after block j unchanged along the direct path).
    """
    return clean + deltas.cumsum(dim=1)


@torch.no_grad()
def lens_summary(model, resid: Float[Tensor, "n layer d"], token_ids: Int[Tensor, "n m"], batch_size: int = 16
                 ) -> tuple[Float[Tensor, "n layer"], Float[Tensor, "n layer"], Float[Tensor, "n layer"]]:
    """(entropy, total probability of each row's ``token_ids``, entropy over the other tokens) of the lens."""
    ent, prob, rest = [], [], []
    for start in range(0, resid.shape[0], batch_size):
        x = resid[start : start + batch_size].to(device=model.cfg.device, dtype=model.cfg.dtype)
        logp = torch.log_softmax(lens_logits(model, x).double(), -1).cpu()
        ent.append(-(logp.exp() * logp).sum(-1))
        ids = token_ids[start : start + batch_size, None, :].expand(-1, logp.shape[1], -1)
        prob.append(logp.gather(-1, ids).exp().sum(-1))
        rest.append(entropy_excluding(logp, ids))
    return torch.cat(ent), torch.cat(prob), torch.cat(rest)


def steered_resid(model, prompts: list[str], steering: Steering | None, batch_size: int = 32
                  ) -> Float[Tensor, "n layer d"]:
    """``last_token_resid`` with ``steering`` attached: the residual after each layer's block (and injection)."""
    if steering is None:
        return last_token_resid(model, prompts, batch_size=batch_size)
    with steering.attach(model):
        return last_token_resid(model, prompts, batch_size=batch_size)


@dataclass
class LogitLensResult:
    """Per-layer means over prompts; ``*_random`` ``[seed, layer]``, one row per random direction."""

    model: str
    hook: str  # the key's hook point, where every steering acts
    tokens: list[str]
    alpha: float
    site_alpha: float
    null_seeds: list[int]
    site_seeds: list[int]
    relative_depth: np.ndarray
    entropy: np.ndarray  # [layer], no key
    entropy_key: np.ndarray
    entropy_random: np.ndarray  # [seed, layer]
    entropy_direct: np.ndarray
    rest_entropy: np.ndarray  # [layer]: entropy over the tokens other than ``tokens``, renormalised; no key
    rest_entropy_key: np.ndarray
    rest_entropy_random: np.ndarray  # [seed, layer]
    rest_entropy_direct: np.ndarray
    token_prob: np.ndarray  # [layer]: P(any of the tokens), no key
    token_prob_key: np.ndarray
    token_prob_random: np.ndarray  # [seed, layer]
    token_prob_direct: np.ndarray  # the no-key residual + the key's changes to the no-key states, no layer reacting
    token_prob_random_direct: np.ndarray  # [seed, layer]: the same for each random direction
    p_final: float  # (1 + #random draws with final-layer P(tokens) >= the key's) / (1 + draws)
    site_key: np.ndarray  # [inject layer, read layer]: P(tokens) with the key at the inject layer only; NaN unless read > inject
    site_random: np.ndarray  # [seed, inject, read] for the site seeds
    n_prompts: int


def single_site(model, prompts: list[str], directions: Float[Tensor, "layer d"], alpha: float,
                token_ids: Int[Tensor, "n m"], mode: str, hook: str) -> np.ndarray:
    """[inject, read] lens probability with ``directions`` at one layer (at ``hook``), NaN where read <= inject."""
    n_layers = model.cfg.n_layers
    out = np.full((n_layers, n_layers), np.nan)
    for layer in range(n_layers - 1):  # a site at the last layer has nothing downstream
        resid = steered_resid(model, prompts, Steering(directions, alpha, mode, [layer], hook=hook))
        out[layer, layer + 1 :] = lens_summary(model, resid, token_ids)[1].mean(0)[layer + 1 :].numpy()
    return out


def logit_lens_sharpening(model, prompts: list[str], key, alpha: float, token_ids: Int[Tensor, "n m"],
                          tokens: list[str], seeds: list[int], site_alpha: float, mode: str = "norm-preserving",
                          model_name: str = "", site_seeds: list[int] | None = None) -> LogitLensResult:
    """Lens read-outs per layer: no key, key, random directions, direct paths, single sites, all at ``key.hook``."""
    site_seeds = list(seeds[:3]) if site_seeds is None else list(site_seeds)
    clean = steered_resid(model, prompts, None)
    at_hook = prompt_states(model, prompts, hook=key.hook)

    def summary(resid):
        return tuple(x.mean(0).numpy() for x in lens_summary(model, resid, token_ids))

    def steered(directions):
        return summary(steered_resid(model, prompts, Steering(directions, alpha, mode, hook=key.hook)))

    def direct(directions):
        return summary(direct_path(clean, residual_changes(model, prompts, at_hook, directions, alpha, mode, key.hook)))

    none, keyed, key_direct = summary(clean), steered(key.directions), direct(key.directions)
    nulls = {s: random_like(key, s).directions for s in sorted({*seeds, *site_seeds})}
    rnd = np.stack([np.stack(steered(nulls[s])) for s in seeds])  # [seed, (ent, prob, rest), layer]
    rnd_direct = np.stack([direct(nulls[s])[1] for s in seeds])
    site_r = np.stack([single_site(model, prompts, nulls[s], site_alpha, token_ids, mode, key.hook)
                       for s in site_seeds]) if site_seeds else np.zeros((0, model.cfg.n_layers, model.cfg.n_layers))
    return LogitLensResult(model_name, key.hook, tokens, alpha, site_alpha, list(seeds), site_seeds,
                           relative_depth(model.cfg.n_layers), none[0], keyed[0], rnd[:, 0], key_direct[0],
                           none[2], keyed[2], rnd[:, 2], key_direct[2], none[1], keyed[1], rnd[:, 1], key_direct[1],
                           rnd_direct, empirical_p_value(keyed[1][-1], rnd[:, 1, -1]),
                           single_site(model, prompts, key.directions, site_alpha, token_ids, mode, key.hook),
                           site_r, len(prompts))


def plot_logit_lens(result: LogitLensResult, path: str | Path) -> None:
    plt = pyplot()

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 5))
    x = result.relative_depth
    n_rnd = len(result.null_seeds)
    b.plot(x, result.token_prob, "o-", color="gray", label="no key")
    b.plot(x, result.token_prob_key, "s-", color="C0", label=f"key at every layer (alpha {result.alpha:g})")
    b.plot(x, result.token_prob_direct, "x--", color="C0", label="key, direct path (no layer reacting)")
    if n_rnd:
        b.plot(x, result.token_prob_random.mean(0), "v-", color="C3", label=f"random directions, steered (mean of {n_rnd})")
        b.fill_between(x, result.token_prob_random.min(0), result.token_prob_random.max(0), color="C3", alpha=0.15,
                       label="random, steered, min to max")
        b.plot(x, result.token_prob_random_direct.mean(0), "x--", color="C3", label="random, direct path (mean)")
    b.set_ylabel(f"P({' or '.join(result.tokens)})")
    b.set_ylim(0, 1)
    b.set_title(f"P(opener); key vs {n_rnd} random draws at the last layer: p = {result.p_final:.2g}", fontsize=10)
    for y, yk, yr, yd, ls in ((result.entropy, result.entropy_key, result.entropy_random, result.entropy_direct, "-"),
                              (result.rest_entropy, result.rest_entropy_key, result.rest_entropy_random,
                               result.rest_entropy_direct, ":")):
        which = "entropy" if ls == "-" else "entropy over the other tokens"
        a.plot(x, y, "o" + ls, color="gray", label=f"{which}: no key")
        a.plot(x, yk, "s" + ls, color="C0", label=f"{which}: key")
        a.plot(x, yd, "x" + ls, color="C2", label=f"{which}: key, direct path")
        if n_rnd:
            a.plot(x, yr.mean(0), "v" + ls, color="C3", label=f"{which}: random (mean)")
    a.set_ylabel("logit-lens entropy (nats)")
    a.set_title("solid: full distribution; dotted: without the opener, renormalised", fontsize=10)
    for ax in (a, b):
        ax.set_xlabel("relative depth of layer read")
        ax.legend(fontsize=7)
    n = len(x)
    for inject in range(n - 1):
        color = plt.cm.viridis(inject / max(1, n - 2))
        c.plot(x, result.site_key[inject], "o-", color=color, label=f"key at layer {inject} only")
        if len(result.site_seeds):
            c.plot(x, result.site_random[:, inject].mean(0), ":", color=color)
    c.plot(x, result.token_prob, "-", color="gray", lw=3, alpha=0.4, label="no key")
    c.set_xlabel("relative depth of layer read (downstream of the site only)")
    c.set_ylabel(f"P({' or '.join(result.tokens)})")
    c.set_ylim(0, 1)
    c.set_title(f"single-site injection, alpha {result.site_alpha:g} (dotted: random, mean of "
                f"{len(result.site_seeds)}, descriptive)", fontsize=10)
    c.legend(fontsize=7)
    save_figure(fig, path, f"Logit lens at the last prompt token: {result.model}, {result.n_prompts} prompts, key at "
                f"{result.hook}")


@dataclass(frozen=True)
class LogitLensOptions(UnlockedRunOptions):
    """The logit lens's options (``add_arguments``): the tokens read and the random draws beside the key."""

    tokens: list[str] | None
    null_seeds: int
    site_seeds: int
    site_alpha: float


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_key_arguments(p)
    add_unlocked_arguments(p)
    p.add_argument("--tokens", nargs="+", default=None,
                   help="tokens that open the unlocked behaviour (default on organisms: T, the step-by-step opener; "
                   "elsewhere each prompt's top next token in the Unlocked run)")
    p.add_argument("--null-seeds", type=positive_int, default=20,
                   help="random directions steered at every layer, and their direct paths (default 20)")
    p.add_argument("--site-seeds", type=nonnegative_int, default=3,
                   help="random directions beside each single site (default 3: descriptive)")
    p.add_argument("--site-alpha", type=finite_float, default=1.0,
                   help="strength of the single-site injections (default 1.0: one layer at the pack's alpha barely "
                   "moves the output)")


def token_ids_for(options: LogitLensOptions, run) -> tuple[Int[Tensor, "n m"], list[str]]:
    """The tokens whose lens probability is read, per prompt: given, T on organisms, or the Unlocked run's top token."""
    tokens = options.tokens or (["T"] if run.is_organism else None)
    n = len(run.prompts)
    if tokens:
        return torch.tensor([single_token_id(run.model, t) for t in tokens]).expand(n, -1), tokens
    if not run.has_unlocked:
        raise ValueError("pass --tokens, or an Unlocked run (--unlocked-prompts, --unlocked-model or --task) whose top "
                         "next token is read")
    top = next_token_logprobs(*run.unlocked_run()).argmax(-1)[:, None]
    return top, ["the Unlocked run's top token"]


def run(options: LogitLensOptions) -> LogitLensResult:
    r = resolve_run(options)
    token_ids, tokens = token_ids_for(options, r)
    result = logit_lens_sharpening(r.model, r.prompts, r.key, r.alpha, token_ids, tokens,
                                   list(range(options.null_seeds)), options.site_alpha, model_name=options.model,
                                   site_seeds=list(range(min(options.site_seeds, options.null_seeds))))
    out = write_outputs(result, plot_logit_lens, options.out or "runs/logit_lens", "logit_lens")
    print(report(result))
    print(f"wrote {out}/logit_lens.json and logit_lens.png")
    return result


def report(result: LogitLensResult) -> str:
    """The result as text, per layer: P(tokens) and the entropies for every condition."""
    lines = [f"key at {result.hook}, alpha {result.alpha:g}; {len(result.null_seeds)} random draws; "
             f"final-layer P: key {result.token_prob_key[-1]:.3f} vs random max "
             f"{result.token_prob_random[:, -1].max():.3f}, p = {result.p_final:.3g}",
             "layer  depth  P: none    key  direct | random mean/max  direct mean | entropy none/key/direct/random"
             " | other-token entropy none/key/direct/random"]
    for i, d in enumerate(result.relative_depth):
        rp, rd = result.token_prob_random[:, i], result.token_prob_random_direct[:, i]
        lines.append(
            f"{i:5d}  {d:5.2f}  {result.token_prob[i]:7.3f} {result.token_prob_key[i]:6.3f} "
            f"{result.token_prob_direct[i]:6.3f} | {rp.mean():6.3f}/{rp.max():.3f}  {rd.mean():6.3f} | "
            f"{result.entropy[i]:.3f}/{result.entropy_key[i]:.3f}/{result.entropy_direct[i]:.3f}/"
            f"{result.entropy_random[:, i].mean():.3f} | {result.rest_entropy[i]:.3f}/{result.rest_entropy_key[i]:.3f}/"
            f"{result.rest_entropy_direct[i]:.3f}/{result.rest_entropy_random[:, i].mean():.3f}")
    lines.append(f"single site (alpha {result.site_alpha:g}), P(tokens) at the last layer: " + "  ".join(
        f"l{i} key {result.site_key[i, -1]:.3f} random "
        + (f"{result.site_random[:, i, -1].mean():.3f}/{result.site_random[:, i, -1].max():.3f}"
           if len(result.site_seeds) else "-")
        for i in range(len(result.relative_depth) - 1)))
    return "\n".join(lines)


ANALYSIS = Analysis("logit_lens", __doc__, add_arguments, LogitLensOptions, run)

if __name__ == "__main__":
    ANALYSIS.main()
