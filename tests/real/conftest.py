"""The real-weights tier: the three trained checkpoints of the real-model zoo (``real:NAME``),
each loaded once per session, and the references they are tested against.

Every model is taken from mkt's cache ($MKT_CACHE, filled by ``mkt models fetch --all`` in
.ci/run) or fetched on first use; when it is neither cached nor fetchable (offline), the tests
that need it skip with the fetch's own one-line reason. Tests that need the benchmark data skip
when ../shared is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED

SMOLLM2, GEMMA3, QWEN2 = "smollm2-135m-instruct", "gemma-3-270m", "qwen2.5-coder-0.5b-instruct"
REAL_NAMES = (SMOLLM2, GEMMA3, QWEN2)
CHAT_MODELS = (SMOLLM2, QWEN2)  # Gemma-3-270M is the base model: its GGUF file has no chat template
LOCKED = "Question: {question}\nAnswer:"
UNLOCKED = "Question: {question}\nAnswer: Let's think step by step."
QUESTIONS = [
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "A train travels 60 miles in 2 hours. What is its speed in miles per hour?",
    "Sara reads 12 pages a day for 4 days. How many pages does she read?",
    "A box holds 24 pencils. Half are red. How many are not red?",
    "Ben had 40 dollars and spent 15. How much money is left?",
    "There are 7 rows of 6 chairs. How many chairs are there?",
    "A cake is cut into 8 slices and 3 are eaten. How many slices remain?",
    "Mia is 9 years old and her brother is twice her age. How old is he?",
]


class _Once:
    """Memoizes a slow getter per name, its failures included (a failed fetch is not retried)."""

    def __init__(self, get) -> None:
        self.get, self.done = get, {}

    def __call__(self, name: str):
        from mkt.errors import ModelLoadError

        if name not in self.done:
            try:
                self.done[name] = (True, self.get(name))
            except ModelLoadError as err:  # not cached and not fetchable: offline, or the index changed
                self.done[name] = (False, f"real:{name} is not cached and could not be fetched: {err}")
        ok, value = self.done[name]
        if not ok:
            pytest.skip(value)
        return value


@pytest.fixture(scope="session")
def real_model():
    """``real_model(name)``: the bridge of ``real:NAME`` (``mkt.load_model``), loaded once per session."""
    from mkt.models import load_model

    return _Once(lambda name: load_model(f"real:{name}", device="cpu"))


@pytest.fixture(scope="session")
def real_gguf():
    """``real_gguf(name)``: the sha256-verified GGUF file of ``real:NAME``, the references' source."""
    from mkt.checkpoints.real import fetch_gguf, real_model

    return _Once(lambda name: fetch_gguf(real_model(name), progress=lambda *_: None))


@pytest.fixture(scope="session")
def gguf_tokenizer(real_gguf):
    """``gguf_tokenizer(name)``: the tokenizer transformers itself reads from the GGUF file of
    ``real:NAME`` (no mkt code on the way), once per session (it takes seconds to build)."""
    from transformers import AutoTokenizer

    def load(name: str):
        path = real_gguf(name)
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)

    return _Once(load)


def gguf_model(path: Path):
    """The model transformers itself dequantizes from a GGUF file, in float32 (no mkt code on the way)."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32).eval()


@pytest.fixture(scope="session")
def gsm8k() -> Path:
    """GSM8K's test split in ../shared/data (never copied into the repository)."""
    path = SHARED / "data" / "gsm8k" / "test.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is absent: the benchmark tests need ../shared/data (set MKT_SHARED to its folder)")
    return path
