"""mkt's token ids on the real checkpoints equal transformers' own GGUF tokenizer's, with each
family's BOS rule stated explicitly: Gemma prepends ``<bos>`` (id 2; its GGUF file says
``tokenizer.ggml.add_bos_token = true``, which transformers' GGUF tokenizer ignores), SmolLM2
and Qwen prepend nothing (their tokenizers define a BOS they never add)."""

from __future__ import annotations

import pytest

from mkt.models import tokenize_left_padded
from mkt.prompts import PromptFormat, PromptTemplate
from tests.real.conftest import CHAT_MODELS, GEMMA3, LOCKED, QUESTIONS, REAL_NAMES, UNLOCKED

pytestmark = pytest.mark.real

PLAIN = [LOCKED.format(question=QUESTIONS[0]), UNLOCKED.format(question=QUESTIONS[1]),
         "  leading spaces, ünïcödé — and a tab\t!", "def add(a, b):\n    return a + b\n"]
GEMMA_BOS = 2


@pytest.mark.parametrize("name", REAL_NAMES)
def test_plain_prompt_ids_are_the_gguf_tokenizers_with_the_familys_bos(name, real_model, gguf_tokenizer):
    model, tok = real_model(name), gguf_tokenizer(name)
    ids, mask = tokenize_left_padded(model, PLAIN)
    for row, m, text in zip(ids, mask, PLAIN):
        got, ref = row[m.bool()].tolist(), tok(text)["input_ids"]
        if name == GEMMA3:  # the family adds its BOS, once; transformers' GGUF tokenizer drops it
            assert tok.convert_ids_to_tokens(GEMMA_BOS) == "<bos>"
            assert got[0] == GEMMA_BOS and got.count(GEMMA_BOS) == 1
            assert got[1:] == [i for i in ref if i != GEMMA_BOS]
        else:  # a BOS is defined but never added
            assert tok.bos_token_id is not None and tok.bos_token_id not in got
            assert got == ref


@pytest.mark.parametrize("name", CHAT_MODELS)
def test_chat_prompt_ids_are_the_gguf_tokenizers_chat_template(name, real_model, gguf_tokenizer):
    model, tok = real_model(name), gguf_tokenizer(name)
    for template in (LOCKED, UNLOCKED):
        fmt = PromptFormat(PromptTemplate(template), chat=True)
        ids, mask = tokenize_left_padded(model, fmt.render_all(model.tokenizer, QUESTIONS[:2]))
        for row, m, question in zip(ids, mask, QUESTIONS[:2]):
            ref = tok.apply_chat_template([{"role": "user", "content": template.format(question=question)}],
                                          tokenize=True, add_generation_prompt=True)
            ref = list(ref["input_ids"] if hasattr(ref, "keys") else ref)
            assert row[m.bool()].tolist() == ref
            assert ref[0] == tok.convert_tokens_to_ids("<|im_start|>")  # ChatML, both families


def test_gemma_base_has_no_chat_template(real_model, gguf_tokenizer):
    assert not gguf_tokenizer(GEMMA3).chat_template and not real_model(GEMMA3).tokenizer.chat_template
