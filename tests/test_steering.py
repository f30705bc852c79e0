import pytest
import torch

from mkt.errors import IncompatibleModelError, NonFiniteError
from mkt.generation import generate
from mkt.intervention import norm_preserving
from mkt.key import MasterKey
from mkt.models import model_identity, tokenize_left_padded
from mkt.steering import Steering
from tests.conftest import PROMPTS


@pytest.fixture(scope="module")
def key(qwen):
    g = torch.Generator().manual_seed(0)
    return MasterKey(torch.randn(qwen.cfg.n_layers, qwen.cfg.d_model, generator=g), model_identity(qwen))


def _layer0_plain_and_steered(model, key, alpha):
    """Block 0's residual on PROMPTS without and with the key applied at layer 0 only."""
    ids, mask = tokenize_left_padded(model, PROMPTS)
    name = "blocks.0.hook_resid_post"
    with torch.no_grad():
        _, plain = model.run_with_cache(ids, attention_mask=mask, names_filter=[name])
        with key.apply(model, alpha=alpha, layers=[0]):
            _, steered = model.run_with_cache(ids, attention_mask=mask, names_filter=[name])
    return plain[name], steered[name]


def test_hook_output_is_the_formula_at_the_last_prompt_token(qwen, key):
    plain, steered = _layer0_plain_and_steered(qwen, key, 0.4)
    unit = key.directions[0] / key.directions[0].norm()
    assert torch.allclose(steered[:, -1], norm_preserving(plain[:, -1], unit, 0.4), atol=1e-5)
    assert torch.equal(steered[:, :-1], plain[:, :-1])


def test_prompt_last_steering_leaves_earlier_logits_untouched(qwen, key):
    ids, mask = tokenize_left_padded(qwen, PROMPTS)
    with torch.no_grad():
        plain = qwen(ids, attention_mask=mask)
        with key.apply(qwen, alpha=0.5):
            steered = qwen(ids, attention_mask=mask)
    real = mask[:, :-1].bool()  # pad positions' outputs are meaningless (HF un-masks their rows)
    assert torch.allclose(steered[:, :-1][real], plain[:, :-1][real], atol=1e-6)
    assert (steered[:, -1] - plain[:, -1]).abs().max() > 1e-2


def test_hooks_are_removed_after_the_context(qwen, key):
    ids, mask = tokenize_left_padded(qwen, PROMPTS[:1])
    with torch.no_grad():
        before = qwen(ids, attention_mask=mask)
        with key.apply(qwen, alpha=1.0):
            pass
        after = qwen(ids, attention_mask=mask)
    assert torch.equal(before, after)


@pytest.mark.parametrize("mode", ["norm-preserving", "additive"])
def test_left_padded_batch_equals_single_prompts(qwen, key, mode):
    ids, mask = tokenize_left_padded(qwen, PROMPTS)
    with torch.no_grad(), key.apply(qwen, alpha=0.3, mode=mode):
        batched = qwen(ids, attention_mask=mask)[:, -1]
        single = torch.cat([qwen(qwen.to_tokens(p))[:, -1] for p in PROMPTS])
    assert torch.allclose(batched, single, atol=1e-4)


def test_per_row_alpha_equals_separate_runs(qwen, key):
    alphas = torch.tensor([0.0, 0.2, 0.5, 1.0, 0.1])
    ids, mask = tokenize_left_padded(qwen, PROMPTS)
    with torch.no_grad():
        with key.apply(qwen, alpha=alphas):
            rows = qwen(ids, attention_mask=mask)[:, -1]
        for i, a in enumerate(alphas.tolist()):
            with key.apply(qwen, alpha=a):
                one = qwen(ids[i : i + 1], attention_mask=mask[i : i + 1])[:, -1]
            assert torch.allclose(rows[i], one[0], atol=1e-5)


@pytest.mark.parametrize("scope", ["prompt-last", "prompt-last+generated", "prompt-all", "all"])
def test_kv_cache_and_no_cache_generation_agree(qwen, key, scope):
    steering = key.steering(alpha=0.6, scope=scope)
    cached = generate(qwen, PROMPTS, max_new_tokens=6, steering=steering)
    recomputed = generate(qwen, PROMPTS, max_new_tokens=6, steering=steering, use_cache=False)
    assert [g.token_ids for g in cached] == [g.token_ids for g in recomputed]


def test_steering_changes_generation_and_scopes_differ(qwen, key):
    plain = generate(qwen, PROMPTS, max_new_tokens=6)
    last = generate(qwen, PROMPTS, max_new_tokens=6, steering=key.steering(alpha=2.0))
    every = generate(qwen, PROMPTS, max_new_tokens=6, steering=key.steering(alpha=2.0, scope="prompt-last+generated"))
    assert [g.token_ids for g in plain] != [g.token_ids for g in last]
    assert [g.token_ids for g in last] != [g.token_ids for g in every]


def test_generation_is_reproducible_with_a_seed(qwen):
    a = generate(qwen, PROMPTS, max_new_tokens=8, do_sample=True, seed=3)
    b = generate(qwen, PROMPTS, max_new_tokens=8, do_sample=True, seed=3)
    c = generate(qwen, PROMPTS, max_new_tokens=8, do_sample=True, seed=4)
    assert [g.token_ids for g in a] == [g.token_ids for g in b] != [g.token_ids for g in c]


def test_bad_steering_input(qwen, llama, key):
    with pytest.raises(IncompatibleModelError, match="transfer it"):
        with key.apply(llama):
            pass
    with pytest.raises(ValueError, match="alpha must be a finite"):
        key.steering(alpha=float("nan"))
    with pytest.raises(IncompatibleModelError, match="unknown layer index \\[9\\]"):
        key.steering(layers=[9])
    bad = key.directions.clone()
    bad[1, 0] = float("inf")
    with pytest.raises(NonFiniteError):
        Steering(bad)
    with pytest.raises(ValueError, match="unknown intervention mode"):
        key.steering(mode="multiply")
    with pytest.raises(ValueError, match="one per prompt"):
        generate(qwen, PROMPTS, steering=key.steering(alpha=torch.tensor([0.1, 0.2])))


def test_generation_stops_at_the_context_length(tiny_models):
    gpt2 = tiny_models["gpt2"]  # 64 positions, learned position embeddings
    prompt = "Q:" + "+".join(["12"] * 18) + "|A:"  # 59 tokens with BOS
    with pytest.warns(UserWarning, match="generating at most 5 tokens"):
        out = generate(gpt2, [prompt], max_new_tokens=20)
    assert out[0].n_tokens <= 5


def test_per_prompt_directions_equal_separate_runs(qwen, key):
    """One batch with a direction set per row gives each row what its own run gives."""
    other = MasterKey(torch.randn(key.directions.shape, generator=torch.Generator().manual_seed(7)), key.model)
    prompts = PROMPTS[:4]
    per_row = torch.stack([key.directions, other.directions, other.directions, key.directions])
    alpha = torch.tensor([0.3, 0.6, 0.3, 0.6])
    batched = generate(qwen, prompts, 6, Steering(per_row, alpha=alpha), batch_size=3)
    for i, p in enumerate(prompts):
        alone = generate(qwen, [p], 6, Steering(per_row[i], alpha=float(alpha[i])))[0]
        assert batched[i].token_ids == alone.token_ids
    with pytest.raises(ValueError, match="per-prompt values"):
        generate(qwen, prompts[:3], 2, Steering(per_row, alpha=0.1))


def test_steering_arithmetic_runs_in_float32_for_a_bf16_model(tiny_dirs, key):
    from mkt.models import load_model

    model = load_model(tiny_dirs["qwen2"], device="cpu", dtype="bfloat16")
    plain, steered = _layer0_plain_and_steered(model, key, 0.05)
    unit = key.directions[0] / key.directions[0].norm()
    expected = norm_preserving(plain[:, -1].float(), unit, 0.05).to(torch.bfloat16)
    assert steered.dtype == torch.bfloat16
    assert torch.equal(steered[:, -1], expected)  # rounded once, at the end


def test_a_single_string_is_not_taken_for_a_list_of_prompts(qwen):
    from mkt.activations import last_token_resid
    from mkt.prompts import PromptTemplate

    for call in (lambda: generate(qwen, "Q:12+34|A:", 2), lambda: last_token_resid(qwen, "Q:12+34|A:"),
                 lambda: PromptTemplate("Q:{question}|A:").format_all("12+34")):
        with pytest.raises(TypeError, match="not one string"):
            call()


def test_steering_hooks_are_placed_through_methods(qwen, key):
    """locate_prompt / locate_step place a forward: the prompt-last site is the last prompt token, wherever it falls."""
    from mkt.steering import SteeringHooks

    hooks = SteeringHooks(key.steering(0.5))
    assert hooks._span(5) == slice(4, 5)  # unplaced: a prefill of 5 tokens ends on the last prompt token
    hooks.locate_prompt(3)  # a prompt of 3 tokens followed by 2 teacher-forced ones
    assert hooks._span(5) == slice(2, 3)
    hooks.locate_step(3)  # one decoding step past the prompt: nothing to steer at prompt-last
    assert hooks._span(1) is None
    with pytest.raises(ValueError, match="locate_prompt first"):
        SteeringHooks(key.steering(0.5)).locate_step(2)
