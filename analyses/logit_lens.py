"""Logit-lens sharpening: does the key make each layer's read-out more decided, beyond what it injects?

At the last prompt token, every layer's residual (``blocks.{l}.hook_resid_post``) is read
through the final norm and the unembedding. Per layer: the entropy of that distribution
and the probability of the tokens that open the unlocked behaviour, for

- no key, and the key at every layer (the paper's intervention);
- random directions of the key's norms steered the same way (the null of "any push of this
  strength");
- the direct path: the unsteered residual plus the vectors the key injected at layers <= l,
  with no layer reacting to them (what the lens reads of the injection itself);
- single-site injection: the key at layer l only, read at layers > l only, beside random
  directions at the same site.

The last layer's lens equals the model's real logits (tested).

    mkt analyze logit_lens --model organism:target-base --tokens T
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from analyses._common import (
    add_model_key_arguments,
    add_unlocked_arguments,
    command_line,
    pyplot,
    relative_depth,
    resolve_run,
    write_outputs,
)
from analyses.ablation import next_token_logprobs
from mkt.activations import last_token_resid
from mkt.cliargs import finite_float, positive_int
from mkt.key import random_like
from mkt.models import resid_hook_name, single_token_id
from mkt.steering import Steering


@torch.no_grad()
def lens_logits(model, residual: Float[Tensor, "... d"]) -> Float[Tensor, "... vocab"]:
    """Read residual-stream vectors through the final norm and the unembedding."""
    return model.unembed(model.ln_final(residual))


def entropy(logits: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """Shannon entropy in nats of softmax(logits)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def direct_path(clean: Float[Tensor, "n layer d"], injected: Float[Tensor, "n layer d"]) -> Float[Tensor, "n layer d"]:
    """The unsteered residual plus every vector injected at layers <= l: the steered stream if no layer reacted."""
    return clean + injected.cumsum(dim=1)


@torch.no_grad()
def lens_summary(model, resid: Float[Tensor, "n layer d"], token_ids: Int[Tensor, "n m"], batch_size: int = 16
                 ) -> tuple[Float[Tensor, "n layer"], Float[Tensor, "n layer"]]:
    """(entropy, total probability of each row's ``token_ids``) of the lens, without keeping the vocab axis."""
    ent, prob = [], []
    for start in range(0, resid.shape[0], batch_size):
        x = resid[start : start + batch_size].to(device=model.cfg.device, dtype=model.cfg.dtype)
        logp = torch.log_softmax(lens_logits(model, x).double(), -1).cpu()
        ent.append(-(logp.exp() * logp).sum(-1))
        ids = token_ids[start : start + batch_size, None, :].expand(-1, logp.shape[1], -1)
        prob.append(logp.gather(-1, ids).exp().sum(-1))
    return torch.cat(ent), torch.cat(prob)


def steered_resid(model, prompts: list[str], steering: Steering | None, batch_size: int = 32
                  ) -> Float[Tensor, "n layer d"]:
    """``last_token_resid`` with ``steering`` attached: the residual after each layer's injection."""
    if steering is None:
        return last_token_resid(model, prompts, batch_size=batch_size)
    with steering.attach(model):
        return last_token_resid(model, prompts, batch_size=batch_size)


def injected_vectors(model, prompts: list[str], steering: Steering, batch_size: int = 32
                     ) -> tuple[Float[Tensor, "n layer d"], Float[Tensor, "n layer d"]]:
    """(steered residual, what the steering added at each layer) at the last prompt token.

    A recording hook registered before the steering's hooks sees each layer's residual
    before the injection; the cache, registered after, sees it after.
    """
    before: dict[int, list[Tensor]] = {layer: [] for layer in range(model.cfg.n_layers)}

    def record(act: Float[Tensor, "batch pos d"], hook, layer: int) -> None:
        if act.shape[1] > 1:
            before[layer].append(act[:, -1].float().cpu())

    hooks = [(resid_hook_name(layer), partial(record, layer=layer)) for layer in before]
    with model.hooks(fwd_hooks=hooks):
        after = steered_resid(model, prompts, steering, batch_size)
    pre = torch.stack([torch.cat(before[layer]) for layer in before], dim=1)
    return after, after - pre


@dataclass
class LogitLensResult:
    """Per-layer means over prompts; ``*_random`` over the null seeds (mean and max)."""

    model: str
    tokens: list[str]
    alpha: float
    site_alpha: float
    null_seeds: list[int]
    relative_depth: np.ndarray
    entropy: np.ndarray  # [layer], no key
    entropy_key: np.ndarray
    entropy_random: np.ndarray
    entropy_direct: np.ndarray
    token_prob: np.ndarray  # [layer]: P(any of the tokens), no key
    token_prob_key: np.ndarray
    token_prob_random: np.ndarray  # mean over seeds
    token_prob_random_max: np.ndarray
    token_prob_direct: np.ndarray  # the unsteered residual + the injected vectors, no layer reacting
    site_key: np.ndarray  # [inject layer, read layer]: P(tokens) with the key at the inject layer only; NaN unless read > inject
    site_random: np.ndarray  # the same for random directions, mean over seeds
    site_random_max: np.ndarray
    n_prompts: int


def single_site(model, prompts: list[str], directions: Float[Tensor, "layer d"], alpha: float,
                token_ids: Int[Tensor, "n m"], mode: str) -> np.ndarray:
    """[inject, read] lens probability with ``directions`` at one layer, NaN where read <= inject."""
    n_layers = model.cfg.n_layers
    out = np.full((n_layers, n_layers), np.nan)
    for layer in range(n_layers - 1):  # a site at the last layer has nothing downstream
        _, prob = lens_summary(model, steered_resid(model, prompts, Steering(directions, alpha, mode, [layer])),
                               token_ids)
        out[layer, layer + 1 :] = prob.mean(0)[layer + 1 :].numpy()
    return out


def logit_lens_sharpening(model, prompts: list[str], key, alpha: float, token_ids: Int[Tensor, "n m"],
                          tokens: list[str], seeds: list[int], site_alpha: float, mode: str = "norm-preserving",
                          model_name: str = "") -> LogitLensResult:
    """Lens entropy and token probability per layer: no key, key, random directions, direct path, single sites."""
    clean = steered_resid(model, prompts, None)
    steered, injected = injected_vectors(model, prompts, key.steering(alpha=alpha, mode=mode))

    def summary(resid):
        ent, prob = lens_summary(model, resid, token_ids)
        return ent.mean(0).numpy(), prob.mean(0).numpy()

    (ent, prob), (ent_k, prob_k), (ent_d, prob_d) = (summary(x) for x in (clean, steered,
                                                                         direct_path(clean, injected)))
    nulls = [random_like(key, s).directions for s in seeds]
    rnd = [summary(steered_resid(model, prompts, Steering(d, alpha, mode))) for d in nulls]
    site_r = np.stack([single_site(model, prompts, d, site_alpha, token_ids, mode) for d in nulls])
    return LogitLensResult(model_name, tokens, alpha, site_alpha, list(seeds), relative_depth(model.cfg.n_layers),
                           ent, ent_k, np.mean([r[0] for r in rnd], 0), ent_d, prob, prob_k,
                           np.mean([r[1] for r in rnd], 0), np.max([r[1] for r in rnd], 0), prob_d,
                           single_site(model, prompts, key.directions, site_alpha, token_ids, mode),
                           site_r.mean(0), site_r.max(0), len(prompts))


def plot_logit_lens(result: LogitLensResult, path: str | Path) -> None:
    plt = pyplot()

    fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 4.6))
    x = result.relative_depth
    label_key = f"key at every layer (alpha {result.alpha:g})"
    label_rnd = f"random directions, same strength ({len(result.null_seeds)}, mean)"
    for ax, y, yk, yr, yd in ((a, result.entropy, result.entropy_key, result.entropy_random, result.entropy_direct),
                              (b, result.token_prob, result.token_prob_key, result.token_prob_random,
                               result.token_prob_direct)):
        ax.plot(x, y, "o-", color="gray", label="no key")
        ax.plot(x, yk, "s-", color="C0", label=label_key)
        ax.plot(x, yr, "v:", color="C3", label=label_rnd)
        ax.plot(x, yd, "x--", color="C2", label="direct path: no-key residual + injected vectors")
        ax.set_xlabel("relative depth of layer read")
    a.set_ylabel("logit-lens entropy (nats)")
    b.fill_between(x, result.token_prob_random, result.token_prob_random_max, color="C3", alpha=0.15,
                   label="random, mean to max")
    b.set_ylabel(f"P({' or '.join(result.tokens)})")
    b.set_ylim(0, 1)
    fig.legend(*b.get_legend_handles_labels(), loc="lower center", ncol=5, fontsize=8)
    n = len(x)
    for inject in range(n - 1):
        color = plt.cm.viridis(inject / max(1, n - 2))
        c.plot(x, result.site_key[inject], "o-", color=color, label=f"key at layer {inject} only")
        c.plot(x, result.site_random[inject], ":", color=color)
    c.plot(x, result.token_prob, "-", color="gray", lw=3, alpha=0.4, label="no key")
    c.set_xlabel("relative depth of layer read (downstream of the site only)")
    c.set_ylabel(f"P({' or '.join(result.tokens)})")
    c.set_ylim(0, 1)
    c.set_title(f"single-site injection, alpha {result.site_alpha:g} (dotted: random)", fontsize=10)
    c.legend(fontsize=7)
    fig.suptitle(f"Logit lens at the last prompt token: {result.model}, {result.n_prompts} prompts", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_key_arguments(p)
    add_unlocked_arguments(p)
    p.add_argument("--tokens", nargs="+", default=None,
                   help="tokens that open the unlocked behaviour (default on organisms: T, the step-by-step opener; "
                   "elsewhere each prompt's top next token in the Unlocked run)")
    p.add_argument("--null-seeds", type=positive_int, default=3, help="random directions per control (default 3)")
    p.add_argument("--site-alpha", type=finite_float, default=1.0,
                   help="strength of the single-site injections (default 1.0: one layer at the pack's alpha barely "
                   "moves the output)")


def token_ids_for(args, run) -> tuple[Int[Tensor, "n m"], list[str]]:
    """The tokens whose lens probability is read, per prompt: given, T on organisms, or the Unlocked run's top token."""
    tokens = args.tokens or (["T"] if run.is_organism else None)
    n = len(run.prompts)
    if tokens:
        return torch.tensor([single_token_id(run.model, t) for t in tokens]).expand(n, -1), tokens
    if not run.has_unlocked:
        raise ValueError("pass --tokens, or an Unlocked run (--unlocked-prompts, --unlocked-model or --task) whose top "
                         "next token is read")
    top = next_token_logprobs(*run.unlocked_run()).argmax(-1)[:, None]
    return top, ["the Unlocked run's top token"]


def run(args) -> LogitLensResult:
    r = resolve_run(args)
    token_ids, tokens = token_ids_for(args, r)
    result = logit_lens_sharpening(r.model, r.prompts, r.key, r.alpha, token_ids, tokens,
                                   list(range(args.null_seeds)), args.site_alpha, model_name=args.model)
    out = write_outputs(result, plot_logit_lens, args.out or "runs/logit_lens", "logit_lens")
    print("layer  depth  P: none    key  random(mean/max)  direct | entropy: none    key  random  direct")
    for i, d in enumerate(result.relative_depth):
        print(f"{i:5d}  {d:5.2f}  {result.token_prob[i]:7.3f} {result.token_prob_key[i]:6.3f}  "
              f"{result.token_prob_random[i]:6.3f}/{result.token_prob_random_max[i]:.3f}  "
              f"{result.token_prob_direct[i]:8.3f} | {result.entropy[i]:13.3f} {result.entropy_key[i]:6.3f} "
              f"{result.entropy_random[i]:7.3f} {result.entropy_direct[i]:7.3f}")
    print(f"single site (alpha {result.site_alpha:g}), P(tokens) at the last layer: "
          + "  ".join(f"l{i} key {result.site_key[i, -1]:.3f} random {result.site_random[i, -1]:.3f}"
                      for i in range(len(result.relative_depth) - 1)))
    print(f"wrote {out}/logit_lens.json and logit_lens.png")
    return result


main = command_line(__doc__, add_arguments, run)


if __name__ == "__main__":
    main()
