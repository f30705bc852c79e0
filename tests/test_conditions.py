"""Conditions, and the cached-prefix path of next_token_logprobs against full forwards."""

import pytest
import torch

from mkt.activations import last_token_resid
from mkt.conditions import (
    PrefixCache,
    combine,
    mean_ablation_condition,
    next_token_logprobs,
    no_condition,
    patch_condition,
    projection_condition,
    steering_condition,
)
from mkt.key import MasterKey, random_like
from mkt.models import load_model, model_identity, resid_hook_name, tokenize_left_padded
from mkt.steering import Steering
from mkt.tiny_models import ARCHITECTURES
from tests.conftest import PROMPTS


def test_projection_removes_the_direction_at_the_last_token_or_everywhere(qwen, key):
    last = projection_condition(key.directions, "last")(qwen, slice(0, len(PROMPTS)))
    with last:
        resid = last_token_resid(qwen, PROMPTS)
    units = key.directions / key.directions.norm(dim=-1, keepdim=True)
    assert (resid * units).sum(-1).abs().max() < 1e-4  # every layer, every prompt
    clean = last_token_resid(qwen, PROMPTS)
    assert (clean * units).sum(-1).abs().min() > 1e-3  # ... which the clean run does have
    names = [resid_hook_name(layer) for layer in range(qwen.cfg.n_layers)]
    ids, mask = tokenize_left_padded(qwen, PROMPTS)
    for scope, expect_zero_before_last in (("last", False), ("all", True)):
        with torch.no_grad(), projection_condition(key.directions, scope)(qwen, slice(0, 5)):
            _, cache = qwen.run_with_cache(ids, attention_mask=mask, names_filter=names)
        along = torch.stack([cache[n] @ units[i] for i, n in enumerate(names)])  # [layer, batch, pos]
        assert along[..., -1].abs().max() < 1e-4
        assert (along[..., :-1][:, mask[:, :-1].bool()].abs().max() < 1e-4) == expect_zero_before_last


def test_patching_writes_each_rows_donor_across_batches(qwen):
    donor = torch.randn(len(PROMPTS), qwen.cfg.d_model, generator=torch.Generator().manual_seed(3))
    patched = next_token_logprobs(qwen, PROMPTS, patch_condition(1, donor), batch_size=2)  # 3 batches
    for i, prompt in enumerate(PROMPTS):
        alone = next_token_logprobs(qwen, [prompt], patch_condition(1, donor[i : i + 1]))
        assert torch.allclose(patched[i], alone[0], atol=1e-5)
    with patch_condition(1, donor)(qwen, slice(0, 5)):
        assert torch.allclose(last_token_resid(qwen, PROMPTS, layers=[1])[:, 0], donor, atol=1e-6)


def conditions(model, key):
    """Conditions of every kind, each with per-row values for ``PROMPTS * 2`` (rows differ by repeat)."""
    n, d = len(PROMPTS), model.cfg.d_model
    g = torch.Generator().manual_seed(5)
    per_row = torch.randn(2 * n, model.cfg.n_layers, d, generator=g)
    means = torch.linspace(-1, 1, model.cfg.n_layers)
    return {
        "none": no_condition,
        "steering": steering_condition(Steering(per_row, torch.linspace(0.2, 1.0, 2 * n), layers=[0, 2])),
        "projection last": projection_condition(per_row, "last"),
        "projection all": projection_condition(key.directions, "all"),
        "mean ablation": mean_ablation_condition(key.directions, means),
        "patch": patch_condition(1, torch.randn(2 * n, d, generator=g)),
        "combined": combine(steering_condition(key.steering(alpha=0.5)), projection_condition(per_row, "last")),
    }


def test_the_cached_prefix_gives_the_full_forwards_numbers(qwen, key):
    """Every condition, repeated twice with per-row values, batched across prompt boundaries or all prompts in one
    batch: cached = full."""
    for name, condition in conditions(qwen, key).items():
        full = next_token_logprobs(qwen, PROMPTS, condition, batch_size=3, repeat=2)
        prefixes = PrefixCache()
        cached = next_token_logprobs(qwen, PROMPTS, condition, batch_size=3, repeat=2, prefixes=prefixes)
        assert cached.shape == (2 * len(PROMPTS), qwen.cfg.d_vocab)
        assert (cached - full).abs().max() < 1e-4, name
        # one batch of every prompt: the repeats run together over a tiled cache
        together = next_token_logprobs(qwen, PROMPTS, condition, batch_size=8, repeat=2, prefixes=PrefixCache())
        assert (together - full).abs().max() < 1e-4, name
        # the cached path is taken for every condition that edits the last prompt token only
        assert bool(prefixes._entries) == condition.last_only, name
        assert all(entry is not None for entry in prefixes._entries.values())
    # the conditions change the numbers (a check that the hooks ran at all on the cached path)
    plain = next_token_logprobs(qwen, PROMPTS, repeat=2, prefixes=PrefixCache())
    for name, condition in conditions(qwen, key).items():
        moved = (next_token_logprobs(qwen, PROMPTS, condition, repeat=2, prefixes=PrefixCache()) - plain).abs().max()
        assert (moved > 1e-3) == (name != "none"), name


def test_the_models_own_hooks_are_never_left_out_by_a_warm_cache(qwen, key):
    prefixes = PrefixCache()
    clean = next_token_logprobs(qwen, PROMPTS, prefixes=prefixes)  # warms the cache without hooks
    with key.apply(qwen, alpha=0.8):
        outer = next_token_logprobs(qwen, PROMPTS, prefixes=prefixes)
        assert torch.allclose(outer, next_token_logprobs(qwen, PROMPTS), atol=1e-9)  # = a full forward, hooked
    assert (outer - clean).abs().max() > 1e-2
    # hooks registered with torch directly, on any module, are seen too
    def scale(module, args, out):
        return out * 1.5 if torch.is_tensor(out) else (out[0] * 1.5, *out[1:])

    handle = qwen.blocks[0].register_forward_hook(scale)
    try:
        hooked = next_token_logprobs(qwen, PROMPTS, prefixes=prefixes)
        assert torch.allclose(hooked, next_token_logprobs(qwen, PROMPTS), atol=1e-9)
        assert (hooked - clean).abs().max() > 1e-3
    finally:
        handle.remove()
    assert torch.allclose(next_token_logprobs(qwen, PROMPTS, prefixes=prefixes), clean, atol=1e-9)


def test_a_prefix_that_fails_its_check_or_is_empty_falls_back_to_full_forwards(qwen, key):
    condition = steering_condition(key.steering(alpha=0.5))
    full = next_token_logprobs(qwen, PROMPTS, condition, batch_size=2)
    never = PrefixCache(tolerance=-1.0)  # no cached batch can pass: every row runs in full
    assert torch.allclose(next_token_logprobs(qwen, PROMPTS, condition, batch_size=2, prefixes=never), full, atol=1e-9)
    assert list(never._entries.values()) == [None] * 3
    # a prompt of one token (its BOS) has no prefix; its batch runs in full, the others from the cache
    bos = qwen.tokenizer.bos_token or qwen.tokenizer.decode(tokenize_left_padded(qwen, ["Q"])[0][0, :1])
    prompts = PROMPTS[:2] + [bos] + PROMPTS[2:]
    mixed = PrefixCache()
    got = next_token_logprobs(qwen, prompts, condition, batch_size=2, repeat=2, prefixes=mixed)
    assert [e is None for e in mixed._entries.values()] == [False, True, False]
    assert (got - next_token_logprobs(qwen, prompts, condition, batch_size=2, repeat=2)).abs().max() < 1e-4


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_the_cached_prefix_on_every_real_architecture(arch, real_tiny_dir):
    """Real tokenizers, left padding, rotary / learned positions, sliding windows: the cache replays exactly."""
    model = load_model(real_tiny_dir(arch))
    prompts = ["Question: Tom has 3 apples.\nAnswer:", "Hi there", "Question: what is 12 + 30?\nAnswer: Let's think"]
    steering = steering_condition(random_like(MasterKey(torch.ones(model.cfg.n_layers, model.cfg.d_model),
                                                        model_identity(model)), 0).steering(alpha=0.5))
    prefixes = PrefixCache()
    cached = next_token_logprobs(model, prompts, steering, repeat=2, prefixes=prefixes)
    assert list(prefixes._entries.values())[0] is not None  # the check passed: the cached path was used
    assert (cached - next_token_logprobs(model, prompts, steering, repeat=2)).abs().max() < 1e-4
