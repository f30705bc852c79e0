import json

import numpy as np
import pytest

from analyses.atomic import (
    PROMPTING,
    RANDOM,
    TRANSFERRED,
    choose_alpha,
    plot_probes,
    probe,
    verdict,
)
from mkt.eval.stats import mcnemar_exact, paired_difference_interval


def _scores(n: int, rate: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < rate).astype(float)


def test_verdict_has_three_outcomes_on_the_interval():
    assert verdict(0.30, (0.20, 0.40), 0.10, 0.001) == "ATOMIC"
    assert verdict(0.30, (0.20, 0.40), 0.10, 0.06) == "INCONCLUSIVE"  # the exact test must agree
    assert verdict(0.02, (-0.03, 0.07), 0.10, 1.0) == "NON-ATOMIC"  # a gain of 0.10 is ruled out
    assert verdict(0.20, (-0.05, 0.45), 0.10, 0.2) == "INCONCLUSIVE"  # large but too noisy
    assert verdict(0.05, (0.01, 0.12), 0.10, 0.01) == "INCONCLUSIVE"  # real but maybe below the threshold


@pytest.mark.parametrize("base, cue, why", [
    (np.zeros(3), np.zeros(3), "all zero at n=3: a gain of 10 points is not ruled out"),
    (np.zeros(3), np.ones(3), "all one at n=3: McNemar p = 0.25"),
    (np.zeros(20), np.r_[np.ones(4), np.zeros(16)], "4 discordant of 20, all one way: McNemar p = 0.125"),
])
def test_small_samples_are_inconclusive(base, cue, why):
    pr = probe("t", {"baseline": base, PROMPTING: cue}, threshold=0.1)
    assert pr.verdict == "INCONCLUSIVE", why
    assert pr.intervals[PROMPTING][1] > 0.1 or pr.mcnemar_p[PROMPTING] >= 0.05


def test_zero_at_n_200_is_non_atomic_and_alpha_ties_go_to_the_smallest():
    pr = probe("t", {"baseline": np.zeros(200), PROMPTING: np.zeros(200)}, threshold=0.1)
    assert pr.verdict == "NON-ATOMIC" and pr.intervals[PROMPTING][1] == pytest.approx(0.0188, abs=1e-3)
    assert choose_alpha({0.1: 0.0, 0.2: 0.0, 0.5: 0.0}) == 0.1
    assert choose_alpha({0.1: 0.2, 0.2: 0.5, 0.5: 0.5}) == 0.2


def test_probe_reads_only_the_primary_condition_with_paired_intervals(tmp_path):
    n = 200
    base = _scores(n, 0.1, 0)
    scores = {"baseline": base, PROMPTING: np.maximum(base, _scores(n, 0.8, 1)),
              TRANSFERRED: np.maximum(base, _scores(n, 0.5, 2)), RANDOM: base.copy()}
    pr = probe("t1", scores, threshold=0.1)
    assert pr.verdict == "ATOMIC" and pr.primary == PROMPTING
    assert pr.gains[TRANSFERRED] == pytest.approx(scores[TRANSFERRED].mean() - base.mean())
    assert pr.intervals[PROMPTING] == paired_difference_interval(scores[PROMPTING], base)
    assert pr.mcnemar_p[PROMPTING] == mcnemar_exact(scores[PROMPTING].astype(bool).tolist(), base.astype(bool).tolist())
    assert pr.key_vs_control[TRANSFERRED][0] > 0  # the key beats the random direction

    # No max over conditions: prompting flat, a big gain elsewhere does not make it ATOMIC
    flat = dict(scores, **{PROMPTING: base.copy()})
    assert probe("t2", flat, threshold=0.1).verdict == "NON-ATOMIC"
    # ...unless that condition was fixed in advance as the primary
    assert probe("t2", flat, primary=TRANSFERRED, threshold=0.1).verdict == "ATOMIC"
    # a large gain on few prompts is inconclusive, not atomic and not non-atomic
    few = {"baseline": np.zeros(6), PROMPTING: np.array([1.0, 1, 0, 0, 0, 0])}
    assert probe("t3", few, threshold=0.1).verdict == "INCONCLUSIVE"
    with pytest.raises(ValueError, match="primary condition"):
        probe("t4", {"baseline": base})
    plot_probes([pr, probe("t2", flat, threshold=0.1)], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000


@pytest.mark.slow
def test_real_model_probe_with_pack_and_task(real_inputs, tmp_path, capsys):
    from mkt.cli import main

    inp = real_inputs("qwen3")
    assert main(["analyze", "atomic", "--model", str(inp["model"]), "--pack", str(inp["pack"]), "--task",
                 str(inp["task"]), "--n", "6", "--max-new-tokens", "4", "--out", str(tmp_path)]) == 0
    (data,) = json.loads((tmp_path / "atomic.json").read_text())
    assert data["n"] == 6 and data["metric"] == "correct" and data["post_trained"] is None
    assert sorted(data["gains"]) == sorted([PROMPTING, TRANSFERRED, RANDOM])
    assert data["verdict"] in ("NON-ATOMIC", "INCONCLUSIVE")  # a random model gains nothing
    assert any("no post-trained variant" in note for note in data["notes"])
    assert (tmp_path / "atomic.png").stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "vs random direction" in out

    assert main(["analyze", "atomic", "--model", str(inp["model"]), "--task", str(inp["task"]), "--n", "6",
                 "--out", str(tmp_path / "nopack")]) == 2
    assert "pass --pack" in capsys.readouterr().err
    assert main(["analyze", "atomic", "--model", str(inp["model"]), "--pack", str(inp["pack"]),
                 "--out", str(tmp_path / "notask")]) == 2
    assert "needs --task FILE" in capsys.readouterr().err
    # another model is not the Target's post-trained variant
    other = real_inputs("llama")["model"]
    assert main(["analyze", "atomic", "--model", str(inp["model"]), "--pack", str(inp["pack"]), "--task",
                 str(inp["task"]), "--n", "6", "--post-trained", str(other), "--out", str(tmp_path / "post")]) == 2
    assert "is not a variant of the Target" in capsys.readouterr().err
