"""The key transfer on real checkpoints: a prompt key of SmolLM2-135M-Instruct, a Locked-only
alignment into Gemma-3-270M (another family, size and vocabulary), the transferred key steering
Gemma, and its capability pack saved and loaded.

References: the key against transformers' own forward pass (each prompt alone, states read by
forward hooks on the decoder layers); the alignment against numpy's SVD and least squares.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mkt.activations import last_token_resid
from mkt.alignment import fit_alignment, transfer
from mkt.extract import extract_prompt_key
from mkt.generation import generate
from mkt.models import model_identity, tokenize_left_padded
from mkt.pack import CapabilityPack
from tests.real.conftest import GEMMA3, LOCKED, QUESTIONS, SMOLLM2, UNLOCKED

pytestmark = pytest.mark.real

N_KEY, K = 4, 4  # questions for the key; rank of the map (fitted on all 8 Locked prompts)


@pytest.fixture(scope="module")
def source_key(real_model):
    return extract_prompt_key(real_model(SMOLLM2), QUESTIONS[:N_KEY], LOCKED, UNLOCKED, batch_size=N_KEY)


@pytest.fixture(scope="module")
def states(real_model):
    """Last-token states of the Locked prompts only, Source and Target."""
    prompts = [LOCKED.format(question=q) for q in QUESTIONS]
    return (last_token_resid(real_model(SMOLLM2), prompts, batch_size=4),
            last_token_resid(real_model(GEMMA3), prompts, batch_size=4))


def last_token_block_outputs(hf, ids: torch.Tensor) -> torch.Tensor:
    """[n_layers, d_model]: each decoder layer's output at the last token, by transformers alone."""
    out: list[torch.Tensor] = []
    hooks = [layer.register_forward_hook(lambda _m, _i, o: out.append((o[0] if isinstance(o, tuple) else o)[0, -1]))
             for layer in hf.model.layers]
    try:
        with torch.no_grad():
            hf(ids)
    finally:
        for h in hooks:
            h.remove()
    return torch.stack(out)


def test_prompt_key_is_the_mean_unlocked_minus_locked_state_of_transformers(real_model, source_key):
    from transformers import AutoModelForCausalLM

    from mkt.checkpoints import resolve_model_path

    model = real_model(SMOLLM2)
    directory = resolve_model_path(f"real:{SMOLLM2}")  # its weights equal the GGUF file's: test_parity.py
    hf = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()

    def states(template: str) -> torch.Tensor:  # each prompt alone; its ids are checked in test_tokenization.py
        return torch.stack([last_token_block_outputs(hf, tokenize_left_padded(model, [template.format(question=q)])[0])
                            for q in QUESTIONS[:N_KEY]])

    reference = (states(UNLOCKED) - states(LOCKED)).mean(0)
    assert source_key.directions.shape == (30, 576) and source_key.model == model_identity(model)
    torch.testing.assert_close(source_key.directions.float(), reference, atol=2e-3, rtol=1e-3)


def numpy_map(a: np.ndarray, b: np.ndarray, k: int) -> np.ndarray:
    """The centred rank-k least-squares map T = V_s (A V_s)^+ B V_t V_t^T (sign-free)."""
    a, b = a - a.mean(0), b - b.mean(0)
    v_s, v_t = np.linalg.svd(a)[2][:k].T, np.linalg.svd(b)[2][:k].T
    core = np.linalg.lstsq(a @ v_s, b @ v_t, rcond=None)[0]
    return v_s @ core @ v_t.T


def test_locked_only_alignment_from_smollm2_into_gemma_is_numpys_least_squares(real_model, source_key, states):
    source, target = real_model(SMOLLM2), real_model(GEMMA3)
    x_s, x_t = states
    assert x_s.shape == (8, 30, 576) and x_t.shape == (8, 18, 640)
    alignment = fit_alignment(x_s, x_t, model_identity(source), model_identity(target), k=K, center=True)
    layer_map = [int(np.floor(29 * lt / 17)) for lt in range(18)]  # relative depth, worked out by hand
    assert alignment.layer_map == layer_map and alignment.n == 8
    key = transfer(source_key, alignment)
    assert key.directions.shape == (18, 640) and key.model == model_identity(target)
    for lt, ls in enumerate(layer_map):
        t = numpy_map(x_s[:, ls].double().numpy(), x_t[:, lt].double().numpy(), K)
        expected = source_key.directions[ls].double().numpy() @ t
        np.testing.assert_allclose(key.directions[lt].double().numpy(), expected,
                                   rtol=1e-3, atol=1e-4 * np.abs(expected).max())


def test_transferred_key_steers_gemma_and_its_pack_round_trips(real_model, source_key, states, tmp_path):
    source, target = real_model(SMOLLM2), real_model(GEMMA3)
    x_s, x_t = states
    key = transfer(source_key, fit_alignment(x_s, x_t, model_identity(source), model_identity(target), k=K,
                                             center=True))
    pack = CapabilityPack(key, alpha=0.5, mode="norm-preserving")
    loaded = CapabilityPack.load(pack.save(tmp_path / "pack"))
    assert torch.equal(loaded.key.directions, key.directions.float()) and loaded.key.model == key.model
    assert (loaded.alpha, loaded.mode, loaded.key.hook) == (0.5, "norm-preserving", key.hook)
    assert loaded.key.provenance["coverage"] == key.provenance["coverage"]
    prompts = [LOCKED.format(question=q) for q in QUESTIONS[N_KEY:N_KEY + 2]]
    plain = generate(target, prompts, max_new_tokens=6)
    steered = generate(target, prompts, max_new_tokens=6, steering=loaded.steering())
    assert [g.token_ids for g in steered] == [g.token_ids for g in generate(target, prompts, max_new_tokens=6,
                                                                            steering=pack.steering())]
    assert all(a.token_ids != b.token_ids for a, b in zip(plain, steered)), [(a.text, b.text)
                                                                              for a, b in zip(plain, steered)]
