"""The bridge computes what transformers computes, on the real checkpoints.

Reference: ``AutoModelForCausalLM.from_pretrained(folder, gguf_file=NAME, dtype=float32)``,
transformers' own dequantization of the GGUF file (not mkt's converted directory), run on each
prompt alone without padding; mkt runs the prompts as one left-padded batch.
"""

from __future__ import annotations

import pytest
import torch

from mkt.generation import generate
from mkt.models import tokenize_left_padded
from tests.real.conftest import REAL_NAMES, gguf_model

pytestmark = pytest.mark.real

# different lengths, so two of the three rows are left-padded
PROMPTS = ["Question: Tom has 3 apples and buys 5 more. How many apples does he have?\nAnswer:",
           "The capital of France is", "def fibonacci(n):\n    "]
NEW_TOKENS = 5
# float32 on both sides; the batch's padded shapes and the bridge's hooked modules change the
# order of float operations only: logits of up to ~40 agree to 1e-3 absolute (measured: below 2e-4)
ATOL, RTOL = 1e-3, 1e-4


@pytest.mark.parametrize("name", REAL_NAMES)
def test_logits_and_greedy_tokens_equal_transformers_on_the_gguf_file(name, real_model, real_gguf):
    model = real_model(name)
    hf = gguf_model(real_gguf(name))
    ids, mask = tokenize_left_padded(model, PROMPTS)
    assert (mask.sum(1) < ids.shape[1]).sum() >= 2  # left padding is exercised
    with torch.no_grad():
        ours = model(ids, attention_mask=mask)
        rows = [row[m.bool()] for row, m in zip(ids, mask)]
        for i, row in enumerate(rows):  # every real position, not only the last
            torch.testing.assert_close(ours[i][mask[i].bool()], hf(row[None]).logits[0], atol=ATOL, rtol=RTOL)
        # greedy decoding with the KV cache (mkt, batched) against argmax over full recomputation (HF, alone)
        gens = generate(model, PROMPTS, max_new_tokens=NEW_TOKENS, eos_ids=[])
        for row, g in zip(rows, gens):
            seq = row
            for _ in range(NEW_TOKENS):
                seq = torch.cat([seq, hf(seq[None]).logits[0, -1].argmax()[None]])
            assert g.token_ids == seq[len(row):].tolist()
