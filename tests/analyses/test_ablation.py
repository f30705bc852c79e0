import numpy as np
import pytest
import torch

from analyses.ablation import (
    generation_metric,
    layer_ablation,
    logit_diff_metric,
    plot_ablation,
)
from mkt.key import MasterKey
from mkt.models import model_identity, tokenize_left_padded
from tests.conftest import PROMPTS


@pytest.fixture
def key(qwen):
    g = torch.Generator().manual_seed(1)
    return MasterKey(torch.randn(qwen.cfg.n_layers, qwen.cfg.d_model, generator=g), model_identity(qwen))


def test_ablation_matches_an_independent_computation(qwen, key, tmp_path):
    metric = logit_diff_metric(qwen, PROMPTS, "T", "#")
    result = layer_ablation(key, metric, 0.8, qwen.cfg.n_layers, metric_name="ld", progress=False)
    a, b = (qwen.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("T", "#"))
    ids, mask = tokenize_left_padded(qwen, PROMPTS)
    with torch.no_grad():
        plain = qwen(ids, attention_mask=mask)[:, -1]
        with key.apply(qwen, alpha=0.8, layers=[1]):
            only1 = qwen(ids, attention_mask=mask)[:, -1]
        with key.apply(qwen, alpha=0.8, layers=[0, 2]):
            but1 = qwen(ids, attention_mask=mask)[:, -1]
    assert result.no_key == pytest.approx((plain[:, a] - plain[:, b]).mean().item(), abs=1e-5)
    assert result.only_layer[1] == pytest.approx((only1[:, a] - only1[:, b]).mean().item(), abs=1e-5)
    assert result.all_but_layer[1] == pytest.approx((but1[:, a] - but1[:, b]).mean().item(), abs=1e-5)
    assert np.allclose(result.relative_depth, [0, 0.5, 1])
    plot_ablation(result, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 10_000


def test_log_odds_against_the_rest(qwen):
    metric = logit_diff_metric(qwen, PROMPTS, "T", "rest")
    t = qwen.tokenizer("T", add_special_tokens=False)["input_ids"][0]
    ids, mask = tokenize_left_padded(qwen, PROMPTS)
    with torch.no_grad():
        p = torch.softmax(qwen(ids, attention_mask=mask)[:, -1].double(), -1)[:, t]
    assert metric(None) == pytest.approx(torch.log(p / (1 - p)).mean().item(), abs=1e-6)


def test_generation_metric(qwen, key):
    metric = generation_metric(qwen, PROMPTS, lambda i, text: float(len(text) > 0), max_new_tokens=3)
    assert 0.0 <= metric(None) <= 1.0
    with pytest.raises(ValueError, match="not one"):
        logit_diff_metric(qwen, PROMPTS, "T1", "#")
