"""Real parity with llama.cpp: a key exported for SmolLM2-135M-Instruct (the real Q4_1 GGUF file)
moves llama.cpp's next-token log-probs and greedy continuations as mkt's steering moves the
dequantized model. Runs where ``llama_cpp`` imports (``pip install llama-cpp-python``, built from
source) and the checkpoint is cached or downloadable; skips with the reason otherwise.

Tolerance: llama.cpp multiplies Q4_1 weights by Q8-quantised activations, mkt the dequantized
weights in fp32, so log-probs differ even unsteered (the control). What must agree is the change
the vector makes: its correlation over the vocabulary above 0.99 on every prompt (measured: 0.998
at the lowest). The pack steers four blocks eight apart, so that the same vectors one block later
or earlier (an off-by-one in the layer index) move the model differently enough to fail that bar
(measured: median 0.965 and 0.946); on a run of adjacent blocks a shift only moves the two ends
and would pass. Greedy continuations must agree as often as the two engines agree unsteered,
less one prompt.
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
LAYERS = [2, 10, 18, 26]
ALPHA = 1.0
NEW_TOKENS = 16
MIN_CORRELATION = 0.99


@pytest.fixture(scope="module")
def engines():
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


def _correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``."""
    return np.array([np.corrcoef(x, y)[0, 1] for x, y in zip(a, b)])


def test_llamacpp_moves_as_mkt_moves(engines, tmp_path):
    from mkt.generation import generate
    from mkt.interop.control_vector import export_control_vector
    from mkt.interop.llamacpp_run import ggml_control_vector
    from mkt.models import encode

    model, cpp = engines
    pack = _pack(model)
    vectors = ggml_control_vector(export_control_vector(pack, tmp_path / "key.gguf"))
    assert sorted(vectors) == LAYERS
    later, earlier = ({n + shift: v for n, v in vectors.items()} for shift in (1, -1))
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

    def cpp_greedy(v):
        cpp.set_control_vector(v)
        return [cpp.greedy(ids, NEW_TOKENS, eos) for ids in rows]

    base_mkt, steer_mkt = mkt_logprobs(False), mkt_logprobs(True)
    base_cpp = cpp_logprobs(None)
    d_mkt = steer_mkt - base_mkt
    corr, corr_later, corr_earlier = (_correlations(d_mkt, cpp_logprobs(v) - base_cpp)
                                      for v in (vectors, later, earlier))
    moved = np.abs(d_mkt).max(1)

    eos = set(model.tokenizer.all_special_ids)
    greedy_mkt = [g.token_ids for g in generate(model, prompts, NEW_TOKENS, pack.steering())]
    base_mkt_greedy = [g.token_ids for g in generate(model, prompts, NEW_TOKENS)]
    greedy_cpp, later_cpp, base_cpp_greedy = (cpp_greedy(v) for v in (vectors, later, None))
    same = sum(a == b for a, b in zip(greedy_mkt, greedy_cpp))
    same_later = sum(a == b for a, b in zip(greedy_mkt, later_cpp))
    same_base = sum(a == b for a, b in zip(base_mkt_greedy, base_cpp_greedy))
    changed = sum(a != b for a, b in zip(greedy_mkt, base_mkt_greedy))
    print(f"\nnext-token log-prob change, max |delta| per prompt (mkt): median {np.median(moved):.2f} nats; "
          f"unsteered max |log-prob gap| between the engines: median {np.median(np.abs(base_mkt - base_cpp).max(1)):.3f}\n"
          f"corr(mkt, llama.cpp) of the change: min {corr.min():.4f} median {np.median(corr):.4f}; "
          f"one block later: min {corr_later.min():.4f} median {np.median(corr_later):.4f}; "
          f"one block earlier: min {corr_earlier.min():.4f} median {np.median(corr_earlier):.4f}\n"
          f"greedy {NEW_TOKENS} tokens identical: steered {same}/{len(rows)}, unsteered {same_base}/{len(rows)}, "
          f"one block later {same_later}/{len(rows)}; steering changed mkt's continuation on {changed}/{len(rows)}")
    assert np.median(moved) > 1.0  # the vector really moves the distribution
    assert corr.min() > MIN_CORRELATION
    # The off-by-one control: the same vectors one block off fail the bar this test sets.
    assert np.median(corr_later) < MIN_CORRELATION and np.median(corr_earlier) < MIN_CORRELATION
    assert changed >= len(rows) // 2 and same >= same_base - 1
