"""Generation on the real checkpoints ends on every EOS the family lists and on stop strings.

The EOS lists are the families' published ``generation_config.json`` ones, written out here
(not read from mkt's converted directory) and checked by name in transformers' GGUF tokenizer.
"""

from __future__ import annotations

import pytest

from mkt.generation import generate
from mkt.models import eos_token_ids
from tests.real.conftest import GEMMA3, LOCKED, QUESTIONS, REAL_NAMES, SMOLLM2
from tests.test_real_models import ForceToken

pytestmark = pytest.mark.real

FAMILY_EOS = {
    SMOLLM2: {2: "<|im_end|>"},
    GEMMA3: {1: "<eos>", 106: "<end_of_turn>"},
    "qwen2.5-coder-0.5b-instruct": {151645: "<|im_end|>", 151643: "<|endoftext|>"},
}


@pytest.mark.parametrize("name", REAL_NAMES)
def test_generation_stops_on_every_eos_of_the_family(name, real_model, gguf_tokenizer):
    model, tok = real_model(name), gguf_tokenizer(name)
    assert set(eos_token_ids(model)) == set(FAMILY_EOS[name])
    assert {i: tok.convert_ids_to_tokens(i) for i in FAMILY_EOS[name]} == FAMILY_EOS[name]
    prompts = [LOCKED.format(question=q) for q in QUESTIONS[:2]]  # two lengths: one row is left-padded
    for eos in FAMILY_EOS[name]:
        for g in generate(model, prompts, max_new_tokens=6, logit_offset=ForceToken(eos, 2, model.cfg.d_vocab)):
            assert g.stopped and g.n_tokens == 2 and eos not in g.token_ids, (eos, g.token_ids)


def test_stop_strings_cut_a_base_models_next_question(real_model):
    """Gemma-3-270M base, shown one solved question, writes the answer and then a new question:
    the GSM8K stop "\\nQuestion:" ends it there; a stop from inside a token cuts where it begins."""
    model = real_model(GEMMA3)
    prompt = "Question: What is 2 + 3?\nAnswer: 5\n\nQuestion: What is 4 + 4?\nAnswer:"
    free = generate(model, [prompt], max_new_tokens=10, eos_ids=[])[0]
    assert "\nQuestion:" in free.text, free.text  # the base model continues the pattern
    for stop in ("\nQuestion:", free.text[1:3]):
        cut = generate(model, [prompt], max_new_tokens=10, stop=[stop], eos_ids=[])[0]
        assert cut.stopped and cut.text == free.text[: free.text.find(stop)], (stop, cut.text)
        assert cut.n_tokens < free.n_tokens
