"""Every analysis runs on every architecture mkt is tested on, with its real tokenizer.

Smallest settings: this checks that each analysis reads, steers and writes its JSON and PNG
on each family (BOS, chat templates and vocabularies of real models), not what it finds.
"""

import json

import pytest

from mkt.cli import main
from mkt.tiny_models import ARCHITECTURES

pytestmark = pytest.mark.slow

LOCKED = "Question: {question}\nAnswer:"
UNLOCKED = "Question: {question}\nAnswer: Let's think step by step."


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_analysis_runs(arch, real_inputs, tmp_path):
    inp = real_inputs(arch)
    model, pack, task = str(inp["model"]), str(inp["pack"]), str(inp["task"])
    keyed = ["--model", model, "--pack", pack, "--task", task, "--n", "3"]
    runs = {
        "ablation": keyed + ["--alphas", "0.5", "--null-seeds", "1", "--matched-seeds", "1", "--pc-nulls", "1",
                             "--unembed-nulls", "1"],
        "logit_lens": keyed + ["--null-seeds", "1", "--site-seeds", "1"],
        "entropy": keyed + ["--samples", "2", "--pass-n", "2", "--controls", "1", "--max-new-tokens", "3"],
        "atomic": keyed + ["--max-new-tokens", "3"],
    }
    for name, args in runs.items():
        assert main(["analyze", name, *args, "--out", str(tmp_path / name)]) == 0, name
        assert json.loads((tmp_path / name / f"{name}.json").read_text()), name
        assert (tmp_path / name / f"{name}.png").stat().st_size > 5_000, name
    other = real_inputs("llama" if arch != "llama" else "qwen3")  # a Target of another family
    assert main(["analyze", "similarity", "--source", model, "--target", str(other["model"]), "--questions",
                 str(inp["prompts"]), "--locked", LOCKED, "--unlocked", UNLOCKED, "--ks", "1", "2", "--k-for-n", "2",
                 "--n-perm", "3", "--n-shuffles", "2", "--out", str(tmp_path / "similarity")]) == 0
    assert (tmp_path / "similarity" / "similarity.png").stat().st_size > 5_000


@pytest.mark.parametrize("arch", ["qwen3", "gpt2", "gemma3"])
def test_every_analysis_runs_with_a_per_head_key(arch, real_inputs, tmp_path):
    """A key read and written per head (attn.hook_z, made by `mkt extract --hook attn.hook_z`)."""
    inp = real_inputs(arch)
    pack = tmp_path / "pack"
    assert main(["extract", "--model", str(inp["model"]), "--questions", str(inp["prompts"]), "--locked", LOCKED,
                 "--unlocked", UNLOCKED, "--hook", "attn.hook_z", "--out", str(pack), "--device", "cpu"]) == 0
    manifest = json.loads((pack / "manifest.json").read_text())
    assert manifest["hook"] == "attn.hook_z" and manifest["target"]["n_heads"] >= 1
    keyed = ["--model", str(inp["model"]), "--pack", str(pack), "--task", str(inp["task"]), "--n", "3"]
    runs = {
        "ablation": keyed + ["--alphas", "0.5", "--null-seeds", "1", "--matched-seeds", "1", "--pc-nulls", "1"],
        "logit_lens": keyed + ["--null-seeds", "1", "--site-seeds", "1"],
        "entropy": keyed + ["--samples", "2", "--pass-n", "2", "--controls", "1", "--max-new-tokens", "3"],
    }
    for name, args in runs.items():
        assert main(["analyze", name, *args, "--out", str(tmp_path / name)]) == 0, name
    result = json.loads((tmp_path / "ablation" / "ablation.json").read_text())
    assert result["hook"] == "attn.hook_z" and [n["family"] for n in result["sufficiency"]["nulls"]] == \
        ["random", "Locked PCs"]  # no unembedding columns for a per-head key (said in the notes)
    assert any("unembedding" in note for note in result["notes"])
