"""Batch sizes sized from the model and free memory (mkt.batch_size)."""

from __future__ import annotations

import pytest
import torch

from mkt import batch_size
from mkt.batch_size import MAX_BATCH, fitting_batch_size, row_bytes
from mkt.generation import generate
from mkt.models import tokenize_left_padded
from tests.conftest import PROMPTS


def test_a_rows_kv_cache_is_counted_as_the_real_cache_holds_it(qwen):
    """Independent: the bytes of the HF cache after a real forward, against the formula's KV part."""
    ids, mask = tokenize_left_padded(qwen, PROMPTS[:1])
    with torch.no_grad():
        _, cache = qwen(ids, attention_mask=mask, return_type="logits_and_cache")
    held = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    n = ids.shape[1]
    rest = row_bytes(qwen, 0, n)  # no cached tokens: the logits and the prompt's activations
    assert row_bytes(qwen, n, n) - rest == held


def test_the_batch_shrinks_with_free_memory_and_stays_in_range(qwen, monkeypatch):
    per_row = row_bytes(qwen, 300, 200)
    monkeypatch.setattr(batch_size, "free_bytes", lambda device: int(10 * per_row / batch_size.SHARE))
    assert fitting_batch_size(qwen, 300, 200) == 10
    monkeypatch.setattr(batch_size, "free_bytes", lambda device: 1)
    assert fitting_batch_size(qwen, 300, 200) == 1
    monkeypatch.setattr(batch_size, "free_bytes", lambda device: 10**15)
    assert fitting_batch_size(qwen, 300, 200) == MAX_BATCH


def test_generation_with_a_fitted_batch_gives_the_same_tokens(qwen, monkeypatch):
    fixed = generate(qwen, PROMPTS, 6, batch_size=2)
    monkeypatch.setattr(batch_size, "free_bytes", lambda device: int(2 * row_bytes(qwen, 64, 32) / batch_size.SHARE))
    fitted = generate(qwen, PROMPTS, 6, batch_size=None)
    assert [g.token_ids for g in fitted] == [g.token_ids for g in fixed]
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        generate(qwen, PROMPTS, 6, batch_size=0)
