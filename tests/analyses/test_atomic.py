import pytest

from analyses.atomic import plot_probes, probe


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
