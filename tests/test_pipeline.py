import pytest
import torch

from mkt.activations import last_token_resid
from mkt.alignment import fit_alignment, transfer
from mkt.models import model_identity
from mkt.pipeline import alignment_prompts, run_transfer
from mkt.prompts import PromptTemplate

QUESTIONS = [f"{a}+{b}" for a, b in zip(range(10, 50), range(60, 100))]
LOCKED, UNLOCKED = "Q:{question}|A:", "S:{question}|A:"


def test_run_transfer_equals_the_steps_done_by_hand(qwen, llama):
    report = run_transfer(qwen, llama, QUESTIONS[:20], QUESTIONS, LOCKED, UNLOCKED, k=6, alignment_set="locked",
                          heldout_fraction=0.0)
    prompts = [LOCKED.format(question=q) for q in QUESTIONS]
    by_hand = fit_alignment(last_token_resid(qwen, prompts), last_token_resid(llama, prompts),
                            model_identity(qwen), model_identity(llama), k=6)
    # same prompts in another order: the same map
    assert torch.allclose(transfer(report.source_key, by_hand).directions, report.target_key.directions, atol=1e-4)
    assert report.target_key.directions.shape == (5, 48)


def test_report_has_heldout_error_and_coverage(qwen, llama):
    report = run_transfer(qwen, llama, QUESTIONS[:20], QUESTIONS, LOCKED, UNLOCKED, k=4,
                          alignment_set="oracle-unlocked", heldout_fraction=0.25)
    s = report.summary()
    assert s["oracle"] and "oracle" in report.target_key.provenance
    assert s["n_align"] == 60 and len(s["heldout_error"]) == 5 and len(s["coverage"]) == 5
    assert all(0 <= c <= 1 + 1e-6 for c in s["coverage"])
    assert all(e > 0 for e in s["heldout_error"])
    assert report.target_key.provenance["alignment_heldout_relative_error"] == s["heldout_error"]


def test_alignment_sets_and_errors(qwen, llama):
    locked, unlocked = PromptTemplate(LOCKED), PromptTemplate(UNLOCKED)
    assert alignment_prompts(["1+2"], locked, unlocked, "oracle-unlocked") == ["Q:1+2|A:", "S:1+2|A:"]
    assert alignment_prompts(["1+2"], locked, unlocked, "locked") == ["Q:1+2|A:"]
    with pytest.raises(ValueError, match="needs an Unlocked template"):
        alignment_prompts(["1+2"], locked, None, "oracle-unlocked")
    with pytest.raises(ValueError, match="now called 'oracle-unlocked'"):
        alignment_prompts(["1+2"], locked, unlocked, "mixed")
    with pytest.raises(ValueError, match="unknown alignment set"):
        alignment_prompts(["1+2"], locked, unlocked, "both")
    with pytest.raises(ValueError, match="Unlocked template .* or an Unlocked model"):
        run_transfer(qwen, llama, QUESTIONS, QUESTIONS, LOCKED)


def test_the_oracle_alignment_returns_the_targets_own_key(qwen, llama):
    """Why it is an oracle: two unrelated random models, yet the 'transferred' key is the Target's own."""
    from mkt.extract import extract_prompt_key

    own = extract_prompt_key(llama, QUESTIONS, LOCKED, UNLOCKED)
    oracle = run_transfer(qwen, llama, QUESTIONS, QUESTIONS, LOCKED, UNLOCKED, k=8, center=True,
                          alignment_set="oracle-unlocked", heldout_fraction=0.0)
    paper = run_transfer(qwen, llama, QUESTIONS, QUESTIONS, LOCKED, UNLOCKED, k=8, center=True,
                         alignment_set="locked", heldout_fraction=0.0, source_key=oracle.source_key)
    assert oracle.target_key.cosine(own).mean() > 0.8 and oracle.target_key.cosine(own).max() > 0.95
    assert paper.target_key.cosine(own).abs().mean() < oracle.target_key.cosine(own).mean() - 0.3


def test_two_models_to_steered_generation_in_three_calls(qwen, llama):
    """The public API's shortest path gives what the steps done by hand give: the same key, the same text."""
    import mkt
    from mkt.extract import extract_prompt_key
    from mkt.steering import Steering
    from tests.conftest import PROMPTS

    report = mkt.run_transfer(qwen, llama, QUESTIONS[:20], QUESTIONS, LOCKED, UNLOCKED, k=6, heldout_fraction=0.0)
    with report.target_key.apply(llama, alpha=0.5):
        steered = mkt.generate(llama, PROMPTS, 6)
    prompts = [LOCKED.format(question=q) for q in QUESTIONS]
    by_hand = transfer(extract_prompt_key(qwen, QUESTIONS[:20], LOCKED, UNLOCKED),
                       fit_alignment(last_token_resid(qwen, prompts), last_token_resid(llama, prompts),
                                     model_identity(qwen), model_identity(llama), k=6))
    again = mkt.generate(llama, PROMPTS, 6, steering=Steering(by_hand.directions, alpha=0.5))
    plain = mkt.generate(llama, PROMPTS, 6)
    assert [g.text for g in steered] == [g.text for g in again]
    assert [g.text for g in steered] != [g.text for g in plain]  # alpha 0.5 moves a tiny model's greedy text


def test_k_cv_chooses_on_the_fitting_questions_only_and_the_report_says_whether_the_map_beats_the_mean(qwen, llama):
    import random
    import warnings

    from mkt.alignment import cross_validate_rank

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = run_transfer(qwen, llama, QUESTIONS[:20], QUESTIONS, LOCKED, UNLOCKED, k="cv", ks=(1, 2, 4, 8),
                              heldout_fraction=0.25, folds=3, seed=1)
    order = list(range(len(QUESTIONS)))
    random.Random(1).shuffle(order)  # run_transfer's split: the first 10 shuffled questions are held out
    fit_prompts = [LOCKED.format(question=QUESTIONS[i]) for i in order[10:]]
    held_prompts = [LOCKED.format(question=QUESTIONS[i]) for i in order[:10]]
    by_hand = cross_validate_rank(last_token_resid(qwen, fit_prompts), last_token_resid(llama, fit_prompts),
                                  model_identity(qwen), model_identity(llama), [1, 2, 4, 8], folds=3, seed=1)
    s = report.summary()
    assert report.alignment.k == by_hand.k and s["rank_selection"]["cv_error"] == pytest.approx(by_hand.error)
    held = fit_alignment(last_token_resid(qwen, fit_prompts), last_token_resid(llama, fit_prompts),
                         model_identity(qwen), model_identity(llama), k=by_hand.k).relative_error(
        last_token_resid(qwen, held_prompts), last_token_resid(llama, held_prompts))
    assert s["heldout_error"] == pytest.approx(held.tolist(), rel=1e-4)
    assert s["map_beats_mean"] == (float(held.mean()) < 1.0)
    assert s["heldout_variance_explained"] == pytest.approx(float((1 - held.double() ** 2).mean()), rel=1e-4)
    flagged = [w for w in caught if "does NOT beat the mean" in str(w.message)]
    assert bool(flagged) == (not s["map_beats_mean"])
    with warnings.catch_warnings(record=True) as caught:  # nothing held out: the cross-validated error speaks
        warnings.simplefilter("always")
        nothing_held = run_transfer(qwen, llama, QUESTIONS[:20], QUESTIONS, LOCKED, UNLOCKED, k="cv", ks=(1, 2),
                                    heldout_fraction=0.0, folds=3)
    cv_error = nothing_held.summary()["rank_selection"]["cv_error"]
    assert any("in cross-validation" in str(w.message) for w in caught) == (cv_error >= 1)
    with pytest.raises(ValueError, match="whole number or 'cv'"):
        run_transfer(qwen, llama, QUESTIONS[:20], QUESTIONS, LOCKED, UNLOCKED, k="auto")
