"""Reading the residual stream at the last prompt token."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mkt.errors import NonFiniteError
from mkt.models import check_layers, resid_hook_name, tokenize_left_padded


@torch.no_grad()
def last_token_resid(
    model,
    prompts: list[str],
    layers: list[int] | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> Float[Tensor, "n_prompts n_layers d_model"]:
    """Residual stream after each block (``blocks.{l}.hook_resid_post``) at the last token.

    Batched with left padding and the attention mask, caching only the hooks needed.

    Args:
        model: a TransformerBridge.
        prompts: the prompts, already formatted.
        layers: which blocks (default all); the result's layer axis follows this list.
        batch_size: prompts per forward pass.
        progress: show a progress bar.

    Returns:
        float32 tensor on CPU, ``[n_prompts, len(layers), d_model]``.
    """
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string (it would be read as one prompt per "
                        "character): pass [prompt]")
    if not prompts:
        raise ValueError("empty prompt set: pass at least one prompt")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    layers = check_layers(layers, model.cfg.n_layers)
    names = [resid_hook_name(layer) for layer in layers]
    stop = max(layers) + 1
    chunks = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="activations", disable=not progress, leave=False):
        ids, mask = tokenize_left_padded(model, prompts[start : start + batch_size])
        _, cache = model.run_with_cache(
            ids, attention_mask=mask, names_filter=names,
            stop_at_layer=stop if stop < model.cfg.n_layers else None,
        )
        # each block's states to the CPU before stacking: a model split over devices keeps them apart
        chunks.append(torch.stack([cache[n][:, -1, :].float().cpu() for n in names], dim=1))
    acts = torch.cat(chunks)
    if not torch.isfinite(acts).all():
        bad = (~torch.isfinite(acts)).any(dim=(0, 2)).nonzero().flatten().tolist()
        raise NonFiniteError(
            f"NaN or inf in the residual stream at layers {[layers[i] for i in bad]}: the model "
            "overflows in its dtype; load it in float32 or bfloat16 instead of float16"
        )
    return acts
