import pytest

from analyses.atomic import gain_interval, plot_probes, probe


def _rate_table(table):
    return lambda name: table[name]


def test_verdicts_follow_the_stated_criterion(tmp_path):
    rates = {"baseline": 0.1, "prompting": 0.9, "key: own": 0.8, "post-trained model": 0.95}
    conditions = {name: dict(name=name) for name in rates}
    atomic = probe("t1", _rate_table(rates), conditions, n=200, threshold=0.1)
    assert atomic.verdict == "ATOMIC" and atomic.gains["key: own"] == pytest.approx(0.7)
    flat = {"baseline": 0.1, "prompting": 0.12, "key: own": 0.11, "post-trained model": 0.95}
    non = probe("t2", _rate_table(flat), {n: dict(name=n) for n in flat}, n=200, threshold=0.1)
    assert non.verdict == "NON-ATOMIC" and non.gains["post-trained model"] == pytest.approx(0.85)
    # a large gain on too few prompts is not significant
    small = probe("t3", _rate_table({"baseline": 0.0, "key: own": 0.2}), {"baseline": {"name": "baseline"},
                  "key: own": {"name": "key: own"}}, n=3, threshold=0.1)
    assert small.verdict == "NON-ATOMIC"
    plot_probes([atomic, non], tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000


def test_gain_interval_is_newcombes():
    from mkt.eval.stats import wilson_interval

    lo, hi = gain_interval(0.6, 0.4, 100)
    (l1, u1), (l2, u2) = wilson_interval(60, 100), wilson_interval(40, 100)
    assert lo == pytest.approx(0.2 - ((0.6 - l1) ** 2 + (u2 - 0.4) ** 2) ** 0.5)
    assert hi == pytest.approx(0.2 + ((u1 - 0.6) ** 2 + (0.4 - l2) ** 2) ** 0.5)
    lo, hi = gain_interval(1.0, 0.0, 200)  # not degenerate at the extremes
    assert 0.9 < lo < 1.0 and hi == pytest.approx(1.0)
    lo, hi = gain_interval(0.0, 0.0, 200)
    assert lo < 0 < hi
