import pytest
import torch

from mkt.errors import IncompatibleModelError, MktError, ModelLoadError
from mkt.eval.organism_task import SPECIAL_TOKENS, VOCAB_CHARS
from mkt.models import check_layers, load_model, load_random_init, model_identity, tokenize_left_padded
from tests.conftest import PROMPTS, TINY_SPECS

N_VOCAB = len(SPECIAL_TOKENS) + len(VOCAB_CHARS)


def test_identity_of_each_architecture(tiny_models):
    for name, model in tiny_models.items():
        ident = model_identity(model)
        spec = TINY_SPECS[name]
        assert (ident.n_layers, ident.d_model, ident.d_vocab) == (spec.n_layers, spec.d_model, N_VOCAB)
        assert ident.name == name  # local dirs are named by their folder


def test_bridge_logits_equal_hf(tiny_dirs, qwen):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs["qwen2"]).eval()
    ids, mask = tokenize_left_padded(qwen, PROMPTS)
    with torch.no_grad():
        ours = qwen(ids, attention_mask=mask)
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        theirs = hf(input_ids=ids, attention_mask=mask, position_ids=pos).logits
    assert torch.allclose(ours[:, -1], theirs[:, -1], atol=1e-4)


def test_left_padding_and_mask(qwen):
    ids, mask = tokenize_left_padded(qwen, PROMPTS)
    lengths = [len(qwen.to_tokens(p)[0]) for p in PROMPTS]
    assert mask.sum(1).tolist() == lengths
    assert (mask[:, -1] == 1).all()
    assert ids[0, -lengths[0]:].tolist() == qwen.to_tokens(PROMPTS[0])[0].tolist()
    with pytest.raises(ValueError, match="empty prompt"):
        tokenize_left_padded(qwen, [])


def test_prompts_longer_than_the_context_are_refused_not_truncated(tiny_models):
    gpt2 = tiny_models["gpt2"]  # 64 positions
    with pytest.raises(MktError, match="prompt 1 is 83 tokens but the model's context is 64"):
        tokenize_left_padded(gpt2, ["Q:1+2|A:", "Q:" + "+".join(["12"] * 26) + "|A:"])


def test_unknown_layer_is_a_clear_error():
    assert check_layers(None, 3) == [0, 1, 2]
    with pytest.raises(IncompatibleModelError, match="unknown layer index \\[7\\].*0..2"):
        check_layers([0, 7], 3)


def test_missing_model_offline_says_pass_a_local_path(tmp_path):
    with pytest.raises(ModelLoadError, match="local HF model directory"):
        load_model("no-such-org/no-such-model-xyz", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="config.json"):
        load_model(tmp_path / "empty", device="cpu")


def test_load_random_init_keeps_the_config_and_tokenizer_not_the_weights(tiny_dirs):
    trained = load_model(tiny_dirs["llama"], device="cpu")
    fresh = load_random_init(tiny_dirs["llama"], seed=3)
    a, b = model_identity(trained), model_identity(fresh)
    assert (a.n_layers, a.d_model, a.d_vocab) == (b.n_layers, b.d_model, b.d_vocab)
    assert b.name == "random-init-llama-seed3"
    assert fresh.to_tokens("Q:12+34|A:").tolist() == trained.to_tokens("Q:12+34|A:").tolist()
    w_trained, w_fresh = trained.blocks[0].mlp.state_dict(), fresh.blocks[0].mlp.state_dict()
    assert not all(torch.equal(w_trained[k], w_fresh[k]) for k in w_trained)
    again = load_random_init(tiny_dirs["llama"], seed=3).blocks[0].mlp.state_dict()
    assert all(torch.equal(again[k], w_fresh[k]) for k in w_fresh)  # seeded
