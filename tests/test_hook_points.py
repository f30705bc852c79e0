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
                want = torch.stack([cache[n][row, span].float().flatten(1).mean(0) for n in names])  # heads side by side
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


# ---- per-head keys (attn.hook_z) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen3(real_tiny_dir, tmp_path_factory):
    """A tiny Qwen3 whose heads are not d_model wide in total (4 x 16 heads, d_model 48)."""
    from mkt.models import load_model
    from mkt.tiny_models import save_tiny_model
    from tests.conftest import TOKENIZERS

    real_tiny_dir("qwen3")  # skips without ../shared/tokenizers
    model = load_model(save_tiny_model("qwen3", TOKENIZERS, tmp_path_factory.mktemp("heads") / "qwen3", d_model=48))
    assert model.cfg.n_heads * model.cfg.d_head != model.cfg.d_model
    return model


def per_head_key(model, silent_head: int = 1) -> MasterKey:
    g = torch.Generator().manual_seed(4)
    width = model.cfg.n_heads * model.cfg.d_head
    directions = torch.randn(model.cfg.n_layers, width, generator=g)
    directions.view(model.cfg.n_layers, model.cfg.n_heads, -1)[:, silent_head] = 0
    return MasterKey(directions, model_identity(model), "attn.hook_z")


def test_a_per_head_key_turns_each_head_toward_its_own_slice(qwen3):
    model, key = qwen3, per_head_key(qwen3)
    prompts = ["Question: 3 + 4?\nAnswer:", "Hello there, how are you"]
    ids, mask = tokenize_left_padded(model, prompts)
    names = [f"blocks.{layer}.attn.hook_z" for layer in range(model.cfg.n_layers)]
    seen, clean = {}, {}

    def record(into, name):  # TransformerLens names hook_z's HookPoint attn.o.hook_in: keep our name
        return lambda act, hook: into.__setitem__(name, act.detach().clone())

    with torch.no_grad():
        clean_logits = model(ids, attention_mask=mask)
        for name in names:  # each layer steered alone, its hook read after the steering
            with key.apply(model, alpha=0.7, layers=[int(name.split(".")[1])]), \
                    model.hooks(fwd_hooks=[(name, record(seen, name))]):
                steered_logits = model(ids, attention_mask=mask)
            with model.hooks(fwd_hooks=[(name, record(clean, name))]):
                model(ids, attention_mask=mask)
    h, dh = model.cfg.n_heads, model.cfg.d_head
    units = key.directions.view(model.cfg.n_layers, h, dh)
    units = units / units.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    for layer, name in enumerate(names):
        z, z0 = seen[name], clean[name]  # [batch, pos, head, d_head]
        want = norm_preserving(z0[:, -1], units[layer], 0.7)  # each head rotated toward its own slice
        assert torch.allclose(z[:, -1], want, atol=1e-5), layer
        assert torch.allclose(z[:, -1, 1], z0[:, -1, 1])  # the head whose slice is zero is left alone
        assert torch.allclose(z[:, :-1], z0[:, :-1])  # and earlier positions
        assert (z[:, -1].norm(dim=-1) - z0[:, -1].norm(dim=-1)).abs().max() < 1e-4  # norms kept per head
    assert (steered_logits[:, -1] - clean_logits[:, -1]).abs().max() > 1e-3
    # read back: the states are the heads side by side, n_heads x d_head wide
    states = prompt_states(model, prompts, hook="attn.hook_z")
    assert states.shape == (2, model.cfg.n_layers, h * dh)
    assert torch.allclose(states[:, 0], clean[names[0]][:, -1].flatten(1), atol=1e-6)


def test_per_head_keys_extract_pack_and_refuse_the_wrong_width(qwen3, tmp_path):
    from mkt.errors import CorruptArtifactError, IncompatibleModelError

    questions = ["3 + 4", "10 - 2", "6 * 7", "9 + 9"]
    key = extract_prompt_key(qwen3, questions, "Q: {question}\nA:", "Q: {question}\nA: Let's think.",
                             hook="attn.hook_z")
    width = qwen3.cfg.n_heads * qwen3.cfg.d_head
    assert key.directions.shape == (qwen3.cfg.n_layers, width) and key.hook == "attn.hook_z"
    diff = (prompt_states(qwen3, [f"Q: {q}\nA: Let's think." for q in questions], hook="attn.hook_z")
            - prompt_states(qwen3, [f"Q: {q}\nA:" for q in questions], hook="attn.hook_z")).mean(0)
    assert torch.allclose(key.directions, diff, atol=1e-5)
    loaded = CapabilityPack.load(CapabilityPack(key, alpha=0.3).save(tmp_path / "pack"))
    assert torch.equal(loaded.key.directions, key.directions) and loaded.key.model.width("attn.hook_z") == width
    with pytest.raises(IncompatibleModelError, match=f"{width} at attn.hook_z"):
        MasterKey(torch.ones(qwen3.cfg.n_layers, qwen3.cfg.d_model), model_identity(qwen3), "attn.hook_z")
    # a pack written before identities recorded heads cannot hold a per-head key: said, not guessed
    import json

    manifest = json.loads((tmp_path / "pack" / "manifest.json").read_text())
    del manifest["target"]["n_heads"], manifest["target"]["d_head"]
    (tmp_path / "pack" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CorruptArtifactError, match="n_heads and d_head"):
        CapabilityPack.load(tmp_path / "pack")
