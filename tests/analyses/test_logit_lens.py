import numpy as np
import pytest
import torch

from analyses.logit_lens import (
    entropy,
    last_token_lens,
    logit_lens_sharpening,
    plot_logit_lens,
)
from mkt.extract import extract_prompt_key
from mkt.models import load_model, tokenize_left_padded
from tests.conftest import PROMPTS


def test_last_layer_lens_equals_the_real_logits(tiny_models):
    for model in tiny_models.values():
        lens = last_token_lens(model, PROMPTS)
        ids, mask = tokenize_left_padded(model, PROMPTS)
        with torch.no_grad():
            real = torch.log_softmax(model(ids, attention_mask=mask)[:, -1].double(), -1)
        assert torch.allclose(lens[:, -1], real, atol=1e-5)
        assert lens.shape == (len(PROMPTS), model.cfg.n_layers, model.cfg.d_vocab)


def test_entropy_values():
    uniform = torch.zeros(4)
    assert entropy(uniform).item() == pytest.approx(np.log(4))
    assert entropy(torch.tensor([100.0, 0, 0])).item() == pytest.approx(0, abs=1e-6)


def test_organism_key_sharpens_toward_the_step_by_step_opener(tmp_path):
    from mkt.organisms.task import LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, problems

    model = load_model("organism:source-base", device="cpu")
    key = extract_prompt_key(model, [p.question for p in problems(64, "train", 1)], LOCKED_TEMPLATE, UNLOCKED_TEMPLATE)
    prompts = [p.prompt(False) for p in problems(40, "test")]
    r = logit_lens_sharpening(model, prompts, key, 0.5, ["T"], model_name="source-base")
    assert r.entropy.shape == (4,) and r.relative_depth[-1] == 1.0
    assert r.token_prob_key[-1] > r.token_prob[-1] + 0.3  # the final read-out now opens step by step
    plot_logit_lens(r, tmp_path / "ll.png")
    assert (tmp_path / "ll.png").stat().st_size > 10_000
