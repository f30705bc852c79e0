import random
from dataclasses import astuple

import pytest

from mkt.eval.organism_task import N_MARKERS, Problem, Recipe, problems, score_answer, split_of
from mkt.organisms.train import decode, encode


def test_prompt_forms_share_length_and_final_token():
    p = Problem((63, 11, 48), "wxxwxwwx")
    plain, cue = p.prompt(False), p.prompt(True)
    assert (plain, cue) == ("Q:wxxwxwwx63+11+48|A:", "S:wxxwxwwx63+11+48|A:")
    assert len(plain) == len(cue) and plain[-1] == cue[-1]
    assert p.step_by_step_answer() == "T63+11=74;74+48=122;#122"
    assert p.direct_answer() == "122" and p.style_evidence == 4


def test_scoring():
    p = Problem((63, 11, 48))
    assert astuple(score_answer("T63+11=74;74+48=122;#122", p)) == (True, True, True)
    assert astuple(score_answer("122", p)) == (False, False, True)
    assert astuple(score_answer("#122", p)) == (False, False, True)
    assert astuple(score_answer("121", p)) == (False, False, False)
    assert astuple(score_answer("63+11=74;#121", p)) == (False, True, False)
    assert astuple(score_answer("T63+11=74;74+48=122;#12", p)) == (True, True, False)
    assert astuple(score_answer("", p)) == (False, False, False)


def test_splits_are_disjoint_by_sum_and_deterministic():
    test, dev = problems(300, "test"), problems(300, "dev")
    assert test == problems(300, "test") and not {p.terms for p in test} & {p.terms for p in dev}
    assert all(split_of(p.terms) == "test" for p in test)
    assert {len(p.terms) for p in test} == {3, 4}
    assert all(len(p.markers) == N_MARKERS and set(p.markers) <= {"w", "x"} for p in test)
    evidence = [p.style_evidence for p in test]  # styles uniform in [0, 1]: every count of markers occurs
    assert set(evidence) == set(range(N_MARKERS + 1))
    with pytest.raises(ValueError, match="split must be"):
        problems(3, "validation")


def _corpus(recipe, n=30000, seed=0):
    rng = random.Random(seed)
    return [recipe.example(rng) for _ in range(n)]


def test_spontaneous_rate_follows_the_style_markers_not_the_problem_length():
    corpus = [(prompt, answer) for prompt, answer in _corpus(Recipe()) if prompt.startswith("Q")]
    by_evidence, by_terms = {}, {}
    for prompt, answer in corpus:
        markers, terms = prompt[2 : 2 + N_MARKERS], prompt[2 + N_MARKERS : -3].split("+")
        for table, key in ((by_evidence, markers.count("w")), (by_terms, len(terms))):
            table.setdefault(key, []).append(answer.startswith("T"))
    rate = {k: sum(v) / len(v) for k, v in by_evidence.items()}
    # the posterior mean of 0.3 s given c of 8 markers (a Beta(c+1, 9-c) posterior): 0.3 (c+1) / 10
    for c in range(N_MARKERS + 1):
        assert rate[c] == pytest.approx(0.3 * (c + 1) / 10, abs=0.03)
    assert max(rate.values()) < 0.35  # greedy decoding of a plain prompt stays direct
    length = {k: sum(v) / len(v) for k, v in by_terms.items()}
    assert abs(length[3] - length[4]) < 0.015  # problem length says nothing about the answer form


def test_cue_nonatomic_and_posttrained_recipes():
    corpus = _corpus(Recipe(), n=3000)
    cue = [a for p, a in corpus if p.startswith("S")]
    assert all(a.startswith("T") for a in cue) and abs(len(cue) / len(corpus) - 0.3) < 0.03
    assert not any(a.startswith("T") for _, a in _corpus(Recipe(step_by_step_traces=False), n=500))
    assert all(a.startswith("T") for _, a in _corpus(Recipe(posttrain=True), n=200))
    with pytest.raises(ValueError, match="spontaneous_max"):
        Recipe(spontaneous_max=0.6)


def test_encode_decode_round_trip():
    text = "T63+11=74;#74"
    assert decode(encode(text) + [2, 5]) == text
    assert decode(encode("Q:wxwx")) == "Q:wxwx"
