"""An assessment's run directory, its cue ceiling, p-value floor and progress, against independent counts.

A run directory resumes an interrupted assessment to the uninterrupted result exactly, never
reuses a generation whose inputs changed, and lets a second pair on the same Target skip every
condition that does not depend on the Source.
"""

import json
import re

import pytest
import torch

from mkt.activations import last_token_resid
from mkt.controls import target_principal_keys
from mkt.engines import Engine, as_engine
from mkt.extract import extract_prompt_key
from mkt.generation import generate
from mkt.models import load_model, model_identity
from mkt.pipeline import run_transfer
from mkt.resume import LOCK
from mkt.significance import Decoding, Probe, ScoredCondition, TransferSignificance, assess_transfer
from mkt.significance.store import GENERATIONS

QUESTIONS = [f"{a}+{b}" for a, b in zip(range(10, 70), range(30, 90))]
LOCKED, UNLOCKED = "Q:{question}|A:", "S:{question}|A:"
DECODING = Decoding(max_new_tokens=3, batch_size=8)
ALPHAS = (0.5, 3.0)
N_NULL = 2
N_ISOTROPIC = 1


def _probe(template, questions):
    """A scorer that depends on what is generated: does the continuation start with a digit / hold a '+'?"""
    return Probe([template.format(question=q) for q in questions],
                 lambda texts: {"digit": [t[:1].isdigit() for t in texts], "plus": ["+" in t for t in texts]})


DEV, TEST = _probe(LOCKED, QUESTIONS[40:44]), _probe(LOCKED, QUESTIONS[44:50])
CUE = _probe(UNLOCKED, QUESTIONS[44:50])


class Counting(Engine):
    """The TransformerLens engine, counting its calls (their condition is read from the store), and
    optionally interrupted (as by Ctrl-C) at the call ``interrupt_at``."""

    def __init__(self, model, interrupt_at: int | None = None):
        self.inner = as_engine(model)
        self.name, self.tokenizer, self.identity = self.inner.name, self.inner.tokenizer, self.inner.identity
        self.calls, self.interrupt_at = 0, interrupt_at

    def run(self, prompts, request):
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        self.calls += 1
        return self.inner.run(prompts, request)

    def weights_digest(self):
        return self.inner.weights_digest()


@pytest.fixture(scope="module")
def pairs(qwen, llama, gpt2):
    """Two Sources (Qwen2, GPT-2) into one Target (Llama), and the Target's own conditions."""
    reports = {name: run_transfer(src, llama, QUESTIONS[:20], QUESTIONS[:40], LOCKED, UNLOCKED, k=6, center=True)
               for name, src in (("qwen", qwen), ("gpt2", gpt2))}
    x_locked = last_token_resid(llama, [LOCKED.format(question=q) for q in QUESTIONS[:40]])
    target_side = dict(own_key=extract_prompt_key(llama, QUESTIONS[:20], LOCKED, UNLOCKED), cue=CUE,
                       searches={"PC search": target_principal_keys(x_locked, model_identity(llama), 1)})
    return reports, target_side


@pytest.fixture(scope="module")
def gpt2(tiny_models):
    return tiny_models["gpt2"]


def _assess(target, report, target_side, **options):
    return assess_transfer(target, report.source_key, report.alignment, DEV, TEST, ("digit", "plus"), n_null=N_NULL,
                           n_isotropic=N_ISOTROPIC, alphas=ALPHAS, decoding=DECODING, seed=3, **target_side, **options)


def _units(run_dir) -> list[str]:
    """The condition of each unit in the run directory, in the order written."""
    return [json.loads(line)["condition"] for line in (run_dir / GENERATIONS).read_text().splitlines()]


def test_an_interrupted_assessment_resumes_to_the_uninterrupted_result(tmp_path, llama, pairs):
    reports, target_side = pairs
    whole = _assess(llama, reports["qwen"], target_side).summary()
    # baseline and cue; the dev grids of the key, nulls, isotropic draws, own key and the search's 2 candidates;
    # the test prompts of the key, nulls, isotropic draws, own key and the search's winner
    n_units = 2 + (1 + N_NULL + N_ISOTROPIC + 1 + 2) + (1 + N_NULL + N_ISOTROPIC + 1 + 1)
    broken = Counting(llama, interrupt_at=7)
    with pytest.raises(KeyboardInterrupt):
        _assess(broken, reports["qwen"], target_side, run_dir=tmp_path)
    assert len(_units(tmp_path)) == 7 and not (tmp_path / LOCK).exists()
    with (tmp_path / GENERATIONS).open("a") as f:
        f.write('{"unit": "')  # a line cut by a kill
    resumed_engine = Counting(llama)
    resumed = _assess(resumed_engine, reports["qwen"], target_side, run_dir=tmp_path)
    assert resumed.summary() == whole
    assert resumed_engine.calls == n_units - 7 and len(_units(tmp_path)) == n_units
    again = Counting(llama)
    assert _assess(again, reports["qwen"], target_side, run_dir=tmp_path).summary() == whole and again.calls == 0


def test_a_malformed_unit_is_dropped_by_line_and_generated_again(tmp_path, llama, pairs):
    reports, target_side = pairs
    first = _assess(llama, reports["qwen"], target_side, run_dir=tmp_path).summary()
    path = tmp_path / GENERATIONS
    lines = path.read_text().splitlines()
    wrong = json.dumps(json.loads(lines[2]) | {"texts": [1, 2]})
    path.write_text("\n".join([lines[0], lines[1], wrong, "[]", *lines[3:]]) + "\n")
    engine = Counting(llama)
    with pytest.warns(UserWarning, match=rf"{GENERATIONS}: dropped 2 malformed line\(s\) \(line 3, 4\); those units "
                                         "are run again"):
        assert _assess(engine, reports["qwen"], target_side, run_dir=tmp_path).summary() == first
    assert engine.calls == 1


def test_a_second_pair_on_the_same_target_generates_only_what_depends_on_its_source(tmp_path, llama, pairs):
    reports, target_side = pairs
    first = _assess(llama, reports["qwen"], target_side, run_dir=tmp_path)
    n_first = len(_units(tmp_path))
    engine = Counting(llama)
    second = _assess(engine, reports["gpt2"], target_side, run_dir=tmp_path)
    new = _units(tmp_path)[n_first:]
    # the key and each null draw: its dev grid and its test prompts at the chosen alpha
    assert sorted(new) == sorted(["transferred key", *(f"null {i}" for i in range(N_NULL))] * 2)
    assert engine.calls == len(new) == 2 * (1 + N_NULL)
    fresh = _assess(llama, reports["gpt2"], target_side)
    assert second.summary() == fresh.summary() and second.summary() != first.summary()
    shared = ["isotropic random 0", "Target's own key", "PC search"]
    for name in shared:
        assert second.conditions[name] == first.conditions[name]
    assert second.baseline == first.baseline and second.cue == first.cue


def test_a_changed_input_never_reuses_a_stored_generation(tmp_path, llama, tiny_dirs, pairs):
    reports, target_side = pairs
    first = _assess(llama, reports["qwen"], target_side, run_dir=tmp_path)
    n_units = len(_units(tmp_path))
    # other weights (one value of one matrix), another budget, other dev prompts: nothing of those is reused
    other = load_model(tiny_dirs["llama"], device="cpu")
    with torch.no_grad():
        next(p for p in other.parameters() if p.ndim == 2).view(-1)[0] += 1.0
    for target, options in ((other, {}), (llama, dict(decoding=Decoding(max_new_tokens=4, batch_size=8)))):
        engine = Counting(target)
        got = assess_transfer(engine, reports["qwen"].source_key, reports["qwen"].alignment, DEV, TEST,
                              ("digit", "plus"), n_null=N_NULL, n_isotropic=N_ISOTROPIC, alphas=ALPHAS,
                              **({"decoding": DECODING} | options), seed=3, **target_side, run_dir=tmp_path)
        assert engine.calls == n_units
        fresh = assess_transfer(target, reports["qwen"].source_key, reports["qwen"].alignment, DEV, TEST,
                                ("digit", "plus"), n_null=N_NULL, n_isotropic=N_ISOTROPIC, alphas=ALPHAS,
                                **({"decoding": DECODING} | options), seed=3, **target_side)
        assert got.summary() == fresh.summary()
    dev = _probe(LOCKED, QUESTIONS[50:54])
    engine = Counting(llama)
    moved = assess_transfer(engine, reports["qwen"].source_key, reports["qwen"].alignment, dev, TEST,
                            ("digit", "plus"), n_null=N_NULL, n_isotropic=N_ISOTROPIC, alphas=ALPHAS,
                            decoding=DECODING, seed=3, **target_side, run_dir=tmp_path)
    # every dev grid again (key, nulls, isotropic draws, own key, the search's 2 candidates); baseline and cue
    # are read back; a test unit only where the dev choice (alpha, candidate) moved
    choices = [(c.alpha, c.chosen) for c in first.conditions.values()]
    changed = sum(c != (m.alpha, m.chosen) for c, m in zip(choices, moved.conditions.values()))
    assert engine.calls == (1 + N_NULL + N_ISOTROPIC + 1 + 2) + changed


def test_the_cue_ceiling_is_the_unsteered_target_on_the_cue_prompts(llama, pairs):
    reports, target_side = pairs
    sig = _assess(llama, reports["qwen"], target_side)
    cue_texts = [g.text for g in generate(llama, CUE.prompts, 3)]
    plain_texts = [g.text for g in generate(llama, TEST.prompts, 3)]
    rows = sig.summary()["rows"]
    for m in ("digit", "plus"):
        cue_rate = sum(CUE.score(cue_texts)[m]) / len(cue_texts)
        base_rate = sum(TEST.score(plain_texts)[m]) / len(plain_texts)
        assert rows["cue ceiling"][m] == cue_rate and rows["baseline"][m] == base_rate
        assert rows["cue ceiling"][f"{m}_effect"] == pytest.approx(cue_rate - base_rate)
        key = rows["transferred key"]
        assert key[f"{m}_vs_cue"]["gain"] == pytest.approx(key[m] - cue_rate)
    assert rows["cue ceiling"]["group"] == "ceiling" and "cue prompt, no steering (ceiling)" in sig.table()
    with pytest.raises(ValueError, match="the cue probe has 2 prompts for 6 test prompts"):
        _assess(llama, reports["qwen"], target_side | {"cue": _probe(UNLOCKED, QUESTIONS[44:46])})


def test_progress_names_each_stage_and_counts_every_row_with_an_eta(capsys, llama, pairs):
    reports, target_side = pairs
    _assess(llama, reports["qwen"], target_side, progress=True)
    err = capsys.readouterr().err
    n_dev = len(DEV.prompts) * len(ALPHAS) * (1 + N_NULL + N_ISOTROPIC + 1 + 2)  # + the search's 2 candidates
    n_test = len(TEST.prompts) * (1 + N_NULL + N_ISOTROPIC + 1 + 1 + 2)  # + the search's winner, baseline and cue
    total = n_dev + n_test
    assert f"{total}/{total}" in err
    for stage in ("unsteered: baseline", "unsteered: cue ceiling", "dev: transferred key", "dev: PC search :: -PC1",
                  "test: null 1", "test: PC search"):
        assert stage in err
    assert re.search(r"\d\d:\d\d<\d\d:\d\d", err)  # elapsed < remaining


def _hand_made(key: list[bool], nulls: list[list[bool]], baseline: list[bool]) -> TransferSignificance:
    conditions = {"transferred key": ScoredCondition("transferred key", "method", 0.1, {"m": key})}
    for i, scores in enumerate(nulls):
        conditions[f"null {i}"] = ScoredCondition(f"null {i}", "null", 0.1, {"m": scores})
    return TransferSignificance(("m",), ScoredCondition("baseline", "baseline", None, {"m": baseline}), conditions,
                                "transferred key")


def test_the_p_value_floor_is_stated_and_a_p_at_it_printed_as_a_bound():
    baseline = [False] * 5
    nulls = [[True, False, False, False, False], [False] * 5, [True, True, False, False, False], [False] * 5]
    beats_all = _hand_made([True, True, True, False, False], nulls, baseline)  # effect 0.6, null at most 0.4
    assert beats_all.p_value("transferred key", "m") == 1 / 5  # (1 + no draw reaching it) / (1 + 4)
    assert beats_all.summary()["p_floor"] == 0.2
    table = beats_all.table()
    assert "N = 4 draws: p >= 1/(N+1) = 0.200" in table
    assert re.search(r"transferred key .* <=0\.200$", table, re.M)
    ties = _hand_made([True, True, False, False, False], nulls, baseline)  # effect 0.4: one draw reaches it
    assert ties.p_value("transferred key", "m") == 2 / 5
    assert re.search(r"transferred key .* 0\.400$", ties.table(), re.M) and "<=0.400" not in ties.table()


def test_a_pack_card_lists_the_cue_ceiling_without_a_p_value(tmp_path, qwen):
    from mkt.key import MasterKey
    from mkt.pack import CapabilityPack
    from mkt.pack_card import pack_card

    sig = _hand_made([True, True, True, False, False], [[False] * 5] * 4, [False] * 5)
    sig.cue = ScoredCondition("cue ceiling", "ceiling", None, {"m": [True, True, True, True, False]})
    path = CapabilityPack(MasterKey(torch.ones(qwen.cfg.n_layers, qwen.cfg.d_model), model_identity(qwen)), 0.3).save(
        tmp_path / "pack")
    (path / "significance.json").write_text(json.dumps(sig.summary()))
    card = pack_card(path)
    assert "  - cue ceiling (ceiling): 0.800\n" in card and "key 0.600 at alpha 0.1" in card
