"""Logit-lens sharpening: does the key make each layer's read-out more decided?

At the last prompt token, every layer's residual (``blocks.{l}.hook_resid_post``) is read
through the final norm and the unembedding. Per layer: the entropy of that distribution
and the probability of the tokens that open the unlocked behaviour, with vs without the
key. The last layer's lens equals the model's real logits (tested).

    mkt analyze logit_lens --model organism:target-base --tokens T
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from analyses._common import (
    add_model_key_arguments,
    command_line,
    pyplot,
    relative_depth,
    resolve,
    write_outputs,
)
from mkt.models import resid_hook_name, single_token_id, tokenize_left_padded
from mkt.steering import Steering


@torch.no_grad()
def lens_logits(model, residual: Float[Tensor, "... d"]) -> Float[Tensor, "... vocab"]:
    """Read residual-stream vectors through the final norm and the unembedding."""
    return model.unembed(model.ln_final(residual))


def entropy(logits: Float[Tensor, "... vocab"]) -> Float[Tensor, "..."]:
    """Shannon entropy in nats of softmax(logits)."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@torch.no_grad()
def last_token_lens(model, prompts: list[str], steering: Steering | None = None, batch_size: int = 32
                    ) -> Float[Tensor, "n layer vocab"]:
    """Log-probabilities of the logit lens at the last prompt token, every layer."""
    names = [resid_hook_name(layer) for layer in range(model.cfg.n_layers)]
    out = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = tokenize_left_padded(model, prompts[start : start + batch_size])
        if steering is not None:
            with steering.attach(model):
                _, cache = model.run_with_cache(ids, attention_mask=mask, names_filter=names)
        else:
            _, cache = model.run_with_cache(ids, attention_mask=mask, names_filter=names)
        resid = torch.stack([cache[n][:, -1] for n in names], dim=1)
        out.append(torch.log_softmax(lens_logits(model, resid).double(), -1).cpu())
    return torch.cat(out)


@dataclass
class LogitLensResult:
    """Per-layer means over prompts; ``*_key`` with the key applied."""

    model: str
    tokens: list[str]
    alpha: float
    relative_depth: np.ndarray
    entropy: np.ndarray
    entropy_key: np.ndarray
    token_prob: np.ndarray  # P(any of the tokens) per layer
    token_prob_key: np.ndarray
    n_prompts: int


def logit_lens_sharpening(model, prompts: list[str], key, alpha: float, tokens: list[str],
                          mode: str = "norm-preserving", model_name: str = "") -> LogitLensResult:
    """Entropy and target-token probability per layer, with vs without the key."""
    ids = [single_token_id(model, t) for t in tokens]
    results = []
    for steering in (None, key.steering(alpha=alpha, mode=mode)):
        logp = last_token_lens(model, prompts, steering)
        results.append((entropy(logp).mean(0).numpy(), logp[..., ids].exp().sum(-1).mean(0).numpy()))
    (ent, prob), (ent_k, prob_k) = results
    return LogitLensResult(model_name, tokens, alpha, relative_depth(model.cfg.n_layers), ent, ent_k, prob, prob_k,
                           len(prompts))


def plot_logit_lens(result: LogitLensResult, path: str | Path) -> None:
    plt = pyplot()

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = result.relative_depth
    a.plot(x, result.entropy, "o-", label="without key")
    a.plot(x, result.entropy_key, "s-", label=f"with key (alpha={result.alpha})")
    a.set_xlabel("relative depth of layer")
    a.set_ylabel("logit-lens entropy (nats)")
    a.legend()
    b.plot(x, result.token_prob, "o-", label="without key")
    b.plot(x, result.token_prob_key, "s-", label=f"with key (alpha={result.alpha})")
    b.set_xlabel("relative depth of layer")
    b.set_ylabel(f"P({' or '.join(result.tokens)})")
    b.set_ylim(0, 1)
    b.legend()
    fig.suptitle(f"Logit-lens sharpening at the last prompt token: {result.model}, {result.n_prompts} prompts")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_key_arguments(p)
    p.add_argument("--tokens", nargs="+", default=["T"],
                   help="tokens that open the unlocked behaviour (default T, the organisms' step-by-step opener)")


def run(args) -> LogitLensResult:
    model, key, alpha, prompts, _ = resolve(args)
    result = logit_lens_sharpening(model, prompts, key, alpha, args.tokens, model_name=args.model)
    out = write_outputs(result, plot_logit_lens, args.out or "runs/logit_lens", "logit_lens")
    print("layer  depth  entropy  entropy+key  P(tokens)  P(tokens)+key")
    for i, d in enumerate(result.relative_depth):
        print(f"{i:5d}  {d:5.2f}  {result.entropy[i]:7.3f}  {result.entropy_key[i]:11.3f}  "
              f"{result.token_prob[i]:9.3f}  {result.token_prob_key[i]:13.3f}")
    print(f"wrote {out}/logit_lens.json and logit_lens.png")
    return result


main = command_line(__doc__, add_arguments, run)


if __name__ == "__main__":
    main()
