"""Real-model inputs for the analyses' command lines: a tiny random model of a real
architecture with its real tokenizer, a pack made on it by ``mkt extract``, a prompt file
and a GSM8K-format task file (written here, not copied from the benchmark)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

QUESTIONS = [f"Tom has {a} apples and buys {b} more. How many apples does he have?" for a, b in
             zip(range(3, 15), range(20, 32))]


@pytest.fixture(scope="session")
def real_inputs(real_tiny_dir, tmp_path_factory):
    """``real_inputs(arch)`` -> dict(model=dir, pack=dir, prompts=file, task=file), made once per arch."""
    from mkt.cli import main

    root = tmp_path_factory.mktemp("real_inputs")
    made: dict[str, dict[str, Path]] = {}

    def get(arch: str) -> dict[str, Path]:
        if arch not in made:
            model = real_tiny_dir(arch)
            prompts = root / f"{arch}-questions.jsonl"
            prompts.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS))
            task = root / f"{arch}-task.jsonl"
            task.write_text("".join(json.dumps({"question": q, "answer": f"Add them. #### {a + b}"}) + "\n"
                                    for q, a, b in zip(QUESTIONS, range(3, 15), range(20, 32))))
            pack = root / f"{arch}-pack"
            assert main(["extract", "--model", str(model), "--questions", str(prompts), "--locked",
                         "Question: {question}\nAnswer:", "--unlocked",
                         "Question: {question}\nAnswer: Let's think step by step.", "--out", str(pack),
                         "--device", "cpu"]) == 0
            made[arch] = dict(model=model, pack=pack, prompts=prompts, task=task)
        return made[arch]

    return get
