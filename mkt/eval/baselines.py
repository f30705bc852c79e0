"""Baselines that are not a residual-stream key: logit-space transfer.

Logit-space transfer adds, at every generation step, the Source's Unlocked-minus-Locked
difference of next-token log-probabilities (Source run on both prompt variants, fed the
tokens the Target generates) to the Target's logits. It needs one shared vocabulary.
Log-probabilities rather than raw logits, because raw logits carry an arbitrary per-row
shift that would differ between the two Source runs.
"""

from __future__ import annotations

from typing import Callable

import torch

from mkt.errors import IncompatibleModelError
from mkt.models import tokenize_left_padded


class LogitTransfer:
    """``generate(..., logit_offset=LogitTransfer(source, unlock))`` for a Target."""

    def __init__(self, source, target, unlock: Callable[[str], str], scale: float = 1.0) -> None:
        if source.tokenizer.get_vocab() != target.tokenizer.get_vocab():
            raise IncompatibleModelError(
                "logit-space transfer needs the Source and Target to share a tokenizer; these "
                "vocabularies differ, so use the residual-stream key (mkt.transfer) instead"
            )
        self.source, self.unlock, self.scale = source, unlock, scale

    def begin(self, prompts: list[str]) -> "_LogitTransferState":
        return _LogitTransferState(self, prompts)


class _LogitTransferState:
    def __init__(self, owner: LogitTransfer, prompts: list[str]) -> None:
        self.owner = owner
        self.runs = []
        for variant in (prompts, [owner.unlock(p) for p in prompts]):
            ids, mask = tokenize_left_padded(owner.source, variant)
            with torch.no_grad():
                logits, cache = owner.source(ids, attention_mask=mask, return_type="logits_and_cache")
            self.runs.append([logits[:, -1].float(), cache, mask])

    def offset(self) -> torch.Tensor:
        locked, unlocked = (torch.log_softmax(run[0], -1) for run in self.runs)
        return self.owner.scale * (unlocked - locked)

    @torch.no_grad()
    def advance(self, tokens: torch.Tensor) -> None:
        for run in self.runs:
            run[2] = torch.cat([run[2], torch.ones_like(run[2][:, :1])], dim=1)
            logits, run[1] = self.owner.source(tokens[:, None].to(run[2].device), attention_mask=run[2],
                                               past_key_values=run[1], return_type="logits_and_cache")
            run[0] = logits[:, -1].float()
