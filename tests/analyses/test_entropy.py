import json

import numpy as np
import pytest

from analyses.entropy import (
    bootstrap_mean_interval,
    entropy_analysis,
    mean_per_step,
    pass_at_k_per_prompt,
    plot_entropy,
    teacher_forced_entropy,
)
from mkt.eval.stats import pass_at_k
from mkt.extract import extract_prompt_key
from mkt.generation import generate
from mkt.models import load_model


def test_mean_per_step_counts_rows_that_reach_each_step():
    mean, rows = mean_per_step([np.array([1.0, 2.0, 3.0]), np.array([3.0]), np.array([])], 4)
    assert np.allclose(mean[:3], [2.0, 2.0, 3.0]) and np.isnan(mean[3])
    assert rows.tolist() == [2, 1, 1, 0]


def test_pass_at_k_per_prompt_matches_the_estimator_prompt_by_prompt():
    correct = np.array([[1, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 1, 0]], dtype=bool)
    table = pass_at_k_per_prompt(correct, [1, 2, 4])
    assert table.shape == (4, 3)
    assert table[0].tolist() == pytest.approx([0.25, 0.5, 1.0])
    assert table[1].tolist() == [1.0, 1.0, 1.0] and table[2].tolist() == [0.0, 0.0, 0.0]
    assert table[3, 1] == pytest.approx(pass_at_k(4, 2, 2)) == pytest.approx(5 / 6)


def test_bootstrap_mean_interval_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(0)
    hits = 0
    for rep in range(200):
        values = (rng.random(60) < 0.3).astype(float)
        lo, hi = bootstrap_mean_interval(values, n_boot=1000, seed=rep)
        hits += lo <= 0.3 <= hi
    assert 0.88 <= hits / 200 <= 0.99  # percentile bootstrap at n=60 runs slightly under 95%


@pytest.fixture(scope="module")
def source_and_key():
    from mkt.eval.organism_task import LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, problems

    model = load_model("organism:source-base", device="cpu")
    key = extract_prompt_key(model, [p.question for p in problems(64, "train", 1)], LOCKED_TEMPLATE,
                             UNLOCKED_TEMPLATE)
    return model, key


def test_teacher_forced_entropy_reproduces_the_entropies_recorded_while_generating(source_and_key):
    # Independent computation: generate() records each step's entropy through the KV cache,
    # steering only the prefill; one teacher-forced forward must give the same numbers.
    from mkt.eval.organism_task import problems
    from mkt.steering import Steering

    model, key = source_and_key
    prompts = [p.prompt(False) for p in problems(6, "test")]
    eos = model.tokenizer.eos_token_id
    for steering in (None, Steering(key.directions, 0.5)):
        gens = generate(model, prompts, 30, steering, record_entropy=True, batch_size=6)
        conts = [g.token_ids + ([eos] if g.stopped else []) for g in gens]
        tf = teacher_forced_entropy(model, prompts, conts, steering, batch_size=4)  # other batches, other padding
        for g, row in zip(gens, tf):
            assert len(row) == len(g.entropies)
            np.testing.assert_allclose(row, g.entropies, atol=2e-4)


@pytest.mark.slow
def test_organism_key_lowers_decision_entropy_beyond_random_directions_and_lifts_pass_at_1(source_and_key,
                                                                                           tmp_path):
    from mkt.eval.organism_task import problems, score_answer

    model, key = source_and_key
    probs = problems(24, "test")
    r = entropy_analysis(model, [p.prompt(False) for p in probs], key, 0.5,
                         lambda i, text: score_answer(text, probs[i]).correct, n_samples=8, max_new_tokens=40,
                         n_controls=5, progress=False)
    assert r.step_entropy.shape == (2, 2, 41) and r.step_rows.shape == (2, 41)
    assert r.step_rows[:, 0].tolist() == [24, 24]
    d = r.decision
    assert d.diff < -0.1 and d.interval[1] < 0  # the key sharpens the decision, interval below 0
    assert d.diff < min(d.control_diffs) and d.p_value == pytest.approx(1 / 6)  # beats every random direction
    assert r.ks.tolist() == [1, 2, 4, 8] and r.pass_at_k.shape == (3, 4)
    assert np.all(np.diff(r.pass_at_k, axis=1) >= -1e-12)
    assert r.pass_at_k[1, 0] > r.pass_at_k[0, 0] and r.pass_at_k_diff_interval[0, 0] > 0
    lo, hi = r.pass_at_k_interval[:, :, 0], r.pass_at_k_interval[:, :, 1]
    assert np.all(lo <= r.pass_at_k + 1e-12) and np.all(r.pass_at_k <= hi + 1e-12)
    plot_entropy(r, tmp_path / "e.png")
    assert (tmp_path / "e.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_real_model_cli_entropy_half_from_prompts_and_pass_at_k_from_a_task(arch, real_inputs, tmp_path, capsys):
    from mkt.cli import main

    inp = real_inputs(arch)
    common = ["analyze", "entropy", "--model", str(inp["model"]), "--pack", str(inp["pack"]), "--n", "6",
              "--max-new-tokens", "6", "--controls", "3", "--alpha", "0.5"]
    assert main(common + ["--prompts", str(inp["prompts"]), "--out", str(tmp_path / "p")]) == 0
    data = json.loads((tmp_path / "p" / "entropy.json").read_text())
    assert data["scored"] is False and data["pass_at_k"] is None and data["n_prompts"] == 6
    assert np.array(data["step_entropy"]).shape == (2, 2, 7) and len(data["decision"]["control_diffs"]) == 3
    assert data["decision"]["without"] > 0
    assert (tmp_path / "p" / "entropy.png").stat().st_size > 10_000
    assert "accuracy and pass@k need --task" in capsys.readouterr().out

    assert main(common + ["--task", str(inp["task"]), "--samples", "2", "--out", str(tmp_path / "t")]) == 0
    data = json.loads((tmp_path / "t" / "entropy.json").read_text())
    assert data["scored"] is True and data["ks"] == [1, 2] and np.array(data["pass_at_k_interval"]).shape == (3, 2, 2)
    assert data["accuracy"]["without"] == 0.0  # a random model does not add


@pytest.mark.slow
def test_real_model_without_a_pack_or_prompts_exits_2(real_inputs, tmp_path, capsys):
    from mkt.cli import main

    inp = real_inputs("qwen3")
    assert main(["analyze", "entropy", "--model", str(inp["model"]), "--prompts", str(inp["prompts"]),
                 "--out", str(tmp_path)]) == 2
    assert "is not an organism, so there is no default key for it: pass --pack" in capsys.readouterr().err
    assert main(["analyze", "entropy", "--model", str(inp["model"]), "--pack", str(inp["pack"]),
                 "--out", str(tmp_path)]) == 2
    assert "pass --prompts FILE or --task FILE" in capsys.readouterr().err
    assert not (tmp_path / "entropy.json").exists()


def test_compare_ranks_the_key_against_the_pc_null():
    from analyses.entropy import compare

    without = np.zeros(4)
    c = compare(without, np.full(4, -0.4), [np.full(4, 0.1)], -1,
                pcs={"+PC1": np.full(4, -0.5), "-PC1": np.full(4, -0.3), "+PC2": np.zeros(4)})
    assert c.pc_rank == 2 and c.pc_p_value == pytest.approx(2 / 4)  # one PC sharpens more than the key
    assert c.p_value == pytest.approx(1 / 2) and c.pc_diffs["+PC1"] == pytest.approx(-0.5)


def test_seeded_sampling_drops_finished_rows_and_draws_what_each_prompt_draws_alone(source_and_key):
    """pass@k samples with one seed per row: a batch that drops finished rows (and their
    generators) draws, row by row, what each prompt draws alone."""
    from mkt.eval.organism_task import problems

    model, key = source_and_key
    prompts = [p.prompt(False) for p in problems(12, "test")] * 2
    seeds = list(range(100, 124))
    steer = key.steering(alpha=0.5)
    together = generate(model, prompts, 40, steer, do_sample=True, seeds=seeds, batch_size=24)
    alone = [generate(model, [p], 40, steer, do_sample=True, seeds=[s], batch_size=1)[0]
             for p, s in zip(prompts, seeds)]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    lengths = {g.n_tokens for g in together}
    assert len(lengths) > 1 and all(g.stopped for g in together if g.n_tokens < 40)  # rows did finish early
    assert [g.token_ids for g in together[:12]] != [g.token_ids for g in together[12:]]  # seeds differ


@pytest.mark.slow
def test_organism_key_cache_is_validated_on_load(tmp_path):
    import torch
    from safetensors.torch import save_file

    from mkt.organisms.keys import cached_organism_key, organism_key

    target = load_model("organism:target-base", device="cpu")
    first = cached_organism_key(target, "organism:target-base", tmp_path)
    (path,) = tmp_path.glob("target-base-*.safetensors")
    again = cached_organism_key(target, "organism:target-base", tmp_path)
    assert torch.equal(first.directions, again.directions) and again.provenance == first.provenance
    assert torch.equal(first.directions, organism_key(target, "organism:target-base").directions)  # deterministic
    # a file under the right name but for another target (or zoo) is recomputed, not trusted
    save_file({"directions": torch.zeros_like(first.directions)}, str(path),
              metadata={"target": "organism:target-family", "seed": "1", "zoo_hash": "x", "hook": first.hook,
                        "provenance": "{}"})
    assert torch.equal(cached_organism_key(target, "organism:target-base", tmp_path).directions, first.directions)
