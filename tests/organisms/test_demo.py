"""`mkt demo --quick` end to end: every number the demo reports, checked against its definition."""

import json

import pytest

from mkt.cli import main
from mkt.organisms.demo import MARKER_CONTRAST, N_PCS, N_SOURCE_FREE, NUISANCE, OWN_KEY, PC_SEARCH, SOURCE_FREE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert (out / "demo.png").stat().st_size > 20_000
    assert "| source-base -> target-family |" in (out / "results.md").read_text()
    return json.loads((out / "results.json").read_text())


def test_small_to_large_key_moves_the_capability_as_far_as_the_own_key(results):
    pair = results["pairs"]["source-base -> target-family"]
    rows = pair["rows"]
    key, own = rows[pair["key"]], rows[OWN_KEY]
    for m in ("clean_step_by_step", "correct"):
        assert key[f"{m}_effect"] >= 0.8 * own[f"{m}_effect"] > 0.3
        assert key[f"{m}_paired"]["ci95"][0] > 0 and key[f"{m}_paired"]["mcnemar_p"] < 1e-3


def test_p_values_are_the_share_of_null_draws_reaching_the_effect(results):
    for pair in results["pairs"].values():
        assert len(pair["null"]["correct"]["effects"]) == results["n_null"] == pair["n_null"]
        for name, row in pair["rows"].items():
            if row["group"] in ("baseline", "ceiling", "null"):
                continue
            for m in results["metrics"]:
                reached = sum(e >= row[f"{m}_effect"] for e in pair["null"][m]["effects"])
                assert row[f"{m}_p_vs_null"] == pytest.approx((1 + reached) / (1 + results["n_null"])), name
                assert pair["significant"][m] == (pair["rows"][pair["key"]][f"{m}_p_vs_null"] < 0.05)


def test_controls_and_oracles_are_reported_apart(results):
    rows = results["pairs"]["source-base -> target-family"]["rows"]
    assert rows[PC_SEARCH]["group"] == "control" and rows[PC_SEARCH]["chosen"] in {
        f"{s}PC{i}" for s in "+-" for i in range(1, N_PCS + 1)}
    for name in [NUISANCE, MARKER_CONTRAST] + [SOURCE_FREE.format(i) for i in range(N_SOURCE_FREE)]:
        assert rows[name]["group"] == "control"
    assert rows["map fitted on Target-Unlocked (oracle)"]["group"] == rows[OWN_KEY]["group"] == "oracle"


def test_no_key_unlocks_a_capability_that_is_not_latent(results):
    pair = results["pairs"]["source-base -> target-nonatomic"]
    rows, base = pair["rows"], pair["rows"]["baseline"]
    for name, row in rows.items():
        assert row["clean_step_by_step"] == base["clean_step_by_step"] == 0.0, name
    key = rows[pair["key"]]  # no gain (steering this model only ever costs direct accuracy)
    assert key["correct_paired"]["ci95"][1] <= 0.05 and not any(pair["significant"].values())


def test_every_condition_reports_its_dev_choice(results):
    for pair in results["pairs"].values():
        for name, curve in pair["dev_curves"].items():
            assert len(curve) == len(results["alphas"])
            alpha = pair["rows"][name]["alpha"] if name in pair["rows"] else None
            assert alpha is None or alpha in results["alphas"]
        assert 0 <= pair["diagnostics"]["mean_coverage"] <= 1 + 1e-6
