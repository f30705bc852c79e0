"""The command line on a real checkpoint: ``mkt extract``, ``mkt eval`` on GSM8K items from
../shared/data, and every ``mkt analyze`` analysis at its smallest settings (SmolLM2-135M-Instruct;
similarity into Gemma-3-270M). These check that each runs and writes what it says on real
weights and vocabularies, with the records checked against the benchmark file read here."""

from __future__ import annotations

import json

import pytest

from mkt.cli import main
from tests.analyses.smallest import run_keyed_analyses_at_smallest_settings
from tests.real.conftest import GEMMA3, LOCKED, QUESTIONS, SMOLLM2, UNLOCKED

pytestmark = pytest.mark.real

MODEL = f"real:{SMOLLM2}"


@pytest.fixture(scope="module")
def inputs(real_model, tmp_path_factory):
    """A question file, a GSM8K-format task file written here, and a pack made by `mkt extract`."""
    real_model(SMOLLM2)  # skips when the model cannot be had
    root = tmp_path_factory.mktemp("real_commands")
    questions, task, pack = root / "questions.jsonl", root / "task.jsonl", root / "pack"
    questions.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS))
    task.write_text("".join(json.dumps({"question": q, "answer": f"#### {i}"}) + "\n" for i, q in enumerate(QUESTIONS)))
    assert main(["extract", "--model", MODEL, "--questions", str(questions), "--locked", LOCKED, "--unlocked",
                 UNLOCKED, "--out", str(pack), "--device", "cpu", "--batch-size", "4"]) == 0
    manifest = json.loads((pack / "manifest.json").read_text())
    assert manifest["target"]["n_layers"] == 30 and manifest["target"]["d_model"] == 576
    return dict(questions=questions, task=task, pack=pack)


def test_eval_on_gsm8k_items(gsm8k, inputs, tmp_path):  # the data first: no extraction to skip after
    out = tmp_path / "run"
    assert main(["eval", "--model", MODEL, "--task", str(gsm8k), "--limit", "3", "--max-new-tokens", "8",
                 "--batch-size", "3", "--pack", str(inputs["pack"]), "--alpha", "0.2", "--out", str(out),
                 "--device", "cpu"]) == 0
    items = [json.loads(line) for line in gsm8k.read_text().splitlines()[:3]]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 3
    for item, r in zip(items, records):
        assert r["prompt"] == LOCKED.format(question=item["question"])  # the direct GSM8K template
        assert r["gold"] == item["answer"].split("####")[-1].strip().replace(",", "")
        assert r["correct"] == (r["extracted"] == r["gold"]) and 1 <= r["n_tokens"] <= 8
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 3 and summary["accuracy"] == sum(r["correct"] for r in records) / 3


def test_every_analysis_runs_at_its_smallest_settings(inputs, real_model, tmp_path):
    run_keyed_analyses_at_smallest_settings(MODEL, str(inputs["pack"]), str(inputs["task"]), tmp_path)
    real_model(GEMMA3)  # skips when the Target cannot be had
    assert main(["analyze", "similarity", "--source", MODEL, "--target", f"real:{GEMMA3}", "--questions",
                 str(inputs["questions"]), "--locked", LOCKED, "--unlocked", UNLOCKED, "--ks", "1", "2",
                 "--k-for-n", "2", "--n-perm", "3", "--n-shuffles", "2", "--out", str(tmp_path / "similarity")]) == 0
    assert json.loads((tmp_path / "similarity" / "similarity.json").read_text())
    assert (tmp_path / "similarity" / "similarity.png").stat().st_size > 5_000
