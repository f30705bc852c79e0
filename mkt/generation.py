"""Generation with optional steering, with the KV cache: the prompt through the bridge, the decoding steps
through the HF model under it.

mkt drives the decoding loop itself (rather than ``bridge.generate``) so the steering
hooks always know which positions are prompt and which are generated, stop strings act
per row, and per-step entropies can be recorded for the analyses. A call's options travel
as one :class:`GenerationRequest` (both engines take it).
"""

from __future__ import annotations

import inspect
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mkt.batch_size import fitting_batch_size
from mkt.hf_view import decoder_layers, hooked, next_logits, prompt_positions, takes_positions, unwrapped_model
from mkt.models import RESID_HOOK, check_prompts, encode, eos_token_ids, tokenize_left_padded
from mkt.steering import Steering, SteeringHooks


@dataclass
class Generation:
    """One prompt's continuation."""

    prompt: str
    text: str
    token_ids: list[int]
    stopped: bool  # EOS or a stop string, rather than max_new_tokens
    entropies: list[float] = field(default_factory=list)  # nats, per generated step

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


def _next_tokens(logits: torch.Tensor, do_sample: bool, temperature: float, top_p: float | None,
                 generator: torch.Generator | list[torch.Generator] | None) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        drop = sorted_p.cumsum(-1) - sorted_p > top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    if isinstance(generator, list):  # one generator per row: a row's samples do not depend on its batch
        rows = [torch.multinomial(p[None], 1, generator=g) for p, g in zip(probs.cpu(), generator)]
        return torch.cat(rows).squeeze(-1).to(logits.device)
    return torch.multinomial(probs.cpu(), 1, generator=generator).squeeze(-1).to(logits.device)


def stop_position(text: str, stop: list[str] | None, start: int = 0) -> int | None:
    """Where ``text`` must be cut: the earliest place any stop string begins at or after ``start``.

    Matched on the decoded text wherever a stop string ends, also inside a token (a token
    ``".\n\nQuestion"`` holds the stop ``"\nQuestion"``).
    """
    found = [i for i in (text.find(s, start) for s in stop or []) if i >= 0]
    return min(found) if found else None


def _budget(model, prompt_len: int, max_new_tokens: int) -> int:
    """New tokens that fit in the model's context after a prompt of ``prompt_len`` tokens."""
    n_ctx = getattr(model.cfg, "n_ctx", None)
    if n_ctx and prompt_len + max_new_tokens > n_ctx:
        warnings.warn(
            f"prompt ({prompt_len} tokens) + max_new_tokens ({max_new_tokens}) exceeds the model's context "
            f"({n_ctx}): generating at most {n_ctx - prompt_len} tokens", stacklevel=4,
        )
        return n_ctx - prompt_len
    return max_new_tokens


@dataclass(frozen=True)
class GenerationRequest:
    """Everything one ``generate`` call is asked for, as one value (vLLM's ``SamplingParams``, plus
    the steering); both engines take it (:meth:`mkt.engines.Engine.run`).

    Args:
        max_new_tokens: generation budget per prompt.
        steering: optional ``Steering`` (its alpha and directions may hold one value per prompt:
            a key, its null draws and controls at several alphas in one call).
        do_sample, temperature, top_p, seed: sampling (greedy by default); the seed makes samples
            reproducible.
        seeds: one seed per prompt instead: each prompt's samples are then the same whatever
            batch it falls in (resumed evaluations draw what an uninterrupted one draws).
        stop: strings that end a row's generation wherever they appear in the decoded text (the
            text is cut where the first one begins).
        eos_ids: token ids that end a row; default every EOS of the tokenizer and of the
            model's generation config (:func:`mkt.models.eos_token_ids`).
        batch_size: prompts per batch (left-padded; the vLLM engine leaves batching to its scheduler);
            None: the largest batch that fits in memory (:func:`mkt.batch_size.fitting_batch_size`).
        use_cache: False recomputes the whole sequence each step (slow; for checking).
        record_entropy: keep the next-token entropy of every step.
        logit_offset: optional object whose ``begin(prompts)`` returns a per-batch state with
            ``offset() -> [batch, vocab]`` (added to each step's logits) and
            ``advance(tokens)`` (the tokens chosen); see ``mkt.eval.baselines.LogitTransfer``.
        progress: show a progress bar.
    """

    max_new_tokens: int = 64
    steering: Steering | None = None
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float | None = None
    seed: int = 0
    seeds: list[int] | None = None
    stop: list[str] | None = None
    eos_ids: list[int] | None = None
    batch_size: int | None = 16
    use_cache: bool = True
    record_entropy: bool = False
    logit_offset: object = None
    progress: bool = False

    def check(self, prompts: list[str]) -> None:
        """Refuse a request that no engine could serve, with one clear message."""
        check_prompts(prompts)
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.do_sample and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 when sampling, got {self.temperature}")
        if self.steering is not None and self.steering.per_prompt not in (None, len(prompts)):
            raise ValueError(
                f"the steering holds {self.steering.per_prompt} per-prompt values (alpha or directions) for "
                f"{len(prompts)} prompts: give one per prompt"
            )
        if self.seeds is not None and len(self.seeds) != len(prompts):
            raise ValueError(f"seeds has {len(self.seeds)} values for {len(prompts)} prompts: give one per prompt")


def generate(model, prompts: list[str], max_new_tokens: int = 64, steering: Steering | None = None, **options
             ) -> list[Generation]:
    """Continue each prompt; greedy by default. Shorthand for ``run(model, prompts, GenerationRequest(...))``.

    Args:
        model: a TransformerBridge.
        prompts: formatted prompts.
        max_new_tokens, steering, **options: the fields of :class:`GenerationRequest`.
    """
    return run(model, prompts, GenerationRequest(max_new_tokens, steering, **options))


@torch.no_grad()
def run(model, prompts: list[str], request: GenerationRequest) -> list[Generation]:
    """Continue each prompt as ``request`` asks, batch by batch (the TransformerLens engine's loop).

    The prompt goes through the bridge, with the steering's hooks; the decoding steps go through
    the HF model under it (:func:`mkt.hf_view.unwrapped_model`: the same modules and weights
    without the bridge's wrappers), with hooks on its decoder layers where generated tokens are
    steered at ``hook_resid_post``. Steering elsewhere (``hook_resid_pre``, ``attn.hook_z``, ...)
    on generated tokens, hooks already on the bridge, and ``use_cache=False`` decode through the
    bridge. Rows of a batch that repeat a prompt (a :class:`~mkt.battery.Battery`'s) prefill the
    tokens before its last once when only the last prompt token is steered.
    """
    request.check(prompts)
    eos_set = set(eos_token_ids(model) if request.eos_ids is None else request.eos_ids)
    # a hook already on the bridge (a user's, an analysis' condition) must see every step: the bridge decodes
    view = unwrapped_model(model) if request.use_cache and not hooked(model) and takes_positions(model) else None
    generator = torch.Generator().manual_seed(request.seed) if request.do_sample and request.seeds is None else None
    batch_size = request.batch_size
    if batch_size is None:
        longest = max(len(encode(model.tokenizer, p)) for p in prompts)
        batch_size = fitting_batch_size(model, longest + request.max_new_tokens, longest)
    results: list[Generation] = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generate", disable=not request.progress, leave=False):
        batch = prompts[start : start + batch_size]
        if request.do_sample and request.seeds is not None:
            generator = [torch.Generator().manual_seed(int(x)) for x in request.seeds[start : start + len(batch)]]
        steering = request.steering.rows(start, start + len(batch)) if request.steering is not None else None
        new, stopped, entropies = _batch(model, view, batch, steering, request, eos_set, generator)
        for i, p in enumerate(batch):
            text = model.tokenizer.decode(new[i], skip_special_tokens=True)
            cut = stop_position(text, request.stop)
            results.append(Generation(p, text[:cut] if cut is not None else text, new[i], stopped[i], entropies[i]))
    return results


def _batch(model, view, batch: list[str], steering: Steering | None, request: GenerationRequest, eos_set: set[int],
           generator) -> tuple[list[list[int]], list[bool], list[list[float]]]:
    """One left-padded batch: per row, the new token ids, whether it stopped, the step entropies."""
    tok = model.tokenizer
    filler = min(eos_set) if eos_set else (tok.pad_token_id or 0)  # what finished rows feed the model
    longest_stop = max((len(x) for x in request.stop or []), default=0)
    ids, mask = tokenize_left_padded(model, batch)
    prompt_len = ids.shape[1]
    budget = _budget(model, prompt_len, request.max_new_tokens)
    done = torch.zeros(len(batch), dtype=torch.bool)
    new: list[list[int]] = [[] for _ in batch]
    entropies: list[list[float]] = [[] for _ in batch]
    stopped = [False] * len(batch)
    texts = [""] * len(batch)
    offsets = request.logit_offset.begin(batch) if request.logit_offset is not None else None
    keep_last = _keep_last(model)
    with ExitStack() as prefill, ExitStack() as decoding:
        hooks = prefill.enter_context(steering.attach(model)) if steering is not None else None
        shared = view is not None and _prefix_shared(ids, mask, steering)
        if hooks is not None:
            hooks.locate_prompt(prompt_len)
            if shared:  # the bridge runs the last prompt token alone, over the shared KV cache
                hooks.locate_step(prompt_len - 1)
        if shared:
            logits, cache = _prefill_shared(model, view, ids, mask, keep_last)
        else:
            logits, cache = model(ids, attention_mask=mask, return_type="logits_and_cache", **keep_last)
        # decode on the unwrapped model unless a generated token must be steered where only the bridge has a hook
        on_view = view is not None and (hooks is None or not hooks.generated or steering.hook == RESID_HOOK)
        if on_view:
            prefill.close()
            if hooks is not None and hooks.generated:
                decoding.enter_context(_steer_layers(view, hooks))
            else:
                hooks = None  # prompt-last steering is done after the prefill: decode with no hooks at all
        # Decoding with no hooks left drops finished rows from the batch (and the KV cache), so
        # a batch of short answers does not wait on its longest one. Sampling does so only with
        # one generator per row (``seeds``): one shared generator's draws depend on the batch shape.
        compact = (request.use_cache and hooks is None and offsets is None
                   and (not request.do_sample or isinstance(generator, list)))
        live = torch.arange(len(batch))  # the batch row of each row still computed
        for step_index in range(budget):
            step = logits[:, -1].float()
            if offsets is not None:
                step = step + offsets.offset().to(step.device)
            if request.record_entropy:
                logp = torch.log_softmax(step, -1)
                ent = -(logp.exp() * logp).sum(-1)
            nxt = _next_tokens(step, request.do_sample, request.temperature, request.top_p, generator)
            for j, t in enumerate(nxt.tolist()):
                i = int(live[j])
                if done[i]:
                    continue
                if request.record_entropy:
                    entropies[i].append(float(ent[j]))
                if t in eos_set:
                    done[i], stopped[i] = True, True
                    continue
                new[i].append(t)
                if request.stop:  # search only where a stop could newly end: the tail after the last check
                    seen = len(texts[i])
                    texts[i] = tok.decode(new[i], skip_special_tokens=True)
                    if stop_position(texts[i], request.stop, max(0, seen - longest_stop)) is not None:
                        done[i], stopped[i] = True, True
            if done.all() or step_index == budget - 1:  # no forward whose logits nobody reads
                break
            nxt = nxt.masked_fill(done[live].to(nxt.device), filler)
            if offsets is not None:
                offsets.advance(nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            if compact and done[live].any():
                keep = (~done[live]).nonzero().flatten()
                cache.batch_select_indices(keep.to(ids.device))
                ids, mask, nxt, live = ids[keep], mask[keep], nxt[keep], live[keep]
                if isinstance(generator, list):
                    generator = [generator[int(k)] for k in keep]
            if hooks is not None and request.use_cache:  # recomputed whole, the sequence starts at 0
                hooks.locate_step(ids.shape[1] - 1)
            if on_view:
                logits = next_logits(view, nxt, mask, cache)
            elif request.use_cache:
                logits, cache = model(nxt[:, None], attention_mask=mask, past_key_values=cache,
                                      return_type="logits_and_cache")
            else:
                logits = model(ids, attention_mask=mask, **keep_last)
    return new, stopped, entropies


def _prefix_shared(ids: Tensor, mask: Tensor, steering: Steering | None) -> bool:
    """Whether rows repeat a prompt whose tokens before the last are the same however each row is
    steered: a battery's rows (one prompt under many conditions), steered at the last prompt token."""
    if steering is not None and steering.scope not in ("prompt-last", "prompt-last+generated"):
        return False
    if ids.shape[1] < 2 or not bool(mask[:, -2].all()):  # every row has a token before its last
        return False
    return len(torch.unique(torch.cat([ids, mask], 1), dim=0)) < len(ids)


def _prefill_shared(model, view: torch.nn.Module, ids: Tensor, mask: Tensor, keep_last: dict) -> tuple[Tensor, object]:
    """The prompts' tokens before the last once per distinct prompt (on the view: no hook acts there),
    their KV cache repeated for every row, then each row's last token through the bridge and its hooks."""
    width = ids.shape[1]
    distinct, row_of = torch.unique(torch.cat([ids, mask], 1), dim=0, return_inverse=True)
    head, head_mask = distinct[:, : width - 1], distinct[:, width : 2 * width - 1]
    cache = view(input_ids=head, attention_mask=head_mask, position_ids=prompt_positions(head_mask), use_cache=True,
                 **keep_last).past_key_values
    cache.batch_select_indices(row_of.to(ids.device))
    return model(ids[:, -1:], attention_mask=mask, past_key_values=cache, return_type="logits_and_cache")


def _keep_last(model) -> dict:
    """``logits_to_keep=1`` where the HF model takes it: a prompt's logits are read at its last
    position only (a 262k vocabulary's logits for every prompt token would not fit in memory)."""
    forward = inspect.signature(model.original_model.forward).parameters
    return {"logits_to_keep": 1} if "logits_to_keep" in forward else {}


@contextmanager
def _steer_layers(view: torch.nn.Module, hooks: SteeringHooks) -> Iterator[None]:
    """``hooks`` on the outputs of the unwrapped model's decoder layers (``hook_resid_post``)."""
    def edit(layer: int):
        def hook(module, args, output):
            if isinstance(output, tuple):  # older decoder layers return (hidden, ...)
                return (hooks.hook(output[0], None, layer=layer), *output[1:])
            return hooks.hook(output, None, layer=layer)

        return hook

    layers = decoder_layers(view)
    handles = [layers[layer].register_forward_hook(edit(layer)) for layer in hooks.steering.layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
