"""Generation with optional steering, through the bridge with the KV cache.

mkt drives the decoding loop itself (rather than ``bridge.generate``) so the steering
hooks always know which positions are prompt and which are generated, stop strings act
per row, and per-step entropies can be recorded for the analyses.
"""

from __future__ import annotations

import warnings
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from mkt.models import check_prompts, eos_token_ids, tokenize_left_padded
from mkt.steering import Steering


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
            f"({n_ctx}): generating at most {n_ctx - prompt_len} tokens", stacklevel=3,
        )
        return n_ctx - prompt_len
    return max_new_tokens


def check_request(prompts: list[str], max_new_tokens: int, steering: Steering | None, do_sample: bool,
                  temperature: float, seeds: list[int] | None) -> None:
    """Refuse a generation request that no engine could serve, with one clear message."""
    check_prompts(prompts)
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if do_sample and not temperature > 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
    if steering is not None and steering.per_prompt not in (None, len(prompts)):
        raise ValueError(
            f"the steering holds {steering.per_prompt} per-prompt values (alpha or directions) for "
            f"{len(prompts)} prompts: give one per prompt"
        )
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"seeds has {len(seeds)} values for {len(prompts)} prompts: give one per prompt")


@torch.no_grad()
def generate(
    model,
    prompts: list[str],
    max_new_tokens: int = 64,
    steering: Steering | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float | None = None,
    seed: int = 0,
    seeds: list[int] | None = None,
    stop: list[str] | None = None,
    eos_ids: list[int] | None = None,
    batch_size: int = 16,
    use_cache: bool = True,
    record_entropy: bool = False,
    logit_offset=None,
    progress: bool = False,
) -> list[Generation]:
    """Continue each prompt; greedy by default.

    Args:
        model: a TransformerBridge.
        prompts: formatted prompts.
        max_new_tokens: generation budget per prompt.
        steering: optional ``Steering`` (its alpha may hold one value per prompt).
        do_sample, temperature, top_p, seed: sampling; the seed makes samples reproducible.
        seeds: one seed per prompt instead: each prompt's samples are then the same whatever
            batch it falls in (resumed evaluations draw what an uninterrupted one draws).
        stop: strings that end a row's generation wherever they appear in the decoded text (the
            text is cut where the first one begins).
        eos_ids: token ids that end a row; default every EOS of the tokenizer and of the
            model's generation config (:func:`mkt.models.eos_token_ids`).
        batch_size: prompts per batch (left-padded).
        use_cache: False recomputes the whole sequence each step (slow; for checking).
        record_entropy: keep the next-token entropy of every step.
        logit_offset: optional object whose ``begin(prompts)`` returns a per-batch state with
            ``offset() -> [batch, vocab]`` (added to each step's logits) and
            ``advance(tokens)`` (the tokens chosen); see ``mkt.eval.baselines.LogitTransfer``.
        progress: show a progress bar.
    """
    check_request(prompts, max_new_tokens, steering, do_sample, temperature, seeds)
    tok = model.tokenizer
    eos_set = set(eos_token_ids(model) if eos_ids is None else eos_ids)
    filler = min(eos_set) if eos_set else (tok.pad_token_id or 0)  # what finished rows feed the model
    longest_stop = max((len(x) for x in stop or []), default=0)
    generator = torch.Generator().manual_seed(seed) if do_sample and seeds is None else None
    results: list[Generation] = []
    starts = range(0, len(prompts), batch_size)
    for start in tqdm(starts, desc="generate", disable=not progress, leave=False):
        batch = prompts[start : start + batch_size]
        ids, mask = tokenize_left_padded(model, batch)
        prompt_len = ids.shape[1]
        budget = _budget(model, prompt_len, max_new_tokens)
        done = torch.zeros(len(batch), dtype=torch.bool)
        new = [[] for _ in batch]
        entropies = [[] for _ in batch]
        stopped = [False] * len(batch)
        texts = [""] * len(batch)
        offsets = logit_offset.begin(batch) if logit_offset is not None else None
        if do_sample and seeds is not None:
            generator = [torch.Generator().manual_seed(int(x)) for x in seeds[start : start + len(batch)]]
        with ExitStack() as stack:
            hooks = stack.enter_context(steering.rows(start, start + len(batch)).attach(model)) if steering else None
            if hooks is not None:
                hooks.locate_prompt(prompt_len)
            logits, cache = model(ids, attention_mask=mask, return_type="logits_and_cache")
            if hooks is not None and use_cache and not hooks.generated:
                stack.close()  # prompt-last steering is done after the prefill: decode with no hooks at all
                hooks = None
            # Decoding with no hooks left drops finished rows from the batch (and the KV cache), so
            # a batch of short answers does not wait on its longest one. Sampling does so only with
            # one generator per row (``seeds``): one shared generator's draws depend on the batch shape.
            compact = use_cache and hooks is None and offsets is None and (not do_sample or isinstance(generator, list))
            live = torch.arange(len(batch))  # the batch row of each row still computed
            for step_index in range(budget):
                step = logits[:, -1].float()
                if offsets is not None:
                    step = step + offsets.offset().to(step.device)
                if record_entropy:
                    logp = torch.log_softmax(step, -1)
                    ent = -(logp.exp() * logp).sum(-1)
                nxt = _next_tokens(step, do_sample, temperature, top_p, generator)
                for j, t in enumerate(nxt.tolist()):
                    i = int(live[j])
                    if done[i]:
                        continue
                    if record_entropy:
                        entropies[i].append(float(ent[j]))
                    if t in eos_set:
                        done[i], stopped[i] = True, True
                        continue
                    new[i].append(t)
                    if stop:  # search only where a stop could newly end: the tail after the last check
                        seen = len(texts[i])
                        texts[i] = tok.decode(new[i], skip_special_tokens=True)
                        if stop_position(texts[i], stop, max(0, seen - longest_stop)) is not None:
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
                if use_cache:
                    if hooks is not None:
                        hooks.locate_step(ids.shape[1] - 1)
                    logits, cache = model(
                        nxt[:, None], attention_mask=mask, past_key_values=cache, return_type="logits_and_cache"
                    )
                else:
                    logits = model(ids, attention_mask=mask)
        for i, p in enumerate(batch):
            text = tok.decode(new[i], skip_special_tokens=True)
            cut = stop_position(text, stop)
            if cut is not None:
                text = text[:cut]
            results.append(Generation(p, text, new[i], stopped[i], entropies[i]))
    return results
