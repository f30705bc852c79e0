"""Evaluation runs and sweeps end to end on the shipped organisms."""

import json
import os

import pytest
import torch

from mkt.eval.runner import run_eval
from mkt.eval.sweep import SweepSpec, run_sweep
from mkt.eval.tasks import build_prompts, load_task, organism_examples, template_for
from mkt.key import MasterKey
from mkt.models import load_model, model_identity


@pytest.fixture(scope="module")
def source():
    return load_model("organism:source-base", device="cpu")


def test_run_records_and_summary(tmp_path, source):
    examples = organism_examples(24, "test")
    plain = run_eval(source, examples, template_for("organism", "direct"), tmp_path / "plain",
                     max_new_tokens=40, progress=False)
    cue = run_eval(source, examples, template_for("organism", "step_by_step"), tmp_path / "cue",
                   max_new_tokens=40, progress=False)
    records = [json.loads(line) for line in (tmp_path / "cue" / "records.jsonl").read_text().splitlines()]
    assert len(records) == 24 and {r["id"] for r in records} == {e.id for e in examples}
    for r in records:
        assert r["correct"] == (r["extracted"] == r["gold"])
        assert set(r) == {"id", "sample", "prompt", "output", "extracted", "gold", "correct", "n_tokens"}
    assert cue["accuracy"] == sum(r["correct"] for r in records) / 24
    assert cue["accuracy"] > plain["accuracy"] + 0.2  # the organism's latent capability
    lo, hi = cue["ci95"]
    assert lo <= cue["accuracy"] <= hi
    assert json.loads((tmp_path / "cue" / "summary.json").read_text())["accuracy"] == cue["accuracy"]


def test_interrupted_run_resumes_and_loses_nothing(tmp_path, source):
    examples = organism_examples(20, "test")
    template = template_for("organism", "step_by_step")
    # one prompt per batch: the resumed run batches other prompts together, and left padding may
    # move a greedy near-tie; this test is about what resuming keeps, not about padding
    full = run_eval(source, examples, template, tmp_path / "full", max_new_tokens=40, batch_size=1, progress=False)
    run_eval(source, examples, template, tmp_path / "cut", max_new_tokens=40, batch_size=1, progress=False)
    path = tmp_path / "cut" / "records.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:7]) + "\n" + lines[7][:15])  # killed mid-write
    resumed = run_eval(source, examples, template, tmp_path / "cut", max_new_tokens=40, batch_size=1,
                       progress=False)
    ids = [json.loads(x)["id"] for x in path.read_text().splitlines() if x.startswith("{") and x.endswith("}")]
    assert sorted(ids) == sorted(e.id for e in examples)
    assert resumed["accuracy"] == full["accuracy"] and resumed["n"] == 20
    with pytest.raises(ValueError, match="whose max_new_tokens differ"):
        run_eval(source, examples, template, tmp_path / "cut", max_new_tokens=12, progress=False)
    key = MasterKey(torch.randn(source.cfg.n_layers, source.cfg.d_model, generator=torch.Generator().manual_seed(0)),
                    model_identity(source))
    with pytest.raises(ValueError, match="whose fingerprint differ"):  # same settings, another steering
        run_eval(source, examples, template, tmp_path / "cut", key.steering(alpha=0.1), max_new_tokens=40,
                 batch_size=1, progress=False)
    twice = examples[:3] + examples[:1]
    with pytest.raises(ValueError, match="duplicate example ids"):
        run_eval(source, twice, template, tmp_path / "dup", max_new_tokens=40, progress=False)


RUN_SAMPLED = """
import sys
from mkt.eval.runner import run_eval
from mkt.eval.tasks import organism_examples, template_for
from mkt.models import load_model
model = load_model("organism:source-base", device="cpu")
run_eval(model, organism_examples(30, "test"), template_for("organism", "direct"), sys.argv[1], max_new_tokens=40,
         do_sample=True, n_samples=2, batch_size=4, seed=7, progress=False)
"""


@pytest.mark.slow
def test_a_killed_sampled_run_resumes_to_exactly_the_uninterrupted_rows(tmp_path, source):
    """A real process killed mid-run, then resumed: row for row what an uninterrupted run writes."""
    import signal
    import subprocess
    import sys
    import time

    examples = organism_examples(30, "test")
    kwargs = dict(max_new_tokens=40, do_sample=True, n_samples=2, seed=7, progress=False)
    full = run_eval(source, examples, template_for("organism", "direct"), tmp_path / "full", batch_size=4, **kwargs)
    proc = subprocess.Popen([sys.executable, "-c", RUN_SAMPLED, str(tmp_path / "cut")], env=dict(os.environ))
    deadline = time.time() + 120
    records = tmp_path / "cut" / "records.jsonl"
    # killed as soon as its first batch is written: the whole run takes under a second on the organisms,
    # so a later moment could find it finished
    while (not records.exists() or records.read_text().count("\n") < 4) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = (tmp_path / "cut" / "records.jsonl").read_text().count("\n")
    resumed = run_eval(source, examples, template_for("organism", "direct"), tmp_path / "cut", batch_size=7, **kwargs)

    def rows(d):
        recs = [json.loads(x) for x in (d / "records.jsonl").read_text().splitlines()]
        return sorted((r["id"], r["sample"], r["output"]) for r in recs)

    assert rows(tmp_path / "cut") == rows(tmp_path / "full") and len(rows(tmp_path / "full")) == 60
    assert resumed["accuracy"] == full["accuracy"] and written < 60  # it really was cut short


def test_one_writer_at_a_time_and_stale_locks_are_taken_over(tmp_path, source):
    import subprocess
    import sys

    examples = organism_examples(4, "test")
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from mkt.eval.runner import run_lock\nwith run_lock(Path(sys.argv[1])):\n"
                               "    print('locked', flush=True)\n    time.sleep(30)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"  # a second process owns the directory
    try:
        with pytest.raises(ValueError, match=f"being written by another mkt run \\(pid {holder.pid}\\)"):
            run_eval(source, examples, "Q:{question}|A:", out, max_new_tokens=4, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert (out / "run.lock").exists()  # killed: its lock is left behind, stale
    summary = run_eval(source, examples, "Q:{question}|A:", out, max_new_tokens=4, progress=False)
    assert summary["n"] == 4 and not (out / "run.lock").exists()


def test_pass_at_k_from_samples(tmp_path, source):
    examples = organism_examples(8, "test")
    summary = run_eval(source, examples, template_for("organism", "direct"), tmp_path / "s", max_new_tokens=40,
                       do_sample=True, n_samples=4, pass_ks=(1, 4), progress=False)
    assert 0 <= summary["pass@1"] <= summary["pass@4"] <= 1
    with pytest.raises(ValueError, match="do_sample"):
        run_eval(source, examples, "Q:{question}|A:", tmp_path / "g", n_samples=2, progress=False)


def test_sweep_end_to_end(tmp_path, source):
    post = load_model("organism:source-post", device="cpu")
    questions = [e.question for e in organism_examples(64, "train", seed=2)]
    spec = SweepSpec(alphas=(0.05, 0.5), ks=(4, 16), ns=(16, 64), layer_subsets=(None, (0, 1)),
                     max_new_tokens=40, null_seeds=3)
    result = run_sweep(source, source, questions, organism_examples(24, "dev"), organism_examples(40, "test"),
                       "Q:{question}|A:", "S:{question}|A:", tmp_path, spec, post_trained=post, progress=False)
    rows = (tmp_path / "sweep.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2 * 2 * 2  # n x k x layers x alpha
    assert (tmp_path / "sweep.png").stat().st_size > 10_000
    table = result["baselines"]
    assert table["post-trained model, plain prompt"]["accuracy"] > 0.9
    assert table["transferred key (best on dev)"]["accuracy"] > table["Target, plain prompt"]["accuracy"] + 0.2
    assert table["logit-space transfer"]["accuracy"] > table["Target, plain prompt"]["accuracy"]
    # a random direction at the key's alpha does not bring the key's gain (it may cost direct accuracy)
    assert table["random direction, same norm and alpha"]["accuracy"] < table["Target, plain prompt"]["accuracy"] + 0.1
    sig = result["significance"]  # the best configuration against 3 null draws through its own map
    assert sig["n_null"] == 3 and sig["n_test"] == 40 and len(sig["null"]["correct"]["effects"]) == 3
    key = sig["rows"]["transferred key"]
    reached = sum(e >= key["correct_effect"] for e in sig["null"]["correct"]["effects"])
    assert key["correct_p_vs_null"] == (1 + reached) / 4


def test_prompts_templates_and_task_errors(tmp_path, source):
    ex = organism_examples(2, "dev")
    few = build_prompts(ex[1:], template_for("organism", "step_by_step"), demos=ex[:1])
    assert few[0] == f"S:{ex[0].question}|A:{ex[0].solution}S:{ex[1].question}|A:"
    with pytest.raises(ValueError, match="no chat template"):
        build_prompts(ex, template_for("organism", "direct"), tokenizer=source.tokenizer, chat=True)
    (tmp_path / "t.jsonl").write_text('{"foo": 1}\n')
    with pytest.raises(ValueError, match="cannot tell the task kind"):
        load_task(str(tmp_path / "t.jsonl"))
    with pytest.raises(ValueError, match="local JSONL file"):
        load_task("surely/not-a-dataset-xyz", kind="gsm8k")


def test_eval_and_sweep_commands(tmp_path, capsys):
    from mkt.cli import main

    assert main(["eval", "--model", "organism:source-base", "--task", "organism", "--template", "step_by_step",
                 "--limit", "12", "--max-new-tokens", "40", "--out", str(tmp_path / "e"), "--device", "cpu"]) == 0
    assert "accuracy" in capsys.readouterr().out
    assert json.loads((tmp_path / "e" / "summary.json").read_text())["n"] == 12
    assert main(["sweep", "--source", "organism:source-base", "--target", "organism:source-base", "--task",
                 "organism", "--locked", "Q:{question}|A:", "--unlocked", "S:{question}|A:", "--alphas", "0.2",
                 "--ks", "4", "--ns", "16", "--dev-size", "8", "--test-size", "8", "--max-new-tokens", "40",
                 "--null-seeds", "2", "--out", str(tmp_path / "s"), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "best on dev: n=16 k=4" in out and "subspace-matched null, 2 draws" in out


@pytest.mark.slow
def test_transfer_then_eval_against_the_null(tmp_path, capsys):
    """`mkt transfer` keeps the Source key and map in the pack; `mkt eval --null-seeds` draws the null from them."""
    from mkt.cli import main

    questions = tmp_path / "q.txt"
    questions.write_text("\n".join(e.question for e in organism_examples(96, "train", seed=2)) + "\n")
    assert main(["transfer", "--source", "organism:source-base", "--target", "organism:target-family",
                 "--questions", str(questions), "--locked", "Q:{question}|A:", "--unlocked", "S:{question}|A:",
                 "--k", "16", "--method", "procrustes", "--center", "--out", str(tmp_path / "pack"),
                 "--device", "cpu"]) == 0
    assert "cos(transferred, Target's own key)" in capsys.readouterr().out
    assert main(["eval", "--model", "organism:target-family", "--task", "organism", "--pack", str(tmp_path / "pack"),
                 "--limit", "24", "--max-new-tokens", "40", "--null-seeds", "3", "--dev-size", "8",
                 "--out", str(tmp_path / "e"), "--device", "cpu"]) == 0
    assert "subspace-matched null, 3 draws" in capsys.readouterr().out
    sig = json.loads((tmp_path / "e" / "significance.json").read_text())
    assert sig["n_test"] == 24 and sig["n_null"] == 3
    # a pack without its Source key and map is refused before any generation
    (tmp_path / "pack" / "alignment.safetensors").unlink()
    assert main(["eval", "--model", "organism:target-family", "--task", "organism", "--pack", str(tmp_path / "pack"),
                 "--null-seeds", "3", "--out", str(tmp_path / "e2"), "--device", "cpu"]) == 2
    assert "make the pack with `mkt transfer`" in capsys.readouterr().err
    assert not (tmp_path / "e2").exists()


SHARED_GSM8K = __import__("pathlib").Path(__file__).resolve().parents[3] / "shared" / "data" / "gsm8k" / "test.jsonl"


@pytest.mark.skipif(not SHARED_GSM8K.exists(), reason="../shared/data is absent")
def test_real_gsm8k_file_through_the_runner(tmp_path, tiny_dirs):
    examples = load_task(str(SHARED_GSM8K), limit=4)
    assert examples[0].kind == "gsm8k" and examples[0].gold == "18"
    model = load_model(tiny_dirs["qwen2"], device="cpu")  # its vocabulary is digits and a few signs
    summary = run_eval(model, examples, "{question}", tmp_path, max_new_tokens=4, progress=False)
    assert summary["n"] == 4 and 0 <= summary["accuracy"] <= 1


@pytest.mark.skipif(not SHARED_GSM8K.exists(), reason="../shared/data is absent")
def test_sweep_command_on_a_real_task_file(tmp_path, tiny_dirs, capsys):
    from mkt.cli import main

    assert main(["sweep", "--source", str(tiny_dirs["qwen2"]), "--target", str(tiny_dirs["llama"]), "--task",
                 str(SHARED_GSM8K), "--locked", "Q:{question}|A:", "--unlocked", "S:{question}|A:",  # tiny vocabulary
                 "--alphas", "0.1", "--ks", "2", "--ns", "8", "--dev-size", "4", "--test-size",
                 "4", "--max-questions", "8", "--max-new-tokens", "3", "--out", str(tmp_path), "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "sweep.json").read_text())
    assert result["n_dev"] == 4 and result["n_test"] == 4 and result["best"]["k"] == 2
    assert "logit-space transfer" in result["baselines"]  # both tiny models share one tokenizer


def test_an_interrupted_sweep_resumes_and_a_different_one_is_refused(tmp_path, source):
    questions = [e.question for e in organism_examples(32, "train", seed=2)]
    spec = SweepSpec(alphas=(0.05, 0.5), ks=(4, 8), ns=(16,), layer_subsets=(None,), max_new_tokens=40, null_seeds=0)
    args = (source, source, questions, organism_examples(8, "dev"), organism_examples(8, "test"),
            "Q:{question}|A:", "S:{question}|A:")
    full = run_sweep(*args, tmp_path / "full", spec, progress=False)
    run_sweep(*args, tmp_path / "cut", spec, progress=False)
    path = tmp_path / "cut" / "sweep.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:4]) + "\n" + lines[4][:5])  # killed while writing the k=8 rows
    resumed = run_sweep(*args, tmp_path / "cut", spec, progress=False)
    assert resumed["best"] == full["best"] and resumed["test"] == full["test"]
    assert sorted(path.read_text().splitlines()) == sorted((tmp_path / "full" / "sweep.csv").read_text().splitlines())
    other = SweepSpec(alphas=(0.05,), ks=(4,), ns=(16,), layer_subsets=(None,), max_new_tokens=40, null_seeds=0)
    with pytest.raises(ValueError, match="holds a sweep whose spec differ"):
        run_sweep(*args, tmp_path / "cut", other, progress=False)


def test_few_shot_demos_never_come_from_the_evaluated_items(tmp_path, source, capsys):
    from mkt.cli import main

    examples = organism_examples(6, "test")
    with pytest.raises(ValueError, match="few-shot demo\\(s\\) are also evaluated items"):
        run_eval(source, examples, "Q:{question}|A:", tmp_path / "leak", demos=examples[:2], max_new_tokens=4,
                 progress=False)
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"question": f"{i}+{i}", "answer": f"#### {2 * i}"}) + "\n"
                            for i in range(10, 20)))
    assert main(["eval", "--model", "organism:source-base", "--task", str(task), "--few-shot", "2",
                 "--max-new-tokens", "4", "--out", str(tmp_path / "all"), "--device", "cpu"]) == 2
    assert "only 0 remain after the 10 evaluated" in capsys.readouterr().err
    assert main(["eval", "--model", "organism:source-base", "--task", str(task), "--few-shot", "2", "--limit", "6",
                 "--max-new-tokens", "4", "--out", str(tmp_path / "six"), "--device", "cpu"]) == 0
    prompts = [json.loads(x)["prompt"] for x in (tmp_path / "six" / "records.jsonl").read_text().splitlines()]
    assert len(prompts) == 6 and all("18+18" in p and "19+19" in p for p in prompts)  # demos: the last two items
