import itertools
import math
from math import comb

import numpy as np
import pytest
import torch

from mkt.eval.stats import (
    difference_interval,
    empirical_p_value,
    mcnemar_exact,
    paired_bootstrap_interval,
    paired_difference_interval,
    pass_at_k,
    wilson_interval,
)


def _brute_force(n, c, k):
    """Share of k-subsets of n samples (c correct) that contain a correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n,c,k", [(5, 0, 1), (5, 1, 1), (5, 2, 3), (6, 3, 2), (7, 6, 1), (8, 2, 8), (4, 4, 2)])
def test_pass_at_k_exact_small_cases(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(_brute_force(n, c, k), abs=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(1 - comb(n - c, k) / comb(n, k), abs=1e-12)


def test_pass_at_1_is_the_accuracy_and_large_n_is_stable():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(1000, 1, 10) == pytest.approx(0.01, abs=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="k=6"):
        pass_at_k(5, 1, 6)
    with pytest.raises(ValueError, match="c <= n"):
        pass_at_k(5, 6, 1)


def test_wilson_interval():
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and 0.1 < hi < 0.2


def test_difference_interval_is_newcombes():
    lo, hi = difference_interval(0.6, 0.4, 100)
    (l1, u1), (l2, u2) = wilson_interval(60, 100), wilson_interval(40, 100)
    assert lo == pytest.approx(0.2 - ((0.6 - l1) ** 2 + (u2 - 0.4) ** 2) ** 0.5)
    assert hi == pytest.approx(0.2 + ((u1 - 0.6) ** 2 + (0.4 - l2) ** 2) ** 0.5)
    lo, hi = difference_interval(1.0, 0.0, 200)  # not degenerate at the extremes
    assert 0.9 < lo < 1.0 and hi == pytest.approx(1.0)
    lo, hi = difference_interval(0.0, 0.0, 200)
    assert lo < 0 < hi


def _mcnemar_by_enumeration(only_a: int, only_b: int) -> float:
    """Two-sided exact binomial test by summing every outcome at most as likely as the observed one."""
    n = only_a + only_b
    probs = [comb(n, i) / 2**n for i in range(n + 1)]
    observed = probs[only_a]
    return min(1.0, sum(p for p in probs if p <= observed + 1e-15))


@pytest.mark.parametrize("only_a,only_b,both,neither", [(0, 5, 3, 2), (7, 1, 0, 10), (4, 4, 5, 5), (12, 2, 30, 1)])
def test_mcnemar_exact_matches_enumeration(only_a, only_b, both, neither):
    a = [True] * only_a + [False] * only_b + [True] * both + [False] * neither
    b = [False] * only_a + [True] * only_b + [True] * both + [False] * neither
    assert mcnemar_exact(a, b) == pytest.approx(_mcnemar_by_enumeration(only_a, only_b), abs=1e-12)
    assert mcnemar_exact(a, b) == mcnemar_exact(b, a)


def test_mcnemar_known_values_and_errors():
    assert mcnemar_exact([True] * 3, [True] * 3) == 1.0  # no discordant pair
    assert mcnemar_exact([False] * 5, [True] * 5) == pytest.approx(2 / 32)
    with pytest.raises(ValueError, match="same items"):
        mcnemar_exact([True], [True, False])


def test_paired_bootstrap_interval():
    a = [1, 1, 0, 1, 0, 1, 1, 1, 0, 1] * 5
    b = [0, 1, 0, 0, 0, 1, 0, 1, 0, 0] * 5
    lo, hi = paired_bootstrap_interval(a, b, n_boot=4000, seed=3)
    assert lo < 0.4 < hi and 0.15 < lo and hi < 0.62
    assert paired_bootstrap_interval(a, b, seed=3, n_boot=4000) == (lo, hi)  # seeded
    assert paired_bootstrap_interval([1] * 8, [0] * 8) == (1.0, 1.0)  # a constant difference


def test_empirical_p_value_definition():
    assert empirical_p_value(0.5, [0.1, 0.2, 0.3]) == pytest.approx(1 / 4)
    assert empirical_p_value(0.2, [0.1, 0.2, 0.3]) == pytest.approx(3 / 4)  # ties count against the effect
    assert empirical_p_value(0.1, [float(x) for x in range(1, 21)], larger=False) == pytest.approx(1 / 21)
    assert empirical_p_value(1.0, [float("nan"), 0.5]) == 0.5  # NaN (unmatched) draws are left out
    assert math.isnan(empirical_p_value(1.0, [float("nan")])) and math.isnan(empirical_p_value(0.5, []))
    assert math.isnan(empirical_p_value(float("nan"), [0.1, 0.2]))


@pytest.mark.parametrize("discrete", [False, True])
def test_a_null_draw_is_called_significant_at_the_nominal_rate(discrete):
    """The machinery can fail: when the 'key' is itself a null draw, p < 0.05 about 5% of the time."""
    g = torch.Generator().manual_seed(0)
    trials, n_null, hits = 4000, 20, 0
    for _ in range(trials):
        draws = torch.rand(n_null + 1, generator=g)
        if discrete:  # rates on 50 prompts: many ties, as with real accuracies
            draws = torch.binomial(torch.full((n_null + 1,), 50.0), torch.full((n_null + 1,), 0.3), generator=g) / 50
        hits += empirical_p_value(float(draws[0]), draws[1:].tolist()) < 0.05
    rate = hits / trials
    if discrete:
        assert 0.005 < rate <= 0.055  # ties make the test conservative, never liberal
    else:
        assert abs(rate - 1 / 21) < 0.012  # p < 0.05 only when the key beats all 20 draws


def test_newcombe_paired_interval_matches_the_paper_and_does_not_collapse():
    a = np.array([1] * 8 + [1] * 5 + [0] * 4 + [0] * 38)  # (both, only a, only b, neither) = (8, 5, 4, 38)
    b = np.array([1] * 8 + [0] * 5 + [1] * 4 + [0] * 38)
    assert paired_difference_interval(a, b) == pytest.approx((-0.0909, 0.1276), abs=5e-4)
    # with an empty margin phi = 0, and it is Newcombe's unpaired hybrid score interval
    a, b = np.r_[np.ones(7), np.zeros(23)], np.zeros(30)
    assert paired_difference_interval(a, b) == pytest.approx(difference_interval(7 / 30, 0.0, 30), abs=1e-9)
    # coverage near 95% for correlated pairs at n=40, where the percentile bootstrap undercovers
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(1000):
        u = rng.random(40)
        x, y = u < 0.2, (u < 0.15) | (rng.random(40) < 0.05)
        lo, hi = paired_difference_interval(x, y)
        hits += lo <= 0.2 - (0.15 + 0.85 * 0.05) <= hi
    assert hits / 1000 >= 0.93
    # nothing discordant: the interval keeps its Wilson width instead of collapsing to [0, 0]
    assert paired_difference_interval(np.zeros(3), np.zeros(3)) == pytest.approx((-0.5615, 0.5615), abs=1e-4)
    assert paired_difference_interval(np.zeros(200), np.zeros(200))[1] == pytest.approx(0.0188, abs=1e-3)
    with pytest.raises(ValueError, match="same, non-empty"):
        paired_difference_interval(np.zeros(3), np.zeros(4))
