"""The HF model under the bridge (mkt.hf_view): the same numbers as the bridge, at HF's speed.

The independent computation is the bridge itself: a no-op hook on it makes generation and
``prompt_states`` run through the bridge's own forward (as before the view existed)."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

from mkt.activations import prompt_states
from mkt.generation import generate
from mkt.hf_view import hooked, unwrapped_model
from mkt.models import resid_hook_name
from mkt.steering import Steering
from tests.conftest import PROMPTS


@contextmanager
def through_the_bridge(model):
    """A hook that changes nothing: the bridge must then run every forward."""
    with model.hooks(fwd_hooks=[(resid_hook_name(0), lambda act, hook: act)]):
        assert hooked(model)
        yield


def test_the_view_shares_the_bridges_weights_and_leaves_it_hooked_as_it_was(tiny_models):
    for model in tiny_models.values():
        view = unwrapped_model(model)
        ours = {p.data_ptr() for p in view.parameters()}
        # every weight of the view is one of the bridge's tensors (GPT-2's bridge adds split q/k/v copies)
        assert ours <= {p.data_ptr() for p in model.original_model.parameters()}
        assert not any("Bridge" in type(m).__name__ for m in view.modules())
        assert not hooked(model)


@pytest.mark.parametrize("scope", [None, "prompt-last", "prompt-last+generated"])
def test_decoding_on_the_view_gives_the_bridges_tokens(tiny_models, scope):
    for name, model in tiny_models.items():
        torch.manual_seed(0)
        steering = None if scope is None else Steering(torch.randn(model.cfg.n_layers, model.cfg.d_model),
                                                       alpha=0.5, scope=scope)
        fast = generate(model, PROMPTS, 12, steering, record_entropy=True)
        with through_the_bridge(model):
            slow = generate(model, PROMPTS, 12, steering, record_entropy=True)
        assert [g.token_ids for g in fast] == [g.token_ids for g in slow], name
        for f, s in zip(fast, slow):
            assert f.entropies == pytest.approx(s.entropies, abs=1e-4)


def test_states_on_the_view_equal_the_bridges(tiny_models):
    for name, model in tiny_models.items():
        layers = [0, model.cfg.n_layers - 1]
        fast = prompt_states(model, PROMPTS, layers, position="mean")
        with through_the_bridge(model):
            slow = prompt_states(model, PROMPTS, layers, position="mean")
        assert torch.allclose(fast, slow, atol=1e-5), name
