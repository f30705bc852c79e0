"""The vLLM engine on a real checkpoint (SmolLM2-135M-Instruct) against references outside mkt.

Unsteered greedy tokens equal greedy decoding by hand on transformers' own model of mkt's converted
directory; steered log-probs equal a forward of that HF model with a plain forward hook adding
``alpha * ||h|| * unit(direction)`` to the chosen decoder layers' outputs ``h`` from the last prompt token on
(the additive edit, written here, not mkt's); and the TransformerLens engine's steered greedy
tokens equal vLLM's. Skipped where vLLM cannot be imported.
"""

from __future__ import annotations

import os

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[vllm]'): the vLLM engine is not tested",
                    exc_type=ImportError)
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # one process: starts faster on 2 cores

from mkt.engines import VLLMEngine, as_engine  # noqa: E402
from mkt.generation import GenerationRequest  # noqa: E402
from mkt.models import encode  # noqa: E402
from mkt.steering import Steering  # noqa: E402
from tests.real.conftest import LOCKED, QUESTIONS, SMOLLM2  # noqa: E402

pytestmark = pytest.mark.real
PROMPTS = [LOCKED.format(question=q) for q in QUESTIONS[:4]]
NEW = 24
LAYERS, ALPHA = [8, 20], 0.5


@pytest.fixture(scope="module")
def engines(real_model):
    """(vLLM engine, TransformerLens engine, HF model) over the same converted directory."""
    from transformers import AutoModelForCausalLM

    from mkt.checkpoints import resolve_model_path

    bridge = real_model(SMOLLM2)  # skips with the fetch's reason when the checkpoint cannot be had
    path = resolve_model_path(f"real:{SMOLLM2}")
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return VLLMEngine(path, max_model_len=512, kv_cache_memory_bytes=256 * 2**20), as_engine(bridge), hf


def _direction(model) -> torch.Tensor:
    return torch.randn(model.config.num_hidden_layers, model.config.hidden_size, generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def _hf_logprobs(hf, ids: list[int], generated: list[int], direction: torch.Tensor | None) -> torch.Tensor:
    """Log-probs of each generated step from one HF forward, the additive edit hooked on by hand."""
    handles = []
    if direction is not None:
        for layer in LAYERS:
            unit = direction[layer] / direction[layer].norm()

            def add(module, args, output, unit=unit):
                hidden = output[0] if isinstance(output, tuple) else output
                steered = hidden[:, len(ids) - 1 :]  # the last prompt token and every generated one
                steered += ALPHA * steered.norm(dim=-1, keepdim=True) * unit  # mkt's additive: h + alpha ||h|| u
                return output

            handles.append(hf.model.layers[layer].register_forward_hook(add))
    try:
        logits = hf(torch.tensor([ids + generated])).logits
    finally:
        for handle in handles:
            handle.remove()
    return torch.log_softmax(logits[0, len(ids) - 1 : len(ids) - 1 + len(generated)].double(), -1)


def test_unsteered_greedy_tokens_equal_hf_greedy_decoding(engines):
    vllm, _, hf = engines
    got = vllm.generate(PROMPTS, NEW, eos_ids=[])
    for prompt, g in zip(PROMPTS, got):
        seq = encode(vllm.tokenizer, prompt)
        with torch.no_grad():  # argmax of HF's logits, EOS included (HF generate's min_new_tokens would mask it)
            for _ in range(NEW):
                seq = seq + [int(hf(torch.tensor([seq])).logits[0, -1].argmax())]
        assert g.token_ids == seq[-NEW:]


def test_steered_logprobs_equal_an_hf_forward_with_the_edit_hooked_on(engines):
    vllm, _, hf = engines
    direction = _direction(hf)
    steering = Steering(direction, alpha=ALPHA, mode="additive", layers=LAYERS, scope="prompt-last+generated")
    requests = vllm.inputs(PROMPTS, GenerationRequest(NEW, steering, eos_ids=[]))
    for params in requests["params"]:
        params.logprobs = 8
    outputs = vllm.submit(requests, steering)
    plain = vllm.generate(PROMPTS, NEW, eos_ids=[])
    worst, moved = 0.0, 0
    for prompt, out, unsteered in zip(PROMPTS, outputs, plain):
        sample, ids = out.outputs[0], encode(vllm.tokenizer, prompt)
        want = _hf_logprobs(hf, ids, list(sample.token_ids), direction)
        for step, top in enumerate(sample.logprobs):
            top_ids = torch.tensor(list(top))
            got = torch.tensor([lp.logprob for lp in top.values()], dtype=torch.float64)
            worst = max(worst, float((got - want[step, top_ids]).abs().max()))
        moved += list(sample.token_ids) != unsteered.token_ids
    assert worst < 2e-3, worst
    assert moved >= 2, "the edit must change some continuations, or the comparison shows nothing"


@pytest.mark.parametrize("scope", ["prompt-last", "prompt-last+generated"])
def test_the_two_engines_steer_to_the_same_greedy_tokens(engines, scope):
    vllm, tl, hf = engines
    steering = Steering(_direction(hf), alpha=0.3, scope=scope)  # norm-preserving, every layer: the paper's
    got, want = vllm.generate(PROMPTS, NEW, steering, eos_ids=[]), tl.generate(PROMPTS, NEW, steering, eos_ids=[])
    assert [g.token_ids for g in got] == [w.token_ids for w in want]
    assert [g.token_ids for g in got] != [p.token_ids for p in tl.generate(PROMPTS, NEW, eos_ids=[])]
