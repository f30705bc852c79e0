"""Tiny random local models (Qwen2, Llama, GPT-2) saved once per session, loaded through
the real path (TransformerBridge.boot_transformers on a local directory)."""

from __future__ import annotations

import os

# No hub in tests: fail fast instead of waiting on network time-outs (set before HF imports).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from mkt.organisms.train import OrganismSpec, build_tokenizer  # noqa: E402

# MKT_SHARED: where ../shared is for a checkout elsewhere (a git worktree, for one)
SHARED = Path(os.environ.get("MKT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))

TINY_SPECS = {
    "qwen2": OrganismSpec(arch="qwen2", d_model=64, n_layers=3, n_heads=4, seed=0, max_positions=512),
    "llama": OrganismSpec(arch="llama", d_model=48, n_layers=5, n_heads=4, seed=1, max_positions=512),
    "gpt2": OrganismSpec(arch="gpt2", d_model=32, n_layers=2, n_heads=4, seed=2, max_positions=64),
}

# Prompts in the organisms' alphabet, of different lengths (left padding matters).
PROMPTS = ["Q:12+34|A:", "Q:56+78+11|A:", "Q:99+10+20+30|A:", "S:13+57|A:", "S:22+33+44|A:"]


def save_tiny_model(spec: OrganismSpec, path: Path) -> Path:
    """A random HF model of ``spec`` with the character tokenizer, saved to ``path``."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(spec.hf_config())
    with torch.no_grad():  # larger weights than the default init: activations that differ by prompt
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(4.0)
    model.save_pretrained(path)
    build_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_models")
    return {name: save_tiny_model(spec, root / name) for name, spec in TINY_SPECS.items()}


@pytest.fixture(scope="session")
def tiny_models(tiny_dirs):
    from mkt.models import load_model

    return {name: load_model(path, device="cpu") for name, path in tiny_dirs.items()}


@pytest.fixture(scope="session")
def qwen(tiny_models):
    return tiny_models["qwen2"]


@pytest.fixture(scope="session")
def llama(tiny_models):
    return tiny_models["llama"]


# MKT_TOKENIZERS: the shared/tokenizers folder, for checkouts that do not sit beside it (worktrees)
TOKENIZERS = Path(os.environ.get("MKT_TOKENIZERS", SHARED / "tokenizers"))


@pytest.fixture(scope="session")
def real_tiny_dir(tmp_path_factory):
    """``real_tiny_dir(arch)``: a tiny random model of a real architecture with its family's real
    tokenizer (mkt.tiny_models), written once per session; skips when ../shared/tokenizers is absent."""
    from mkt.tiny_models import save_tiny_model

    if not TOKENIZERS.is_dir():
        pytest.skip("../shared/tokenizers is absent: the real-tokenizer tests need it")
    root = tmp_path_factory.mktemp("real_tiny")
    made: dict[str, Path] = {}

    def get(arch: str) -> Path:
        if arch not in made:
            made[arch] = save_tiny_model(arch, TOKENIZERS, root / arch)
        return made[arch]

    return get


@pytest.fixture
def key(qwen):
    """A random key of the tiny Qwen2 (mkt's own tests' model), shared by the conditions and analysis tests."""
    import torch

    from mkt.key import MasterKey
    from mkt.models import model_identity

    g = torch.Generator().manual_seed(1)
    return MasterKey(torch.randn(qwen.cfg.n_layers, qwen.cfg.d_model, generator=g), model_identity(qwen))
