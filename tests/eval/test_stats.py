import itertools
from math import comb

import pytest

from mkt.eval.stats import difference_interval, pass_at_k, wilson_interval


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
