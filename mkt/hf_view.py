"""The Hugging Face model under a TransformerBridge, without the bridge's wrappers.

The bridge swaps each HF submodule for a wrapper that calls it between hook points; a
forward through it pays those wrappers (their Python and their re-implemented norms) on
every step. Decoding after a prompt-last steering needs no hook, and steering generated
tokens at ``hook_resid_post`` needs only the output of each decoder layer: both run on
this view at the speed of HF's own ``generate``. The view shares every parameter with the
bridge (nothing is copied, weight edits reach both); it is rebuilt per call, so a module
the bridge later replaces is never stale.
"""

from __future__ import annotations

import copy

import torch
from jaxtyping import Float, Int
from torch import Tensor


def unwrapped_model(bridge) -> torch.nn.Module:
    """The HF model under ``bridge`` with every bridge wrapper replaced by the module it wraps.

    Args:
        bridge: a TransformerBridge over a local HF model.

    Returns:
        An ``nn.Module`` of the HF class (``LlamaForCausalLM``, ...) whose parameters are the
        bridge's own tensors; the bridge itself is unchanged.
    """
    from transformer_lens.model_bridge.generalized_components.base import GeneralizedComponent

    seen: dict[int, torch.nn.Module] = {}  # a module shared in two places stays shared

    def unwrap(module: torch.nn.Module | None) -> torch.nn.Module | None:
        if module is None or id(module) in seen:
            return None if module is None else seen[id(module)]
        if isinstance(module, GeneralizedComponent) and module.original_component is not None:
            out = unwrap(module.original_component)
        else:
            out = copy.copy(module)  # shares parameters and buffers; children replaced below
            out._modules = {name: unwrap(child) for name, child in module._modules.items()}
            # hooks the bridge or a user put on the HF modules belong to the bridge's forward
            out._forward_hooks, out._forward_pre_hooks = type(module._forward_hooks)(), type(module._forward_pre_hooks)()
        seen[id(module)] = out
        return out

    return unwrap(bridge.original_model)


def hooked(bridge) -> bool:
    """Whether a hook is on one of the bridge's hook points (a user's ``model.hooks(...)``, a
    condition of the analyses) or on every module (torch's global hooks): the view would run
    without it, so the bridge must run instead. (The hooks HF and the bridge put on the wrapped
    modules themselves, to capture outputs, are theirs and do not count.)"""
    from torch.nn.modules import module as torch_module
    from transformer_lens.hook_points import HookPoint

    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in bridge.modules() if isinstance(m, HookPoint))


def takes_positions(bridge) -> bool:
    """Whether the bridge hands its HF model positions derived from the mask (every decoder that
    numbers tokens 0, 1, ...; not models that derive their own, such as multimodal RoPE)."""
    from transformer_lens.utilities.position_ids import accepts_mask_derived_position_ids

    return accepts_mask_derived_position_ids(bridge.original_model)


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The model's list of decoder layers: the one ``ModuleList`` of ``num_hidden_layers`` modules.

    Raises:
        RuntimeError: none or several such lists (an architecture whose layout is not supported).
    """
    n_layers = model.config.num_hidden_layers if hasattr(model, "config") else None
    found = [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n_layers]
    if len(found) > 1:  # an encoder's or a vision tower's list beside the decoder's: the decoder's is ``...layers``
        found = [(name, m) for name, m in found if name.endswith("layers")]
    if len(found) != 1:
        raise RuntimeError(f"mkt found {len(found)} lists of {n_layers} decoder layers in {type(model).__name__}, "
                           "not one: this architecture's layout is not supported here")
    found = [m for _, m in found]
    return found[0]


def prompt_positions(mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"]:
    """Positions of a left-padded batch as the bridge derives them: real tokens 0, 1, ...; pads 1."""
    positions = mask.long().cumsum(-1) - 1
    return positions.masked_fill_(mask == 0, 1)


def step_positions(mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch 1"]:
    """The position of each row's newest token on a left-padded mask: its count of real tokens - 1.

    The bridge derives positions from the mask the same way (pads do not count), and HF's
    own default (the cache length) would count the pads of shorter prompts.
    """
    return mask.long().sum(-1, keepdim=True) - 1


def next_logits(model: torch.nn.Module, tokens: Int[Tensor, "batch"], mask: Int[Tensor, "batch pos"], cache
                ) -> Float[Tensor, "batch 1 vocab"]:
    """One decoding step on the unwrapped model: ``tokens`` appended to ``cache`` (extended in place)."""
    out = model(input_ids=tokens[:, None], attention_mask=mask, past_key_values=cache,
                position_ids=step_positions(mask), use_cache=True)
    return out.logits


class StopForward(Exception):
    """Raised by the hook of the last layer a reading needs: the rest of the model (and its logits) is not run."""


def layer_outputs(model: torch.nn.Module, ids: Int[Tensor, "batch pos"], mask: Int[Tensor, "batch pos"],
                  layers: list[int]) -> dict[int, Float[Tensor, "batch pos d_model"]]:
    """The output of each decoder layer in ``layers`` (TransformerLens ``hook_resid_post``), stopping
    after the last of them: no later layer, final norm or unembedding is computed."""
    found: dict[int, Tensor] = {}
    last = max(layers)

    def keep(layer: int):
        def hook(module, args, output):
            found[layer] = output[0] if isinstance(output, tuple) else output
            if layer == last:
                raise StopForward

        return hook

    modules = decoder_layers(model)
    handles = [modules[layer].register_forward_hook(keep(layer)) for layer in set(layers)]
    try:
        model(input_ids=ids, attention_mask=mask, position_ids=prompt_positions(mask), use_cache=False)
    except StopForward:
        pass
    finally:
        for handle in handles:
            handle.remove()
    return found
