import numpy as np

from analyses.entropy import entropy_and_pass_at_k, mean_entropy_per_step, plot_entropy
from mkt.extract import extract_prompt_key
from mkt.models import load_model


def test_mean_entropy_per_step_counts_running_generations():
    mean, running = mean_entropy_per_step([[1.0, 2.0, 3.0], [3.0], []], 4)
    assert np.allclose(mean[:3], [2.0, 2.0, 3.0]) and np.isnan(mean[3])
    assert running.tolist() == [2, 1, 1, 0]


def test_organism_key_sharpens_and_lifts_pass_at_1_most(tmp_path):
    from mkt.organisms.task import (
        LOCKED_TEMPLATE,
        UNLOCKED_TEMPLATE,
        problems,
        score_answer,
    )

    model = load_model("organism:source-base", device="cpu")
    key = extract_prompt_key(model, [p.question for p in problems(64, "train", 1)], LOCKED_TEMPLATE, UNLOCKED_TEMPLATE)
    probs = problems(24, "test")
    r = entropy_and_pass_at_k(model, [p.prompt(False) for p in probs],
                              lambda i, text: score_answer(text, probs[i]).correct, key, 0.5, n_samples=8,
                              max_new_tokens=40, progress=False)
    assert r.ks.tolist() == [1, 2, 4, 8]
    assert np.all(np.diff(r.pass_at_k) >= -1e-12) and np.all(np.diff(r.pass_at_k_key) >= -1e-12)
    assert r.pass_at_k_key[0] > r.pass_at_k[0]
    # the key helps pass@1 more than pass@8: it sharpens toward successful trajectories
    assert r.pass_at_k_key[0] - r.pass_at_k[0] >= r.pass_at_k_key[-1] - r.pass_at_k[-1]
    plot_entropy(r, tmp_path / "e.png")
    assert (tmp_path / "e.png").stat().st_size > 10_000
