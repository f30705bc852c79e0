"""mkt as an lm-evaluation-harness model: ``--model mkt --model_args pretrained=M,pack=P``.

Importing this module registers the model ``mkt`` with lm-eval (``pip install 'mkt[lm-eval]'``);
``python -m mkt.interop.lm_eval_cli`` is lm-eval's command line with it registered.
It steers exactly as mkt does, whatever the pack's hook, layers, mode, scope and alpha: greedy or
sampled generation is :func:`mkt.generation.generate` with ``pack.steering()``, prompt ids are
:func:`mkt.models.encode`'s (the family's own BOS rule), and a log-likelihood is one forward of
context + continuation with the pack's hooks told where the context ends, so ``prompt-last``
steers the last context token and the continuation is treated as generated tokens.
"""

from __future__ import annotations

import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model

from mkt.generation import generate
from mkt.models import encode, load_model
from mkt.pack import CapabilityPack


@register_model("mkt")
class MktLM(LM):
    """An mkt model (any name ``mkt.load_model`` takes), optionally steered by a capability pack.

    Args:
        pretrained: hub name, local directory, ``.gguf`` file, ``real:NAME`` or ``organism:NAME``.
        pack: capability pack directory to steer with (None: unsteered).
        alpha: overrides the pack's alpha.
        device, dtype: passed to ``mkt.load_model`` (lm-eval's ``--device``; default cpu).
        batch_size: prompts per generation batch (lm-eval's ``--batch_size``; ``auto`` takes
            ``max_batch_size``).
        max_batch_size: lm-eval's ``--max_batch_size``, the batch ``auto`` means (default 8).
        max_gen_toks: new tokens when a task's ``generation_kwargs`` name none.
    """

    def __init__(self, pretrained: str, pack: str | None = None, alpha: float | None = None,
                 device: str | None = None, dtype: str = "float32", batch_size: int | str = 8,
                 max_batch_size: int | None = None, max_gen_toks: int = 256) -> None:
        super().__init__()
        self.pack = CapabilityPack.load(pack) if pack else None  # a bad pack fails before the model loads
        self.model = load_model(pretrained, device=device or "cpu", dtype=dtype)
        if self.pack is not None:
            self.pack.check_fits(self.model)
        self.steering = self.pack.steering(None if alpha is None else float(alpha)) if self.pack else None
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else int(max_batch_size or 8)
        self.max_gen_toks = int(max_gen_toks)

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continuations of each context, cut at the request's ``until`` strings (mkt's stop rule)."""
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(repr(sorted(request.args[1].items())), []).append(i)
        for rows in groups.values():
            kwargs = dict(requests[rows[0]].args[1])
            until = kwargs.pop("until", None)
            until = [until] if isinstance(until, str) else list(until or [])
            temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
            sample = bool(kwargs.pop("do_sample", False)) and temperature > 0
            gens = generate(self.model, [requests[i].args[0] for i in rows],
                            int(kwargs.pop("max_gen_toks", self.max_gen_toks)), self.steering, do_sample=sample,
                            temperature=temperature if sample else 1.0, stop=until or None,
                            batch_size=self.batch_size)
            for i, g in zip(rows, gens):
                out[i] = g.text
        return out

    def _continuation_logprob(self, context: str, continuation: str) -> tuple[float, bool]:
        ctx = encode(self.model.tokenizer, context) if context else []
        whole = encode(self.model.tokenizer, context + continuation)
        if whole[:len(ctx)] != ctx or len(whole) == len(ctx):  # the continuation's own ids when the join merges
            whole = ctx + self.model.tokenizer.encode(continuation, add_special_tokens=False)
        ids = torch.tensor([whole], device=self.model.cfg.device)
        with torch.no_grad():
            if self.steering is None:
                logits = self.model(ids)
            else:
                with self.steering.attach(self.model) as hooks:
                    hooks.prompt_len, hooks.offset = max(len(ctx), 1), 0
                    logits = self.model(ids)
        logprobs = torch.log_softmax(logits[0, :-1].double(), -1)
        start = max(len(ctx), 1)
        targets = ids[0, start:]
        chosen = logprobs[start - 1:].gather(-1, targets[:, None]).sum()
        greedy = bool((logprobs[start - 1:].argmax(-1) == targets).all())
        return float(chosen), greedy

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """log P(continuation | context) and whether it is the greedy continuation, steered as mkt steers."""
        return [self._continuation_logprob(*request.args) for request in requests]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """log P(text) in one window (after the BOS where the family adds one, else from the second token)."""
        return [self._continuation_logprob("", request.args[0])[0] for request in requests]
