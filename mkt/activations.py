"""Reading a model's hook points at prompt positions (the last token by default)."""

from __future__ import annotations

from functools import partial

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mkt.errors import NonFiniteError
from mkt.hf_view import StopForward, hooked, layer_outputs, takes_positions, unwrapped_model
from mkt.models import (
    PER_HEAD_HOOKS,
    RESID_HOOK,
    check_hook,
    check_layers,
    check_prompts,
    encode,
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

    Batched with left padding and the attention mask, computing only up to the last block
    needed (no logits). States after each block (``hook_resid_post``) are read on the HF model
    under the bridge (:func:`mkt.hf_view.layer_outputs`: the same modules without the bridge's
    wrappers) unless a hook is on the bridge (a condition of the analyses, ``key.apply``), whose
    edits only the bridge's forward makes. On the HF model, prompts of similar length are batched
    together (a batch's padding costs as much as its tokens); through the bridge they keep their
    order, for hooks that edit rows by their place in the batch.

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
    view = unwrapped_model(model) if hook == RESID_HOOK and not hooked(model) and takes_positions(model) else None
    bos = getattr(model.tokenizer, "bos_token_id", None)
    order = list(range(len(prompts)))
    if view is not None:  # hooks on the bridge may edit rows by their place in a batch (a condition's per-row values)
        order.sort(key=lambda i: len(encode(model.tokenizer, prompts[i])))
    chunks = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="activations", disable=not progress, leave=False):
        ids, mask = tokenize_left_padded(model, [prompts[i] for i in order[start : start + batch_size]])
        if view is not None:
            outputs = layer_outputs(view, ids, mask, layers)
            states = [outputs[layer] for layer in layers]
        else:
            states = [_flat(a, hook) for a in _bridge_states(model, ids, mask, names).values()]
        weights = position_weights(mask.cpu(), ids.cpu(), bos, position)
        # each block's states to the CPU before stacking: a model split over devices keeps them apart
        chunks.append(torch.stack([pool(state.cpu(), weights) for state in states], dim=1))
    acts = torch.cat(chunks)[torch.tensor(order).argsort()]  # back to the prompts' order
    if not torch.isfinite(acts).all():
        bad = (~torch.isfinite(acts)).any(dim=(0, 2)).nonzero().flatten().tolist()
        raise NonFiniteError(
            f"NaN or inf in the residual stream at layers {[layers[i] for i in bad]}: the model "
            "overflows in its dtype; load it in float32 or bfloat16 instead of float16"
        )
    return acts


def _bridge_states(model, ids: Tensor, mask: Tensor, names: list[str]) -> dict[str, Tensor]:
    """The activations at hook points ``names`` (in that order), the forward stopped after the last."""
    found: dict[str, Tensor] = {}
    remaining = set(names)

    def keep(act: Tensor, hook, name: str) -> Tensor:  # by the name asked for: the bridge may call it by an alias
        found[name] = act
        remaining.discard(name)
        if not remaining:
            raise StopForward
        return act

    try:
        with model.hooks(fwd_hooks=[(name, partial(keep, name=name)) for name in dict.fromkeys(names)]):
            model(ids, attention_mask=mask)
    except StopForward:
        pass
    return {name: found[name] for name in names}


def _flat(act: Tensor, hook: str) -> Tensor:
    """``[batch, pos, head, d_head]`` at a per-head hook as ``[batch, pos, head * d_head]``."""
    return act.flatten(-2) if hook in PER_HEAD_HOOKS else act


def last_token_resid(
    model, prompts: list[str], layers: list[int] | None = None, batch_size: int = 32, progress: bool = False
) -> Float[Tensor, "n_prompts n_layers d_model"]:
    """The residual stream after each block (``blocks.{l}.hook_resid_post``) at the last token:
    the paper's reading, :func:`prompt_states` with its defaults."""
    return prompt_states(model, prompts, layers, batch_size=batch_size, progress=progress)
