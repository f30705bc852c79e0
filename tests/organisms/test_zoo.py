"""The shipped organisms load through the real path and behave as their recipes say."""

import json

import pytest

from mkt.errors import ModelLoadError
from mkt.eval.organism_task import problems, score_answer
from mkt.generation import generate
from mkt.models import load_model, model_identity
from mkt.organisms.zoo import ZOO, organism_path


@pytest.mark.parametrize("name", list(ZOO))
def test_shipped_organism_loads_and_matches_its_spec(name):
    model = load_model(f"organism:{name}", device="cpu")
    spec = ZOO[name]
    ident = model_identity(model)
    assert (ident.n_layers, ident.d_model) == (spec.n_layers, spec.d_model)
    manifest = json.loads((organism_path(name) / "organism.json").read_text())
    assert manifest["spec"]["seed"] == spec.seed and manifest["spec"]["recipe"]["posttrain"] == spec.recipe.posttrain


def _rate(name, cue, metric="clean_step_by_step", n=40):
    model = load_model(f"organism:{name}", device="cpu")
    probs = problems(n, "test")
    gens = generate(model, [p.prompt(cue) for p in probs], 40, batch_size=n)
    return sum(getattr(score_answer(g.text, p), metric) for g, p in zip(gens, probs)) / n


def test_latent_capability_behaviour():
    assert _rate("source-base", cue=True) >= 0.9 and _rate("source-base", cue=False) <= 0.2
    assert _rate("source-post", cue=False) >= 0.9
    assert _rate("target-nonatomic", cue=True, metric="any_step_by_step") == 0.0


def test_unknown_organism():
    with pytest.raises(KeyError, match="unknown organism 'source-huge'"):
        load_model("organism:source-huge")
    assert issubclass(ModelLoadError, ValueError)


def test_rows_that_finish_early_leave_the_batch_without_changing_any_row():
    """Direct answers end after ~5 tokens, step-by-step ones after ~30: the compacted batch equals single runs."""
    model = load_model("organism:source-base", device="cpu")
    probs = problems(6, "test")
    prompts = [p.prompt(cue=i % 2 == 0) for i, p in enumerate(probs)]
    batched = generate(model, prompts, 40, batch_size=6, record_entropy=True)
    assert len({g.n_tokens for g in batched}) > 1  # rows really finish at different steps
    recomputed = generate(model, prompts, 40, batch_size=6, use_cache=False)
    for g, r, p in zip(batched, recomputed, prompts):
        alone = generate(model, [p], 40, record_entropy=True)[0]
        assert g.token_ids == alone.token_ids == r.token_ids
        assert g.entropies == pytest.approx(alone.entropies, abs=1e-4)
