"""`mkt demo --quick` end to end: the transfer works where the capability is latent, and only there."""

import json

import pytest

from mkt.cli import main


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert (out / "demo.png").stat().st_size > 20_000
    return json.loads((out / "results.json").read_text())


def test_small_to_large_transfer_reaches_the_prompting_ceiling(results):
    rows = results["pairs"]["source-base -> target-family"]["rows"]
    cue, base = rows["cue (prompting ceiling)"], rows["baseline"]
    moved = rows["transferred prompt key, mixed alignment"]
    assert moved["correct"] >= 0.8 * cue["correct"] and moved["clean_step_by_step"] >= 0.8 * cue["clean_step_by_step"]
    assert moved["correct"] > base["correct"] + 0.2
    for name, row in rows.items():
        if name.startswith("random"):
            assert row["clean_step_by_step"] <= base["clean_step_by_step"] + 0.05
            assert abs(row["correct"] - base["correct"]) <= 0.1


def test_no_key_unlocks_a_capability_that_is_not_latent(results):
    rows = results["pairs"]["source-base -> target-nonatomic"]["rows"]
    base = rows["baseline"]
    for name, row in rows.items():
        assert row["clean_step_by_step"] == 0.0, name
        assert row["correct"] <= base["correct"] + 0.1, name


def test_every_transfer_reports_coverage_error_and_dev_choices(results):
    for pair in results["pairs"].values():
        for name, t in pair["transfers"].items():
            assert 0 <= t["mean_coverage"] <= 1.0 + 1e-6 and t["mean_heldout_error"] > 0
            chosen = pair["alpha_selection"][name]
            assert chosen["alpha"] in results["alphas"] and chosen["k"] in results["ranks"]
