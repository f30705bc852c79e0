"""Conditions (hooks that edit a model's run while open) and the next-token log-probabilities under them.

A condition is applied to the prompt rows ``rows`` of the batch it runs. One that edits
only the last prompt token (``last_only``) leaves every earlier position as it was, so the
prompts' prefixes can run once and each condition only the last token over their KV cache
(``next_token_logprobs`` with a ``PrefixCache``): the same numbers, a prompt-length's worth
less work. The cached path checks itself against a full forward before it is used and falls
back to full forwards where they disagree (a cache class that does not replay exactly).
"""

from __future__ import annotations

import copy
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import Callable, ContextManager

import torch
from jaxtyping import Float
from torch import Tensor

from mkt.models import RESID_HOOK, resid_hook_name, tokenize_left_padded
from mkt.steering import Steering


@dataclass(frozen=True)
class Condition:
    """``attach(model, rows, tail)`` hooks the model while open; ``tail`` says the forward is the last
    prompt token alone (its prefix in the KV cache). ``last_only``: edits nothing but that token."""

    attach: Callable[[object, slice, bool], ContextManager]
    last_only: bool

    def __call__(self, model, rows: slice, tail: bool = False) -> ContextManager:
        return self.attach(model, rows, tail)


no_condition = Condition(lambda model, rows, tail: nullcontext(), last_only=True)


def steering_condition(steering: Steering) -> Condition:
    """A run-editing condition that steers each batch's rows with ``steering`` (its rows sliced per batch)."""
    @contextmanager
    def attach(model, rows: slice, tail: bool):
        with steering.rows(rows.start, rows.stop).attach(model) as hooks:
            if tail:  # the one position of this forward is the last prompt token
                hooks.locate_prompt(1)
            yield

    return Condition(attach, last_only=steering.scope == "prompt-last")


def last_token_hooks(edit: Callable[[Tensor, int, slice], Tensor], layers: list[int], hook: str, scope: str = "last"
                     ) -> Condition:
    """Hooks at ``blocks.{l}.{hook}`` of ``layers`` applying ``edit(act, layer, rows)`` to the last prompt token
    (prefill only) or, with scope ``all``, to every position of every forward.

    ``edit`` sees states of the key's width: a per-head hook's ``[..., head, d_head]`` flattened.
    """
    def fn(act: Float[Tensor, "batch pos ..."], hook, layer: int, rows: slice, tail: bool) -> Tensor:
        if scope == "all":
            return edit(act.float().flatten(2), layer, rows).to(act.dtype).view_as(act)
        if act.shape[1] == 1 and not tail:  # a generated token
            return act
        out = act.clone()
        out[:, -1] = edit(act[:, -1].float().flatten(1), layer, rows).to(act.dtype).view_as(act[:, -1])
        return out

    def attach(model, rows: slice, tail: bool):
        return model.hooks(fwd_hooks=[(resid_hook_name(layer, hook), partial(fn, layer=layer, rows=rows, tail=tail))
                                      for layer in layers])

    return Condition(attach, last_only=scope != "all")


def _per_row(directions: Tensor, layer: int, rows: slice, like: Tensor) -> Tensor:
    """``directions[layer]`` (one for all rows) or ``directions[rows, layer]`` broadcast over positions."""
    if directions.ndim == 2:
        return directions[layer].to(device=like.device, dtype=torch.float32)
    u = directions[rows, layer].to(device=like.device, dtype=torch.float32)
    return u if like.ndim == 2 else u[:, None, :]


def project_out(h: Float[Tensor, "... d"], direction: Float[Tensor, "... d"]) -> Float[Tensor, "... d"]:
    """``h`` without its component along ``direction`` (any norm, broadcast against ``h``): ``h - (h.u) u``."""
    u = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return h - (h * u).sum(-1, keepdim=True) * u


def mean_ablate(h: Float[Tensor, "... d"], direction: Float[Tensor, "d"], mean: float | Tensor) -> Float[Tensor, "... d"]:
    """``h`` with its component along ``direction`` set to ``mean``: ``h - (h.u - mean) u``."""
    u = direction / direction.norm().clamp_min(1e-30)
    return h - ((h @ u) - mean)[..., None] * u


def projection_condition(directions: Float[Tensor, "layer d"] | Float[Tensor, "row layer d"], scope: str,
                         hook: str = RESID_HOOK) -> Condition:
    """Project ``directions[l]`` out of ``blocks.{l}.{hook}`` of every layer l, at the last prompt token or everywhere.

    ``last`` acts on the prefill only (generated tokens are left alone, like the key's own
    ``prompt-last`` scope); ``all`` on every position of every forward, generated tokens too.
    ``directions`` of shape ``[rows, layer, d]`` give each prompt row its own direction.
    """
    def edit(h: Tensor, layer: int, rows: slice) -> Tensor:
        return project_out(h, _per_row(directions, layer, rows, h))

    return last_token_hooks(edit, list(range(directions.shape[-2])), hook, scope)


def mean_ablation_condition(directions: Float[Tensor, "layer d"], means: Float[Tensor, "layer"],
                            hook: str = RESID_HOOK) -> Condition:
    """Set the component along ``directions[l]`` to ``means[l]`` at the last prompt token of every layer (prefill)."""
    def edit(h: Tensor, layer: int, rows: slice) -> Tensor:
        return mean_ablate(h, directions[layer].to(h.device, torch.float32), float(means[layer]))

    return last_token_hooks(edit, list(range(directions.shape[0])), hook)


def patch_condition(layer: int, values: Float[Tensor, "n d"], hook: str = RESID_HOOK) -> Condition:
    """Write ``values[i]`` over prompt i's ``blocks.{layer}.{hook}`` at its last prompt token (prefill only)."""
    return last_token_hooks(lambda h, layer, rows: values[rows].to(device=h.device, dtype=h.dtype), [layer], hook)


def combine(*conditions: Condition) -> Condition:
    """Several conditions at once, registered in order (a later one sees what an earlier one wrote)."""
    @contextmanager
    def attach(model, rows: slice, tail: bool):
        with ExitStack() as stack:
            for c in conditions:
                stack.enter_context(c(model, rows, tail))
            yield

    return Condition(attach, last_only=all(c.last_only for c in conditions))


class PrefixCache:
    """The KV cache of each batch of prompts without its last token, kept for the runs of one analysis.

    A batch's entry is checked once: its last token run over the cache must give the full
    forward's log-probabilities (to ``tolerance``), or the batch is marked to run in full.
    Entries are keyed by the model object, the batch's prompts and the hooks registered on the
    model; the model's weights must not change while the cache is in use.
    """

    def __init__(self, tolerance: float | None = None) -> None:
        self.tolerance = tolerance
        self._entries: dict[tuple[int, tuple[str, ...], frozenset], tuple | None] = {}

    @torch.no_grad()
    def get(self, model, prompts: list[str]):
        """``(ids, mask, cache)`` for the batch ``prompts``, or None where the cached path is not exact.

        Entries are keyed by the hooks registered on the model too (``_hook_signature``), so a
        user's ``with key.apply(model)`` or raw torch hook around the analysis gets a prefix run
        with it, never one run without it.
        """
        key = (id(model), tuple(prompts), _hook_signature(model))
        if key not in self._entries:
            self._entries[key] = self._build(model, prompts)
        return self._entries[key]

    def _build(self, model, prompts: list[str]):
        ids, mask = tokenize_left_padded(model, prompts)
        if ids.shape[1] < 2 or (mask.sum(1) < 2).any():  # a one-token prompt has no prefix to keep
            return None
        _, cache = model(ids[:, :-1], attention_mask=mask[:, :-1], return_type="logits_and_cache")
        full = torch.log_softmax(model(ids, attention_mask=mask)[:, -1].double(), -1)
        tail = torch.log_softmax(_tail_logits(model, ids, mask, cache).double(), -1)
        tolerance = self.tolerance or (1e-3 if getattr(model.cfg, "dtype", torch.float32) == torch.float32 else 5e-2)
        return (ids, mask, cache) if (tail - full).abs().max().item() <= tolerance else None


def _hook_signature(model) -> frozenset:
    """Every forward hook and pre-hook registered on the model's modules, and globally in torch, by id.

    (transformers registers output-capturing hooks of its own at the first forward: they are
    part of the signature like any other, which costs one rebuild.)
    """
    from torch.nn.modules import module as torch_module

    hooks = {("global", k) for k in (*torch_module._global_forward_hooks, *torch_module._global_forward_pre_hooks)}
    hooks |= {(id(m), k) for m in model.modules() for k in (*m._forward_hooks, *m._forward_pre_hooks)}
    return frozenset(hooks)


def _tail_logits(model, ids: Tensor, mask: Tensor, cache, tile: int = 1) -> Tensor:
    """The last token's logits over a copy of the prefix cache (a forward appends to the cache it is given),
    for the batch repeated ``tile`` times one after the other."""
    cache = copy.deepcopy(cache)
    if tile > 1:
        cache.reorder_cache(torch.arange(ids.shape[0], device=ids.device).repeat(tile))
    logits, _ = model(ids[:, -1:].repeat(tile, 1), attention_mask=mask.repeat(tile, 1), past_key_values=cache,
                      return_type="logits_and_cache")
    return logits[:, -1]


@torch.no_grad()
def next_token_logprobs(model, prompts: list[str], condition: Condition = no_condition, batch_size: int = 128,
                        repeat: int = 1, prefixes: PrefixCache | None = None) -> Float[Tensor, "rows vocab"]:
    """Log-probabilities (float64, CPU) of the next token after each of ``prompts * repeat``, under ``condition``.

    The condition sees the rows of the repeated list it runs. With ``prefixes`` and a
    condition that edits only the last prompt token, each batch's prefix runs once and every
    condition the last token alone.
    """
    n = len(prompts)
    out: list[Tensor | None] = [None] * (n * repeat)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        entry = prefixes.get(model, prompts[start:stop]) if prefixes is not None and condition.last_only else None
        if entry is None:
            continue
        ids, mask, cache = entry
        # one-token rows are cheap: when the batch holds every prompt, its repeats are contiguous rows
        # and run together, up to about 2^28 logits per forward
        group = max(1, min(repeat, (1 << 28) // (model.cfg.d_vocab * n))) if stop - start == n else 1
        for j in range(0, repeat, group):
            tile = min(group, repeat - j)
            rows = slice(j * n + start, (j + tile - 1) * n + stop)
            with condition(model, rows, tail=True):
                logits = _tail_logits(model, ids, mask, cache, tile)
            out[rows] = torch.log_softmax(logits.double(), -1).cpu().unbind()
    missing = [i for i, row in enumerate(out) if row is None]  # rows the cached path did not serve: full forwards
    for first, last in _contiguous_runs(missing):
        for lo in range(first, last, batch_size):
            rows = slice(lo, min(lo + batch_size, last))
            ids, mask = tokenize_left_padded(model, [prompts[i % n] for i in range(rows.start, rows.stop)])
            with condition(model, rows):
                logits = model(ids, attention_mask=mask)[:, -1]
            out[rows] = torch.log_softmax(logits.double(), -1).cpu().unbind()
    return torch.stack(out)


def _contiguous_runs(indices: list[int]) -> list[tuple[int, int]]:
    """Sorted indices as ``[(first, last + 1), ...]`` runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for i in indices:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs
