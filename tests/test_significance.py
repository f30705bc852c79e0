"""The significance machinery: one procedure per condition, equal to doing it by hand."""

import pytest
import torch

from mkt.generation import generate
from mkt.key import MasterKey
from mkt.models import model_identity
from mkt.pipeline import run_transfer
from mkt.significance import Decoding, Probe, assess_transfer, evaluate_conditions
from mkt.steering import Steering

QUESTIONS = [f"{a}+{b}" for a, b in zip(range(10, 70), range(30, 90))]
LOCKED, UNLOCKED = "Q:{question}|A:", "S:{question}|A:"
DECODING = Decoding(max_new_tokens=3, batch_size=7)


def _probe(prompts):
    """A scorer that depends on what is generated: does the continuation start with a digit / hold a '+'?"""
    return Probe(prompts, lambda texts: {"digit": [t[:1].isdigit() for t in texts], "plus": ["+" in t for t in texts]})


def _keys(model, n=3):
    g = torch.Generator().manual_seed(0)
    ident = model_identity(model)
    return {f"k{i}": MasterKey(torch.randn(ident.n_layers, ident.d_model, generator=g), ident) for i in range(n)}


def test_each_condition_gets_its_best_dev_alpha_and_its_own_test_scores(qwen):
    dev, test = _probe([f"Q:{q}|A:" for q in QUESTIONS[:6]]), _probe([f"Q:{q}|A:" for q in QUESTIONS[6:15]])
    keys, alphas = _keys(qwen), (0.2, 1.0, 3.0)
    got = evaluate_conditions(qwen, keys, dev, test, ("digit", "plus"), alphas=alphas, decoding=DECODING)
    for name, key in keys.items():  # the same procedure done by hand, one condition and one alpha at a time
        curve = {}
        for a in alphas:
            texts = [g.text for g in generate(qwen, dev.prompts, 3, Steering(key.directions, alpha=a))]
            scores = dev.score(texts)
            curve[a] = {m: sum(v) / len(v) for m, v in scores.items()}
        best = max(curve, key=lambda a: (curve[a]["digit"], curve[a]["plus"], -a))
        assert got[name].alpha == best and got[name].dev == curve
        texts = [g.text for g in generate(qwen, test.prompts, 3, Steering(key.directions, alpha=best))]
        assert got[name].test == {m: v for m, v in test.score(texts).items()}


def test_assess_transfer_structure_and_refusals(qwen, llama):
    report = run_transfer(qwen, llama, QUESTIONS[:20], QUESTIONS, LOCKED, UNLOCKED, k=6, center=True)
    dev, test = _probe([f"Q:{q}|A:" for q in QUESTIONS[:5]]), _probe([f"Q:{q}|A:" for q in QUESTIONS[5:12]])
    own = report.target_key * 2.0
    sig = assess_transfer(llama, report.source_key, report.alignment, dev, test, ("digit",), n_null=4, n_isotropic=2,
                          controls={"nuisance": report.target_key * -1.0}, own_key=own, decoding=DECODING)
    assert sig.names("null") == [f"null {i}" for i in range(4)]
    assert sig.names("control") == ["isotropic random 0", "isotropic random 1", "nuisance"]
    assert sig.names("oracle") == ["Target's own key"]
    s = sig.summary()
    assert s["n_null"] == 4 and s["n_test"] == 7 and len(s["null"]["digit"]["effects"]) == 4
    key = s["rows"]["transferred key"]
    null = s["null"]["digit"]["effects"]
    assert key["digit_p_vs_null"] == pytest.approx((1 + sum(e >= key["digit_effect"] for e in null)) / 5)
    assert s["diagnostics"]["cosine_with_own_key"] == pytest.approx([1.0] * 5, abs=1e-5)
    assert 0 <= s["diagnostics"]["mean_coverage"] <= 1 + 1e-6
    assert "subspace-matched null, 4 draws" in sig.table() and "(paired bootstrap 95%)" in sig.table()
    with pytest.raises(ValueError, match="share prompts"):
        assess_transfer(llama, report.source_key, report.alignment, dev, dev, ("digit",), n_null=2)
    with pytest.raises(ValueError, match="n_null must be >= 1"):
        assess_transfer(llama, report.source_key, report.alignment, dev, test, ("digit",), n_null=0)
    with pytest.raises(ValueError, match="returned no \\['correct'\\]"):
        assess_transfer(llama, report.source_key, report.alignment, dev, test, ("correct",), n_null=1,
                        n_isotropic=0, decoding=DECODING)
    with pytest.raises(ValueError, match="non-empty list of prompts"):
        Probe("Q:1+2|A:", lambda texts: {})


@pytest.mark.slow
def test_a_null_draw_passed_as_the_key_is_rarely_called_better_than_its_null(qwen, llama):
    """The whole pipeline can fail: a random Source key, exchangeable with its own null draws, beats
    all of them about 1 time in (n_null + 1), never systematically (ties count against it)."""
    from mkt.key import random_like

    report = run_transfer(qwen, llama, QUESTIONS[:20], QUESTIONS, LOCKED, UNLOCKED, k=6, center=True)
    dev, test = _probe([f"Q:{q}|A:" for q in QUESTIONS[:6]]), _probe([f"Q:{q}|A:" for q in QUESTIONS[6:18]])
    decoding = Decoding(max_new_tokens=1, batch_size=64)
    trials, n_null, wins = 30, 4, 0
    for t in range(trials):
        fake = random_like(report.source_key, seed=10_000 + t)
        sig = assess_transfer(llama, fake, report.alignment, dev, test, ("digit", "plus"), n_null=n_null,
                              n_isotropic=0, alphas=(0.5, 3.0), decoding=decoding, seed=t)
        wins += sig.p_value("transferred key", "digit") == pytest.approx(1 / (n_null + 1))
    assert wins / trials <= 0.4  # expected at most 1/5 (fewer with ties); a key favoured by the procedure wins often


def test_every_condition_is_steered_at_the_keys_hook(qwen):
    """Conditions are written where the key is: a key at hook_mlp_out is never compared with
    nulls at hook_resid_post."""
    from dataclasses import replace as replace_key

    from tests.conftest import PROMPTS

    g = torch.Generator().manual_seed(5)
    key = MasterKey(torch.randn(qwen.cfg.n_layers, qwen.cfg.d_model, generator=g), model_identity(qwen))
    seen = []
    dev = Probe(["Q:1+2|A:"], lambda texts: {"any": [True] * len(texts)})
    test = Probe(PROMPTS, lambda texts: seen.append(list(texts)) or {"any": [True] * len(texts)})
    evaluate_conditions(qwen, {"k": replace_key(key, hook="hook_mlp_out")}, dev, test, ("any",),
                        alphas=(2.0,), decoding=Decoding(max_new_tokens=5, hook="hook_mlp_out"))
    at_hook = generate(qwen, PROMPTS, 5, Steering(key.directions, 2.0, hook="hook_mlp_out"))
    at_resid = generate(qwen, PROMPTS, 5, Steering(key.directions, 2.0))
    assert seen[-1] == [x.text for x in at_hook] != [x.text for x in at_resid]


def test_conditions_at_another_hook_point_are_refused_before_any_generation(qwen):
    from dataclasses import replace as replace_key

    key = MasterKey(torch.ones(qwen.cfg.n_layers, qwen.cfg.d_model), model_identity(qwen))
    probe = None  # never reached: the hooks are checked first
    with pytest.raises(ValueError, match=r"keys \['b'\] live at \['hook_mlp_out'\] but the conditions are steered at "
                                         "hook_resid_post"):
        evaluate_conditions(qwen, {"a": key, "b": replace_key(key, hook="hook_mlp_out")}, probe, probe, ["correct"],
                            decoding=Decoding())
