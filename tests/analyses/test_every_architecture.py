"""Every analysis runs on every architecture mkt is tested on, with its real tokenizer.

Smallest settings: this checks that each analysis reads, steers and writes its JSON and PNG
on each family (BOS, chat templates and vocabularies of real models), not what it finds.
"""

import json

import pytest

from mkt.cli import main
from mkt.tiny_models import ARCHITECTURES
from tests.analyses.smallest import run_keyed_analyses_at_smallest_settings

pytestmark = pytest.mark.slow

LOCKED = "Question: {question}\nAnswer:"
UNLOCKED = "Question: {question}\nAnswer: Let's think step by step."


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_analysis_runs(arch, real_inputs, tmp_path):
    inp = real_inputs(arch)
    model, pack, task = str(inp["model"]), str(inp["pack"]), str(inp["task"])
    run_keyed_analyses_at_smallest_settings(model, pack, task, tmp_path)
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


def test_every_analysis_steers_a_per_head_key_at_its_hook_when_heads_are_not_d_model_wide(real_tiny_dir, tmp_path):
    """Qwen3 with 4 x 16 heads and d_model 48: a key applied at the wrong hook point cannot even run here."""
    from mkt.tiny_models import save_tiny_model
    from tests.analyses.conftest import QUESTIONS
    from tests.conftest import TOKENIZERS

    real_tiny_dir("qwen3")  # skips without ../shared/tokenizers
    model = save_tiny_model("qwen3", TOKENIZERS, tmp_path / "qwen3-48", d_model=48)
    questions, task, pack = tmp_path / "q.jsonl", tmp_path / "task.jsonl", tmp_path / "pack"
    questions.write_text("".join(json.dumps({"question": q}) + "\n" for q in QUESTIONS))
    task.write_text("".join(json.dumps({"question": q, "answer": f"#### {i}"}) + "\n" for i, q in enumerate(QUESTIONS)))
    assert main(["extract", "--model", str(model), "--questions", str(questions), "--locked", LOCKED, "--unlocked",
                 UNLOCKED, "--hook", "attn.hook_z", "--out", str(pack), "--device", "cpu"]) == 0
    keyed = ["--model", str(model), "--pack", str(pack), "--task", str(task), "--n", "3"]
    runs = {
        "ablation": keyed + ["--alphas", "0.5", "--null-seeds", "1", "--matched-seeds", "1", "--pc-nulls", "1"],
        "logit_lens": keyed + ["--null-seeds", "1", "--site-seeds", "1"],
        "entropy": keyed + ["--samples", "2", "--pass-n", "2", "--controls", "1", "--max-new-tokens", "3", "--pcs", "1"],
        "atomic": keyed + ["--max-new-tokens", "3"],
    }
    for name, args in runs.items():
        assert main(["analyze", name, *args, "--out", str(tmp_path / name)]) == 0, name


def test_a_packs_own_scope_and_layers_are_said_to_be_unused(real_inputs, tmp_path):
    import shutil

    inp = real_inputs("qwen2")
    pack = tmp_path / "pack"
    shutil.copytree(inp["pack"], pack)
    manifest = json.loads((pack / "manifest.json").read_text())
    manifest.update(scope="prompt-all", layers=[0])
    (pack / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match=r"\{'scope': 'prompt-all', 'layers': \[0\]\} are not used"):
        assert main(["analyze", "logit_lens", "--model", str(inp["model"]), "--pack", str(pack), "--prompts",
                     str(inp["prompts"]), "--n", "3", "--tokens", "The", "--null-seeds", "1", "--site-seeds", "1",
                     "--out", str(tmp_path / "lens")]) == 0


def test_chat_puts_each_prompt_in_the_models_chat_template(real_inputs, tmp_path, capsys):
    from analyses import logit_lens
    from analyses._common import resolve_run
    from mkt.models import load_model
    from mkt.prompts import apply_chat, read_questions

    inp = real_inputs("qwen3")
    lens = logit_lens.ANALYSIS

    def options(*argv: str) -> logit_lens.LogitLensOptions:
        return lens.options_from(lens.parser().parse_args(argv))

    run = resolve_run(options("--model", str(inp["model"]), "--pack", str(inp["pack"]), "--task", str(inp["task"]),
                              "--n", "3", "--chat"))
    tok = load_model(inp["model"]).tokenizer
    plain = resolve_run(options("--model", str(inp["model"]), "--pack", str(inp["pack"]), "--task", str(inp["task"]),
                                "--n", "3"))
    assert run.prompts == [apply_chat(tok, q) for q in plain.prompts]
    assert run.unlocked_prompts == [apply_chat(tok, q) for q in plain.unlocked_prompts]
    assert run.prompts[0].startswith("<|im_start|>user\n") and read_questions(inp["prompts"])[0] in run.prompts[0]
    keyed = ["--model", str(inp["model"]), "--pack", str(inp["pack"]), "--task", str(inp["task"]), "--n", "3", "--chat"]
    assert main(["analyze", "entropy", *keyed, "--samples", "2", "--pass-n", "2", "--controls", "1",
                 "--max-new-tokens", "3", "--pcs", "1", "--out", str(tmp_path / "entropy")]) == 0
    assert main(["analyze", "atomic", *keyed, "--max-new-tokens", "3", "--out", str(tmp_path / "atomic")]) == 0
    # the organisms have no chat template: said, not ignored
    capsys.readouterr()
    assert main(["analyze", "logit_lens", "--chat", "--n", "3", "--out", str(tmp_path / "lens")]) == 2
    assert "no chat template" in capsys.readouterr().err
    assert main(["analyze", "atomic", "--chat", "--n", "3", "--out", str(tmp_path / "atomic2")]) == 2
    assert "no chat template" in capsys.readouterr().err
