"""Keys read and written at any hook point, at any prompt positions, steered at any scope."""

import pytest
import torch

from mkt.activations import last_token_resid, prompt_states
from mkt.extract import extract_prompt_key
from mkt.generation import generate
from mkt.intervention import norm_preserving
from mkt.key import MasterKey
from mkt.models import HOOK_POINTS, model_identity, tokenize_left_padded
from mkt.pack import CapabilityPack
from mkt.positions import check_position, position_weights
from mkt.steering import Steering
from tests.conftest import PROMPTS


def test_position_weights_against_a_loop():
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]])
    ids = torch.tensor([[0, 0, 9, 5, 6, 7], [3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 9, 4]])  # 9 is BOS
    for position in ("last", "mean", "last-2", "last-10"):
        w = position_weights(mask, ids, 9, position)
        for row in range(3):
            real = [p for p in range(6) if mask[row, p] and not (p == 6 - int(mask[row].sum()) and ids[row, p] == 9)]
            if position == "last":
                chosen = [5]
            elif position == "mean":
                chosen = real
            else:
                chosen = real[-int(position.split("-")[1]):]
            expected = torch.zeros(6)
            expected[chosen] = 1 / len(chosen)
            assert torch.allclose(w[row], expected), (position, row)
    with pytest.raises(ValueError, match="unknown position 'last-0'"):
        check_position("last-0")


def test_prompt_states_at_every_hook_and_position_equal_a_direct_read(qwen):
    ids, mask = tokenize_left_padded(qwen, PROMPTS)
    bos = qwen.tokenizer.bos_token_id
    for hook in HOOK_POINTS:
        names = [f"blocks.{layer}.{hook}" for layer in range(qwen.cfg.n_layers)]
        with torch.no_grad():
            _, cache = qwen.run_with_cache(ids, attention_mask=mask, names_filter=names)
        for position in ("last", "mean", "last-3"):
            got = prompt_states(qwen, PROMPTS, hook=hook, position=position)
            for row in range(len(PROMPTS)):
                start = int((mask[row] == 0).sum()) + (1 if ids[row, (mask[row] == 0).sum()] == bos else 0)
                span = {"last": slice(ids.shape[1] - 1, None), "mean": slice(start, None),
                        "last-3": slice(max(start, ids.shape[1] - 3), None)}[position]
                want = torch.stack([cache[n][row, span].float().mean(0) for n in names])
                assert torch.allclose(got[row], want, atol=1e-5), (hook, position, row)
    assert torch.equal(prompt_states(qwen, PROMPTS), last_token_resid(qwen, PROMPTS))


@pytest.mark.parametrize("hook", ["hook_attn_out", "hook_mlp_out", "hook_resid_pre"])
def test_a_key_is_written_at_its_own_hook(qwen, hook):
    g = torch.Generator().manual_seed(3)
    key = MasterKey(torch.randn(qwen.cfg.n_layers, qwen.cfg.d_model, generator=g), model_identity(qwen), hook)
    ids, mask = tokenize_left_padded(qwen, PROMPTS)
    name = f"blocks.1.{hook}"
    with torch.no_grad():
        _, plain = qwen.run_with_cache(ids, attention_mask=mask, names_filter=[name])
        with key.apply(qwen, alpha=0.5, layers=[1]):
            _, steered = qwen.run_with_cache(ids, attention_mask=mask, names_filter=[name])
    unit = key.directions[1] / key.directions[1].norm()
    assert torch.allclose(steered[name][:, -1], norm_preserving(plain[name][:, -1], unit, 0.5), atol=1e-5)
    assert torch.equal(steered[name][:, :-1], plain[name][:, :-1])



@pytest.mark.parametrize("hook", ["hook_attn_out", "hook_resid_mid"])
def test_packs_keep_the_keys_hook(qwen, hook, tmp_path):
    key = MasterKey(torch.ones(qwen.cfg.n_layers, qwen.cfg.d_model), model_identity(qwen), hook)
    pack = CapabilityPack.load(CapabilityPack(key, alpha=0.5, scope="prompt-all").save(tmp_path / "p"))
    assert pack.key.hook == hook and pack.steering().hook == hook and pack.steering().scope == "prompt-all"


def test_prompt_all_steers_every_real_prompt_token_and_all_steers_generation(qwen):
    g = torch.Generator().manual_seed(4)
    key = MasterKey(torch.randn(qwen.cfg.n_layers, qwen.cfg.d_model, generator=g), model_identity(qwen))
    ids, mask = tokenize_left_padded(qwen, PROMPTS)
    name = "blocks.0.hook_resid_post"
    with torch.no_grad():
        _, plain = qwen.run_with_cache(ids, attention_mask=mask, names_filter=[name])
        with key.apply(qwen, alpha=0.3, layers=[0], scope="prompt-all"):
            _, steered = qwen.run_with_cache(ids, attention_mask=mask, names_filter=[name])
    unit = key.directions[0] / key.directions[0].norm()
    real = mask.bool()
    assert torch.allclose(steered[name][real], norm_preserving(plain[name][real], unit, 0.3), atol=1e-5)
    prompt_all = generate(qwen, PROMPTS, 6, Steering(key.directions, 0.8, scope="prompt-all"))
    everywhere = generate(qwen, PROMPTS, 6, Steering(key.directions, 0.8, scope="all"))
    assert [x.token_ids for x in prompt_all] != [x.token_ids for x in everywhere]


def test_extraction_records_hook_and_position(qwen):
    key = extract_prompt_key(qwen, ["12+34", "56+7", "9+10"], "Q:{question}|A:", "S:{question}|A:",
                             hook="hook_mlp_out", position="mean")
    assert key.hook == "hook_mlp_out" and key.provenance["position"] == "mean"
    h_s = prompt_states(qwen, ["S:12+34|A:", "S:56+7|A:", "S:9+10|A:"], hook="hook_mlp_out", position="mean")
    h_q = prompt_states(qwen, ["Q:12+34|A:", "Q:56+7|A:", "Q:9+10|A:"], hook="hook_mlp_out", position="mean")
    assert torch.allclose(key.directions, (h_s - h_q).mean(0), atol=1e-6)
