import pytest
import torch

from mkt.activations import last_token_resid
from mkt.errors import NonFiniteError
from tests.conftest import PROMPTS


def test_shape_and_batched_equals_single(tiny_models):
    for model in tiny_models.values():
        acts = last_token_resid(model, PROMPTS, batch_size=2)
        assert acts.shape == (len(PROMPTS), model.cfg.n_layers, model.cfg.d_model)
        single = torch.cat([last_token_resid(model, [p]) for p in PROMPTS])
        assert torch.allclose(acts, single, atol=1e-5)


def test_equals_hf_decoder_layer_outputs(tiny_dirs, llama):
    """Independent reading: forward hooks on the HF decoder layers, one prompt at a time."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"]).eval()
    outs = []
    handles = [layer.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o))
               for layer in hf.model.layers]
    expected = []
    with torch.no_grad():
        for p in PROMPTS:
            outs.clear()
            hf(input_ids=llama.to_tokens(p))
            expected.append(torch.stack([o[0, -1] for o in outs]))
    for h in handles:
        h.remove()
    ours = last_token_resid(llama, PROMPTS)
    assert torch.allclose(ours, torch.stack(expected), atol=1e-4)


def test_layer_subset_follows_the_list(qwen):
    full = last_token_resid(qwen, PROMPTS)
    sub = last_token_resid(qwen, PROMPTS, layers=[0, 1])
    assert torch.allclose(sub, full[:, :2], atol=1e-6)


def test_nan_activations_are_refused(tiny_dirs):
    from mkt.models import load_model

    model = load_model(tiny_dirs["gpt2"], device="cpu")
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "mlp" in n and p.ndim == 2).fill_(float("nan"))
    with pytest.raises(NonFiniteError, match="NaN or inf"):
        last_token_resid(model, PROMPTS)


def test_empty_prompt_set(qwen):
    with pytest.raises(ValueError, match="empty prompt list"):
        last_token_resid(qwen, [])
