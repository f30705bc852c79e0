import math

import pytest

from mkt.eval.agreement import agreement


def test_kappa_matches_the_textbook_example():
    # Cohen (1960)-style 2x2 example (Wikipedia, "Cohen's kappa"): 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    result = agreement(a, b)
    assert result.n == 50 and result.accuracy == pytest.approx(0.7)
    assert result.kappa == pytest.approx(0.4)  # p_o 0.7, p_e 0.5
    assert result.confusion == {"no": {"no": 15, "yes": 10}, "yes": {"no": 5, "yes": 20}}
    assert "| yes | 5 | 20 |" in result.table()


def test_three_labels_perfect_chance_and_bad_input():
    labels = ("steps", "direct", "degenerate")
    same = ["steps", "direct", "degenerate", "steps"]
    assert agreement(same, same, labels).kappa == pytest.approx(1.0)
    # independent labellings with the same marginals: p_o = p_e, kappa 0
    ref = ["steps", "steps", "direct", "direct"]
    pred = ["steps", "direct", "steps", "direct"]
    assert agreement(ref, pred, labels).kappa == pytest.approx(0.0)
    assert math.isnan(agreement(["steps"] * 3, ["steps"] * 3).kappa)  # one label throughout: undefined
    with pytest.raises(ValueError, match="same items"):
        agreement(["steps"], [])
    with pytest.raises(ValueError, match="not in the label set"):
        agreement(["steps"], ["maybe"], labels)
