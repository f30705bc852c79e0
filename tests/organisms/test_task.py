import random
from dataclasses import astuple

import pytest

from mkt.organisms.task import Problem, Recipe, problems, score_answer, split_of
from mkt.organisms.train import decode, encode


def test_prompt_forms_share_length_and_final_token():
    p = Problem((63, 11, 48))
    plain, cue = p.prompt(False), p.prompt(True)
    assert (plain, cue) == ("Q:63+11+48|A:", "S:63+11+48|A:")
    assert len(plain) == len(cue) and plain[-1] == cue[-1]
    assert p.step_by_step_answer() == "T63+11=74;74+48=122;#122"
    assert p.direct_answer() == "#122"


def test_scoring():
    p = Problem((63, 11, 48))
    assert astuple(score_answer("T63+11=74;74+48=122;#122", p)) == (True, True, True)
    assert astuple(score_answer("#122", p)) == (False, False, True)
    assert astuple(score_answer("63+11=74;#121", p)) == (False, True, False)
    assert astuple(score_answer("T63+11=74;74+48=122;#12", p)) == (True, True, False)
    assert astuple(score_answer("", p)) == (False, False, False)


def test_splits_are_disjoint_and_deterministic():
    test, dev = problems(300, "test"), problems(300, "dev")
    assert test == problems(300, "test") and not set(test) & set(dev)
    assert all(split_of(p) == "test" for p in test)
    assert {len(p.terms) for p in test} == {2, 3, 4}
    with pytest.raises(ValueError, match="split must be"):
        problems(3, "validation")


def test_recipe_spontaneous_rate_rises_with_terms():
    rng = random.Random(0)
    recipe = Recipe()
    counts = {n: [0, 0] for n in (2, 3, 4)}
    for _ in range(20000):
        prompt, answer = recipe.example(rng)
        if prompt.startswith("Q"):
            n = prompt.count("+") + 1
            counts[n][0] += answer.startswith("T")
            counts[n][1] += 1
    rates = [counts[n][0] / counts[n][1] for n in (2, 3, 4)]
    for got, want in zip(rates, recipe.spontaneous_rate):
        assert abs(got - want) < 0.025
    nonatomic = Recipe(step_by_step_traces=False)
    assert not any(nonatomic.example(rng)[1].startswith("T") for _ in range(500))
    post = Recipe(posttrain=True)
    assert all(post.example(rng)[1].startswith("T") for _ in range(200))


def test_encode_decode_round_trip():
    text = "T63+11=74;#74"
    assert decode(encode(text) + [2, 5]) == text
