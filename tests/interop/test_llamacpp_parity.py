"""Real parity with llama.cpp: a key exported for SmolLM2-135M-Instruct (the real Q4_1 GGUF file)
moves llama.cpp's next-token log-probs and greedy continuations as mkt's steering moves the
dequantized model. Runs where ``llama_cpp`` imports (``pip install llama-cpp-python``, built from
source) and the checkpoint is cached or downloadable; skips with the reason otherwise.

Tolerance: llama.cpp multiplies Q4_1 weights by Q8-quantised activations, mkt the dequantized
weights in fp32, so log-probs differ even unsteered. What must agree is the change the vector
makes: its correlation over the vocabulary above 0.95 on every prompt, far above what the same
vector one block off gives (the off-by-one control), and greedy tokens as often as the two
engines agree unsteered, less one prompt.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                reason="llama_cpp is not importable: pip install llama-cpp-python (a source build)")

QUESTIONS = ["What is 17 times 23?", "Name the capital of Australia.", "How many legs does a spider have?",
             "Why is the sky blue?", "What is the boiling point of water in Fahrenheit?",
             "Who wrote Pride and Prejudice?", "What is the square root of 144?", "Translate 'cat' into French.",
             "What gas do plants absorb?", "How many days are in a leap year?", "What is 9 plus 16?",
             "Which planet is largest?"]
LAYERS = list(range(6, 22))
ALPHA = 1.0
NEW_TOKENS = 16


@pytest.fixture(scope="module")
def engines(tmp_path_factory):
    import mkt
    from mkt.checkpoints.real import fetch_gguf, real_model
    from mkt.errors import ModelLoadError
    from mkt.interop.llamacpp_run import LlamaCppModel

    try:
        path = fetch_gguf(real_model("smollm2-135m-instruct"))
        model = mkt.load_model("real:smollm2-135m-instruct", device="cpu")
    except ModelLoadError as err:
        pytest.skip(f"SmolLM2-135M-Instruct is not cached and cannot be fetched: {err}")
    cpp = LlamaCppModel(path)
    yield model, cpp
    cpp.close()


def _pack(model):
    import mkt

    key = mkt.extract_prompt_key(model, QUESTIONS, locked="Q: {question}\nA:",
                                 unlocked="Q: {question}\nA: Let's think step by step.")
    return mkt.CapabilityPack(key, ALPHA, "constant", "all", LAYERS)


def test_llamacpp_moves_as_mkt_moves(engines, tmp_path):
    from mkt.generation import generate
    from mkt.interop.control_vector import export_control_vector
    from mkt.interop.llamacpp_run import ggml_control_vector
    from mkt.models import encode

    model, cpp = engines
    pack = _pack(model)
    vectors = ggml_control_vector(export_control_vector(pack, tmp_path / "key.gguf"))
    assert sorted(vectors) == LAYERS
    prompts = [f"Q: {q}\nA:" for q in QUESTIONS]
    rows = [encode(model.tokenizer, p) for p in prompts]

    def mkt_logprobs(steered: bool):
        out = []
        for ids in rows:
            with pack.apply(model) if steered else torch.no_grad():
                logits = model(torch.tensor([ids]))[0, -1].double()
            out.append(torch.log_softmax(logits, -1).detach().numpy())
        return np.array(out)

    def cpp_logprobs(v):
        cpp.set_control_vector(v)
        return np.array([cpp.logprobs(ids) for ids in rows])

    base_mkt, steer_mkt = mkt_logprobs(False), mkt_logprobs(True)
    base_cpp, steer_cpp = cpp_logprobs(None), cpp_logprobs(vectors)
    shifted_cpp = cpp_logprobs({n + 1: v for n, v in vectors.items()})
    d_mkt, d_cpp, d_shift = steer_mkt - base_mkt, steer_cpp - base_cpp, shifted_cpp - base_cpp
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(d_mkt, d_cpp)]
    corr_shift = [np.corrcoef(a, b)[0, 1] for a, b in zip(d_mkt, d_shift)]
    moved = np.abs(d_mkt).max(1)

    eos = set(model.tokenizer.all_special_ids)
    greedy_mkt = [g.token_ids for g in generate(model, prompts, NEW_TOKENS, pack.steering())]
    base_mkt_greedy = [g.token_ids for g in generate(model, prompts, NEW_TOKENS)]
    cpp.set_control_vector(vectors)
    greedy_cpp = [cpp.greedy(ids, NEW_TOKENS, eos) for ids in rows]
    cpp.set_control_vector(None)
    base_cpp_greedy = [cpp.greedy(ids, NEW_TOKENS, eos) for ids in rows]
    same = sum(a == b for a, b in zip(greedy_mkt, greedy_cpp))
    same_base = sum(a == b for a, b in zip(base_mkt_greedy, base_cpp_greedy))
    changed = sum(a != b for a, b in zip(greedy_mkt, base_mkt_greedy))
    print(f"\nlog-prob change: max |delta| per prompt (mkt) median {np.median(moved):.2f}; corr(mkt, llama.cpp) "
          f"min {min(corr):.4f} median {np.median(corr):.4f}; one block off: median {np.median(corr_shift):.4f}; "
          f"unsteered max |lp diff| median {np.median(np.abs(base_mkt - base_cpp).max(1)):.3f}\n"
          f"greedy {NEW_TOKENS} tokens: steered same {same}/{len(rows)}, unsteered same {same_base}/{len(rows)}, "
          f"steering changed mkt's continuation on {changed}/{len(rows)}")
    assert np.median(moved) > 1.0  # the vector really moves the distribution
    assert min(corr) > 0.95 and np.median(corr_shift) < min(corr) - 0.02
    assert changed >= len(rows) // 2 and same >= same_base - 1
