"""`mkt demo --quick` end to end: the paper-protocol key beats its null where the capability is latent,
and nothing passes where it is not."""

import json

import pytest

from mkt.cli import main
from mkt.organisms.demo import NUISANCE, OWN_KEY, SOURCE_FREE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    assert (out / "demo.png").stat().st_size > 20_000
    assert "| source-base -> target-family |" in (out / "results.md").read_text()
    return json.loads((out / "results.json").read_text())


def test_small_to_large_key_beats_every_null_draw_and_matches_the_own_key(results):
    pair = results["pairs"]["source-base -> target-family"]
    rows, base = pair["rows"], pair["rows"]["baseline"]
    key, own = rows[pair["key"]], rows[OWN_KEY]
    for m in ("clean_step_by_step", "correct"):
        assert key[f"{m}_effect"] >= 0.8 * own[f"{m}_effect"] > 0.3
        assert key[f"{m}_effect"] > max(pair["null"][m]["effects"])  # p = 1 / (n_null + 1), the smallest it can be
        assert key[f"{m}_p_vs_null"] == pytest.approx(1 / (results["n_null"] + 1))
        assert key[f"{m}_paired"]["ci95"][0] > 0 and key[f"{m}_paired"]["mcnemar_p"] < 1e-3
    for control in (NUISANCE, SOURCE_FREE):
        assert rows[control]["clean_step_by_step_effect"] < key["clean_step_by_step_effect"] - 0.3, control
    for name, row in rows.items():
        if name.startswith("isotropic"):
            assert row["clean_step_by_step"] <= base["clean_step_by_step"] + 0.05
    # the oracle map returns the own key; the group says so
    assert rows["map fitted on Target-Unlocked (oracle)"]["group"] == rows[OWN_KEY]["group"] == "oracle"


def test_no_key_unlocks_a_capability_that_is_not_latent(results):
    pair = results["pairs"]["source-base -> target-nonatomic"]
    rows, base = pair["rows"], pair["rows"]["baseline"]
    for name, row in rows.items():
        assert row["clean_step_by_step"] == 0.0, name
        assert row["correct"] <= base["correct"] + 0.1, name
    assert not any(pair["significant"].values())


def test_every_condition_reports_its_dev_choice(results):
    for pair in results["pairs"].values():
        for name, curve in pair["dev_curves"].items():
            assert len(curve) == len(results["alphas"])
            alpha = pair["rows"][name]["alpha"] if name in pair["rows"] else None
            assert alpha is None or alpha in results["alphas"]
        assert 0 <= pair["diagnostics"]["mean_coverage"] <= 1 + 1e-6
