"""Reading a model's hook points at prompt positions (the last token by default)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mkt.errors import NonFiniteError
from mkt.models import (
    PER_HEAD_HOOKS,
    RESID_HOOK,
    check_hook,
    check_layers,
    check_prompts,
    resid_hook_name,
    tokenize_left_padded,
)
from mkt.positions import check_position, pool, position_weights


@torch.no_grad()
def prompt_states(
    model,
    prompts: list[str],
    layers: list[int] | None = None,
    hook: str = RESID_HOOK,
    position: str = "last",
    batch_size: int = 32,
    progress: bool = False,
) -> Float[Tensor, "n_prompts n_layers d_model"]:
    """States at ``blocks.{l}.{hook}`` of each prompt, read at ``position``.

    Batched with left padding and the attention mask, caching only the hooks needed.

    Args:
        model: a TransformerBridge.
        prompts: the prompts, already formatted.
        layers: which blocks (default all); the result's layer axis follows this list.
        hook: the hook point within each block (``mkt.models.HOOK_POINTS``).
        position: ``last`` (the paper's), ``mean`` over the prompt, or ``last-N``
            (``mkt.positions``).
        batch_size: prompts per forward pass.
        progress: show a progress bar.

    Returns:
        float32 tensor on CPU, ``[n_prompts, len(layers), width]``: d_model, or at a per-head
        hook (``attn.hook_z``) the heads' outputs side by side, n_heads x d_head.
    """
    check_prompts(prompts)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    check_hook(hook), check_position(position)
    layers = check_layers(layers, model.cfg.n_layers)
    names = [resid_hook_name(layer, hook) for layer in layers]
    stop = max(layers) + 1
    bos = getattr(model.tokenizer, "bos_token_id", None)
    chunks = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="activations", disable=not progress, leave=False):
        ids, mask = tokenize_left_padded(model, prompts[start : start + batch_size])
        _, cache = model.run_with_cache(
            ids, attention_mask=mask, names_filter=names,
            stop_at_layer=stop if stop < model.cfg.n_layers else None,
        )
        weights = position_weights(mask.cpu(), ids.cpu(), bos, position)
        # each block's states to the CPU before stacking: a model split over devices keeps them apart
        chunks.append(torch.stack([pool(_flat(cache[n], hook).cpu(), weights) for n in names], dim=1))
    acts = torch.cat(chunks)
    if not torch.isfinite(acts).all():
        bad = (~torch.isfinite(acts)).any(dim=(0, 2)).nonzero().flatten().tolist()
        raise NonFiniteError(
            f"NaN or inf in the residual stream at layers {[layers[i] for i in bad]}: the model "
            "overflows in its dtype; load it in float32 or bfloat16 instead of float16"
        )
    return acts


def _flat(act: Tensor, hook: str) -> Tensor:
    """``[batch, pos, head, d_head]`` at a per-head hook as ``[batch, pos, head * d_head]``."""
    return act.flatten(-2) if hook in PER_HEAD_HOOKS else act


def last_token_resid(
    model, prompts: list[str], layers: list[int] | None = None, batch_size: int = 32, progress: bool = False
) -> Float[Tensor, "n_prompts n_layers d_model"]:
    """The residual stream after each block (``blocks.{l}.hook_resid_post``) at the last token:
    the paper's reading, :func:`prompt_states` with its defaults."""
    return prompt_states(model, prompts, layers, batch_size=batch_size, progress=progress)
