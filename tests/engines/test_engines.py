"""The engine interface without vLLM: the TransformerLens engine, as_engine, and the vLLM worker's refusals."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from mkt.engines import Engine, as_engine
from mkt.engines.vllm_worker import SteeringWorker
from mkt.generation import generate
from mkt.hf_view import decoder_layers
from mkt.models import model_identity
from mkt.steering import Steering
from tests.conftest import PROMPTS


def test_as_engine_wraps_a_bridge_once_and_generates_like_generate(qwen):
    engine = as_engine(qwen)
    assert isinstance(engine, Engine) and as_engine(engine) is engine and engine.name == "transformer_lens"
    assert engine.identity == model_identity(qwen) == model_identity(engine)
    steering = Steering(torch.randn(qwen.cfg.n_layers, qwen.cfg.d_model), alpha=0.3)
    got = engine.generate(PROMPTS, 8, steering, stop=["+"])
    want = generate(qwen, PROMPTS, 8, steering, stop=["+"])
    assert [(g.token_ids, g.text) for g in got] == [(w.token_ids, w.text) for w in want]
    assert engine.weights_digest() == as_engine(qwen).weights_digest()


def test_the_worker_refuses_a_runner_it_cannot_read():
    worker = SimpleNamespace(model_runner=SimpleNamespace(requests={}))  # no input_batch: e.g. the V2 runner
    with pytest.raises(RuntimeError, match="V1 GPUModelRunner"):
        SteeringWorker.mkt_install(worker)


def test_the_worker_finds_exactly_one_list_of_decoder_layers():
    class Model(torch.nn.Module):
        def __init__(self, lists: int):
            super().__init__()
            self.config = SimpleNamespace(num_hidden_layers=2)
            for i in range(lists):
                setattr(self, f"part{i}_layers", torch.nn.ModuleList([torch.nn.Identity(), torch.nn.Identity()]))

    assert len(decoder_layers(Model(1))) == 2
    with pytest.raises(RuntimeError, match="found 2 lists"):
        decoder_layers(Model(2))
