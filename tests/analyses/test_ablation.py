import json
from dataclasses import replace
from functools import partial

import numpy as np
import pytest
import torch

from analyses.ablation.metric import (
    Metric,
    bisect_increasing,
    decision_metric,
    decision_token_metric,
    kl_divergence,
    survival,
    token_pair_metric,
    variance_share,
)
from analyses.ablation.parts import activation_patching, layer_ablation, null_direction_sets, pooled_p
from analyses.ablation.report import plot_ablation, report
from mkt.activations import last_token_resid, prompt_states
from mkt.conditions import (
    mean_ablate,
    mean_ablation_condition,
    next_token_logprobs,
    patch_condition,
    project_out,
    projection_condition,
)
from mkt.controls import size_matched_noise, top_principal_directions
from mkt.eval.stats import empirical_p_value
from mkt.generation import generate
from mkt.key import MasterKey, random_like
from mkt.models import model_identity, resid_hook_name, tokenize_left_padded
from tests.conftest import PROMPTS


def logits_of(model, prompts, **apply):
    ids, mask = tokenize_left_padded(model, prompts)
    with torch.no_grad():
        if not apply:
            return model(ids, attention_mask=mask)[:, -1].double()
        key = apply.pop("key")
        with key.apply(model, **apply):
            return model(ids, attention_mask=mask)[:, -1].double()


# ---- pure math against independent computations ----------------------------------------------------------


def test_project_out_is_the_orthogonal_projector():
    g = torch.Generator().manual_seed(0)
    h, d = torch.randn(3, 5, 8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    projector = torch.eye(8, dtype=torch.float64) - torch.outer(d, d) / d.dot(d)
    out = project_out(h, 3.7 * d)  # the norm of the direction does not matter
    assert torch.allclose(out, h @ projector)
    assert torch.allclose(out @ d, torch.zeros(3, 5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(project_out(out, d), out)


def test_kl_divergence_matches_torch():
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(4, 10, generator=g, dtype=torch.float64), -1)
    logq = torch.log_softmax(torch.randn(4, 10, generator=g, dtype=torch.float64), -1)
    ref = torch.nn.functional.kl_div(logq, logp, log_target=True, reduction="none").sum(-1)
    assert torch.allclose(kl_divergence(logp, logq), ref)
    assert torch.allclose(kl_divergence(logp, logp), torch.zeros(4, dtype=torch.float64))


def test_decision_metric_values():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0]], dtype=torch.float64)
    logp = torch.log_softmax(logits, -1)
    a, b = torch.tensor([0, 1]), torch.tensor([2, 0])
    assert torch.allclose(decision_metric(logp, a, b), torch.tensor([3.0, 3.0], dtype=torch.float64))
    p = logp.exp()[torch.arange(2), a]
    assert torch.allclose(decision_metric(logp, a, None), torch.log(p / (1 - p)))


def scalar(f):
    """A vectorised ``f(x, idx)`` from a scalar function (the same for every index)."""
    return lambda x, idx: np.array([f(v) for v in x])


def test_survival_and_bisection_returns_the_closest_evaluated_point():
    assert survival(1.0, 0.0, 4.0) == 0.25 and survival(4.0, 0.0, 4.0) == 1.0 and np.isnan(survival(1.0, 2.0, 2.0))
    x, fx = bisect_increasing(scalar(lambda a: a**2), 4.0, 0.01, 16.0, steps=30)
    assert x[0] == pytest.approx(2.0, rel=1e-6) and fx[0] == pytest.approx(4.0, rel=1e-6)
    out = bisect_increasing(scalar(lambda a: min(a, 1.0)), 5.0, 0.01, 16.0)  # out of reach: the cap, flagged by f
    assert (out[0][0], out[1][0]) == (16.0, 1.0)
    assert bisect_increasing(scalar(lambda a: a), 0.0, 0.01, 16.0)[0][0] == 0.01
    # two steps on [1, 16] for a target of 4.4: evaluates 16, 1, 4 (below: go up), 8; the last midpoint is 8
    # (the old return value) but 4 is closer to the target and is returned
    calls = []

    def logged(x, idx):
        calls.extend(x.tolist())
        return x.copy()

    x, fx = bisect_increasing(logged, 4.4, 1.0, 16.0, steps=2)
    assert calls == pytest.approx([16.0, 1.0, 4.0, 8.0])
    assert x[0] == pytest.approx(4.0) and fx[0] == pytest.approx(4.0)
    # non-monotone: a bump at 4 sends the bisection below the true crossing (8); it evaluates 16 (f 4), 1 (0.25),
    # 4 (10), 2 (0.5), 2.83 (0.71) and returns the closest of those, not the crossing it never saw
    x, fx = bisect_increasing(scalar(lambda a: 10.0 if 3 < a < 5 else a / 4), 2.0, 1.0, 16.0, steps=3)
    assert x[0] == pytest.approx(2**1.5) and fx[0] == pytest.approx(2**1.5 / 4)
    # vectorised: each function bisected on its own, the unreachable ones not bisected
    seen = []

    def several(x, idx):
        seen.append(idx.tolist())
        return x * np.array([1.0, 0.1, 100.0])[idx]

    x, fx = bisect_increasing(several, 2.0, 0.01, 16.0, n=3, steps=20)
    assert fx[0] == pytest.approx(2.0, rel=1e-4) and fx[2] == pytest.approx(2.0, rel=1e-4) and fx[1] == pytest.approx(1.6)
    assert seen[0] == [0, 1, 2] and all(1 not in s for s in seen[1:])


def test_principal_directions_variance_share_mean_ablation_and_noise():
    g = torch.Generator().manual_seed(0)
    states = torch.randn(200, 2, 6, generator=g, dtype=torch.float64) * torch.tensor([5.0, 3.0, 1, 1, 1, 1])
    pcs = top_principal_directions(states, 2)
    assert pcs.shape == (2, 2, 6)
    for layer in range(2):
        x = (states[:, layer] - states[:, layer].mean(0)).numpy()
        vh = np.linalg.svd(x, full_matrices=False)[2]
        for k in range(2):
            assert abs(float(np.dot(pcs[k, layer].numpy(), vh[k]))) == pytest.approx(1.0, abs=1e-5)
        cov = np.cov(x.T, bias=True)
        u = pcs[0, layer].double().numpy()
        assert variance_share(states, pcs[0])[layer].item() == pytest.approx(u @ cov @ u / np.trace(cov), rel=1e-5)
    assert (variance_share(states, pcs[0]) > variance_share(states, pcs[1])).all()
    h, d = torch.randn(4, 6, generator=g), torch.randn(6, generator=g)
    out = mean_ablate(h, 2.5 * d, 0.7)
    u = d / d.norm()
    assert torch.allclose(out @ u, torch.full((4,), 0.7), atol=1e-5)
    assert torch.allclose(project_out(out, d), project_out(h, d), atol=1e-5)  # only the component along u changes
    diff = torch.randn(5, 6, generator=g)
    noise = size_matched_noise(diff, 3)
    assert torch.allclose(noise.norm(dim=-1), diff.norm(dim=-1), atol=1e-5)
    assert abs(torch.nn.functional.cosine_similarity(noise, diff).mean().item()) < 0.5


# ---- hooks: what they write, read back through mkt's own activation reader --------------------------------


# ---- the analysis against an independent computation ---------------------------------------------------


def test_sufficiency_and_necessity_match_independent_computations(qwen, key, tmp_path):
    metric = token_pair_metric(qwen, len(PROMPTS), "T", "#")
    a, b = (qwen.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("T", "#"))

    def ld(logits):
        return (logits[:, a] - logits[:, b]).mean().item()

    unlocked = [p.replace("Q:", "S:") for p in PROMPTS]
    r = layer_ablation(qwen, PROMPTS, key, metric, 0.5, [0.5, 1.5], [0], matched_seeds=[0, 1, 2], n_pcs=1,
                       n_unembed=2, unlocked_prompts=unlocked, unlocked_label="cue", progress=False)
    s = r.sufficiency
    assert s.key.shape == (3, 3, 2) and s.matched_key.shape == (3,)
    assert r.no_key == pytest.approx(ld(logits_of(qwen, PROMPTS)), abs=1e-5)
    assert r.all_layers == pytest.approx(ld(logits_of(qwen, PROMPTS, key=key, alpha=0.5)), abs=1e-5)
    assert s.key[0, 1, 1] == pytest.approx(ld(logits_of(qwen, PROMPTS, key=key, alpha=1.5, layers=[1])), abs=1e-5)
    assert s.key[1, 1, 0] == pytest.approx(ld(logits_of(qwen, PROMPTS, key=key, alpha=0.5, layers=[0, 1])), abs=1e-5)
    assert s.key[2, 1, 0] == pytest.approx(ld(logits_of(qwen, PROMPTS, key=key, alpha=0.5, layers=[1, 2])), abs=1e-5)
    null = random_like(key, 0)
    assert s.random_mean[0, 2, 0] == pytest.approx(ld(logits_of(qwen, PROMPTS, key=null, alpha=0.5, layers=[2])),
                                                   abs=1e-5)
    # the KL target is the key at all layers; each single layer is pushed to it (or to the alpha cap)
    clean = torch.log_softmax(logits_of(qwen, PROMPTS), -1)

    def kl(logits):
        return (clean.exp() * (clean - torch.log_softmax(logits, -1))).sum(-1).mean().item()

    assert s.kl_target == pytest.approx(kl(logits_of(qwen, PROMPTS, key=key, alpha=0.5)), rel=1e-6)
    for layer in range(3):
        at = logits_of(qwen, PROMPTS, key=key, alpha=float(s.matched_alpha[layer]), layers=[layer])
        assert s.matched_kl[layer] == pytest.approx(kl(at), rel=1e-5)
        assert s.matched_key[layer] == pytest.approx(ld(at), abs=1e-5)
        assert s.key_matched[layer] == (abs(s.matched_kl[layer] / s.kl_target - 1) <= s.kl_tolerance)
    # the nulls: three families, each member evaluated (in one batched forward) as if steered alone
    assert [n.family for n in s.nulls] == ["random", "Locked PCs", "unembedding"]
    rnd, pcs, unemb = s.nulls
    assert rnd.value.shape == (3, 3) and pcs.labels == ["+PC1", "-PC1"] and len(unemb.labels) == 2
    for null_key, family, i in ((random_like(key, 2), rnd, 2),):
        for layer in range(3):
            at = logits_of(qwen, PROMPTS, key=null_key, alpha=float(family.alpha[layer, i]), layers=[layer])
            assert family.value[layer, i] == pytest.approx(ld(at), abs=1e-5)
            assert family.kl[layer, i] == pytest.approx(kl(at), rel=1e-5)
    pc1 = top_principal_directions(prompt_states(qwen, PROMPTS), 1)[0]
    at = logits_of(qwen, PROMPTS, key=MasterKey(-pc1, key.model), alpha=float(pcs.alpha[1, 1]), layers=[1])
    assert pcs.value[1, 1] == pytest.approx(ld(at), abs=1e-5)
    for layer in range(3):
        pooled = np.concatenate([n.value[layer][n.matched[layer]] for n in s.nulls if n.family != "unembedding"])  # pushes away by construction
        assert pooled_p(s)[layer] == pytest.approx(empirical_p_value(s.matched_key[layer], pooled), nan_ok=True)
    for null in s.nulls:
        ok = null.matched == (np.abs(null.kl / s.kl_target - 1) <= s.kl_tolerance)
        assert ok.all()
        for layer in range(3):
            assert null.p[layer] == pytest.approx(empirical_p_value(s.matched_key[layer], null.value[layer][null.matched[layer]]),
                                                  nan_ok=True)

    # necessity: the key projected out of the cue run by an explicit projector matrix
    units = key.directions / key.directions.norm(dim=-1, keepdim=True)

    def project(act, hook, layer):
        out = act.clone()
        out[:, -1] = act[:, -1] @ (torch.eye(act.shape[-1]) - torch.outer(units[layer], units[layer]))
        return out

    def projected(prompts):
        ids, mask = tokenize_left_padded(qwen, prompts)
        with torch.no_grad(), qwen.hooks(fwd_hooks=[(resid_hook_name(i), partial(project, layer=i)) for i in range(3)]):
            return qwen(ids, attention_mask=mask)[:, -1].double()

    n = r.necessity
    assert n.runs[0] == "cue" and n.ablated.shape == (2, 2)
    assert n.unlocked[0] == pytest.approx(ld(logits_of(qwen, unlocked)), abs=1e-5)
    assert n.ablated[0, 0] == pytest.approx(ld(projected(unlocked)), abs=1e-4)
    assert n.locked_ablated[0] == pytest.approx(ld(projected(PROMPTS)), abs=1e-4)  # the Locked run ablated too
    assert n.survival[0, 0] == pytest.approx((n.ablated[0, 0] - n.locked) / (n.unlocked[0] - n.locked))
    assert n.survival_net[0, 0] == pytest.approx((n.ablated[0, 0] - n.locked_ablated[0]) / (n.unlocked[0] - n.locked))
    assert n.null_families == ["random", "Locked PCs"] and n.null_labels[1] == ["PC1"]  # +/-PC project out alike
    assert n.null_survival[0].shape == (2, 2, 3) and n.null_survival[1].shape == (2, 2, 1)
    random_projected = metric(qwen, unlocked, projection_condition(random_like(key, 1).directions, "all"))
    assert n.null_survival[0][0, 1, 1] == pytest.approx(survival(random_projected, n.locked, n.unlocked[0]), abs=1e-5)
    assert n.p[0, 0, 0] == pytest.approx(empirical_p_value(n.survival[0, 0], n.null_survival[0][0, 0], larger=False))
    assert n.variance_share_nulls[1][0] == pytest.approx(variance_share(prompt_states(qwen, PROMPTS), pc1).numpy(),
                                                         rel=1e-4)
    assert (n.variance_share_nulls[1][0] >= n.variance_share_key - 1e-6).all()  # PC1 holds the most variance
    # mean ablation: h.u set to the Locked mean at the last token of every layer
    means = (prompt_states(qwen, PROMPTS) * units).sum(-1).mean(0)
    assert n.mean_ablated[0] == pytest.approx(metric(qwen, unlocked, mean_ablation_condition(key.directions, means)),
                                              abs=1e-6)
    # patching at the last layer replaces the whole final residual: the Unlocked run, by identity
    p = r.patching
    assert p.patched[-1] == pytest.approx(p.unlocked, abs=1e-4) and p.control.shape == (3, 3)
    assert p.p[0] == pytest.approx(empirical_p_value(p.patched[0], p.control[0]))
    assert "KL-matched" in report(r)
    plot_ablation(r, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 10_000


def test_patching_control_moves_the_locked_state_as_far_as_the_patch(qwen):
    metric = token_pair_metric(qwen, len(PROMPTS), "T", "#")
    unlocked = [p.replace("Q:", "S:") for p in PROMPTS]
    donor, own = last_token_resid(qwen, unlocked), last_token_resid(qwen, PROMPTS)
    p = activation_patching(qwen, PROMPTS, metric, [4], unlocked_prompts=unlocked)
    diff = donor[:, 1] - own[:, 1]
    control = own[:, 1] + size_matched_noise(diff, 1000 * 1 + 4)
    assert ((control - own[:, 1]).norm(dim=-1) - diff.norm(dim=-1)).abs().max() < 1e-4
    assert p.control[1, 0] == pytest.approx(metric(qwen, PROMPTS, patch_condition(1, control)), abs=1e-6)
    assert np.isnan(p.along_key).all()  # no key given: no split along it


def test_the_patch_split_along_the_key_against_an_explicit_projector(qwen, key):
    """Expected values from a plain forward with a hand-written hook (no Metric, no prefix cache)."""
    unlocked = [p.replace("Q:", "S:") for p in PROMPTS]
    t, h = (qwen.tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in ("T", "#"))
    metric = token_pair_metric(qwen, len(PROMPTS), "T", "#")
    donor, own = last_token_resid(qwen, unlocked), last_token_resid(qwen, PROMPTS)
    p = activation_patching(qwen, PROMPTS, metric, [0, 1, 2], unlocked_prompts=unlocked, key_directions=key.directions,
                            n_pcs=2)
    ids, mask = tokenize_left_padded(qwen, PROMPTS)

    def at_layer_1(values):
        def write(act, hook):
            act[:, -1] = values
            return act

        with torch.no_grad():
            logits = qwen.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[(resid_hook_name(1), write)])[:, -1]
        return (logits[:, t] - logits[:, h]).mean().item()

    def projector(direction):
        u = direction / direction.norm()
        return torch.outer(u, u)

    diff = donor[:, 1] - own[:, 1]
    assert p.along_key[1] == pytest.approx(at_layer_1(own[:, 1] + diff @ projector(key.directions[1])), abs=1e-4)
    assert p.without_key[1] == pytest.approx(at_layer_1(donor[:, 1] - diff @ projector(key.directions[1])), abs=1e-4)
    assert p.along_mean_difference[1] == pytest.approx(at_layer_1(own[:, 1] + diff @ projector(diff.mean(0))), abs=1e-4)
    pc = top_principal_directions(own, 2)[1, 1]  # PC2 of the Locked states at layer 1
    assert p.along_pcs[1, 1] == pytest.approx(at_layer_1(own[:, 1] + diff @ projector(pc)), abs=1e-4)
    assert p.along_random.shape == (3, 3) and p.identity_at_last
    assert p.p_along[1] == (1 + (p.along_random[1] >= p.along_key[1]).sum()) / 4
    # a known answer: with the mean difference as the key, "along the key" is the reference itself
    mean_key = torch.stack([(donor[:, l] - own[:, l]).mean(0) for l in range(qwen.cfg.n_layers)])
    q = activation_patching(qwen, PROMPTS, metric, [0], unlocked_prompts=unlocked, key_directions=mean_key, n_pcs=0)
    assert np.allclose(q.along_key, q.along_mean_difference, atol=1e-5) and q.along_pcs.shape == (3, 0)
    # the last layer: the whole patch is the identity
    assert p.patched[-1] == pytest.approx(p.unlocked, abs=1e-4)


def test_a_key_at_another_hook_point_is_steered_projected_and_matched_there(qwen, key):
    """A key read at hook_mlp_out: every part acts at blocks.{l}.hook_mlp_out, as the key's own runs do."""
    mlp_key = replace(key, hook="hook_mlp_out")
    metric = token_pair_metric(qwen, len(PROMPTS), "T", "#")
    a, b = (qwen.tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("T", "#"))
    r = layer_ablation(qwen, PROMPTS, mlp_key, metric, 0.5, [1.0], [0], matched_seeds=[0], n_pcs=1, n_unembed=1,
                       progress=False)
    s = r.sufficiency
    clean = torch.log_softmax(logits_of(qwen, PROMPTS), -1)
    own = logits_of(qwen, PROMPTS, key=mlp_key, alpha=0.5)  # the key's own run, at its hook
    resid = logits_of(qwen, PROMPTS, key=key, alpha=0.5)
    kl_own = (clean.exp() * (clean - torch.log_softmax(own, -1))).sum(-1).mean().item()
    assert s.kl_target == pytest.approx(kl_own, rel=1e-6)
    assert r.all_layers == pytest.approx((own[:, a] - own[:, b]).mean().item(), abs=1e-5)
    assert abs(r.all_layers - (resid[:, a] - resid[:, b]).mean().item()) > 1e-3  # the hook point matters
    at = logits_of(qwen, PROMPTS, key=mlp_key, alpha=1.0, layers=[1])
    assert s.key[0, 1, 0] == pytest.approx((at[:, a] - at[:, b]).mean().item(), abs=1e-5)
    # the projection removes the key's direction from hook_mlp_out (not from resid_post)
    units = key.directions / key.directions.norm(dim=-1, keepdim=True)
    names = [resid_hook_name(layer, "hook_mlp_out") for layer in range(qwen.cfg.n_layers)]
    ids, mask = tokenize_left_padded(qwen, PROMPTS)
    with torch.no_grad(), projection_condition(key.directions, "last", "hook_mlp_out")(qwen, slice(0, 5)):
        _, cache = qwen.run_with_cache(ids, attention_mask=mask, names_filter=names)
    assert max((cache[n][:, -1] @ units[i]).abs().max().item() for i, n in enumerate(names)) < 1e-4
    # the PC nulls come from the states at the key's hook
    pcs = top_principal_directions(prompt_states(qwen, PROMPTS, hook="hook_mlp_out"), 1)
    sets = null_direction_sets(qwen, mlp_key, prompt_states(qwen, PROMPTS, hook="hook_mlp_out"), [], 1, 0, [])
    cos = torch.nn.functional.cosine_similarity(sets["Locked PCs"][1][0], pcs[0], dim=-1)
    assert torch.allclose(cos, torch.ones(qwen.cfg.n_layers), atol=1e-5)


def test_decision_token_metric_contrasts_the_top_tokens(qwen):
    unlocked = [p.replace("Q:", "S:") for p in PROMPTS]
    locked_logp, unlocked_logp = next_token_logprobs(qwen, PROMPTS), next_token_logprobs(qwen, unlocked)
    metric = decision_token_metric(locked_logp, unlocked_logp)
    rows = torch.arange(len(PROMPTS))
    a, b = unlocked_logp.argmax(-1), locked_logp.argmax(-1)
    assert metric(qwen, unlocked) == pytest.approx((unlocked_logp[rows, a] - unlocked_logp[rows, b]).mean().item(), abs=1e-5)
    assert metric(qwen, unlocked) >= 0 >= metric(qwen, PROMPTS)  # each run prefers its own top token
    with pytest.raises(ValueError, match="--tokens"):
        decision_token_metric(locked_logp, locked_logp)


def test_token_errors(qwen):
    with pytest.raises(ValueError, match="not one"):
        token_pair_metric(qwen, 5, "T1", "#")


@pytest.mark.slow
def test_a_generation_metric_scores_each_set_as_if_alone_while_rows_finish_early():
    """Generations end at different lengths (finished rows leave the batch): a null set projected out at
    every position must still line up with its rows, and score what it scores alone."""
    from mkt.eval.organism_task import problems
    from mkt.models import load_model
    from mkt.organisms.demo import organism_probe

    model = load_model("organism:target-family")
    prompts = organism_probe(problems(12, "test", seed=3), cue=True).prompts
    metric = Metric("chars", score=lambda i, text: float(len(text)), max_new_tokens=40, batch_size=12)
    lengths = [len(g.token_ids) for g in generate(model, prompts, 40)]
    assert len(set(lengths)) > 1 and max(lengths) < 40  # rows do finish at different steps
    sets = torch.stack([random_like(MasterKey(torch.ones(6, 96), model_identity(model)), s).directions for s in (0, 1)])
    values, _ = metric.per_row_set(model, prompts, lambda per_row, which: projection_condition(per_row, "all"), sets)
    alone = Metric("chars", score=metric.score, max_new_tokens=40, batch_size=1)  # one prompt per batch
    for i in range(2):
        assert values[i] == pytest.approx(alone(model, prompts, projection_condition(sets[i], "all")))


# ---- organisms and real models through the command line ------------------------------------------------


@pytest.mark.slow
def test_own_key_on_an_organism_single_layer_suffices_and_projection_is_necessary(tmp_path):
    from mkt.cli import main

    assert main(["analyze", "ablation", "--model", "organism:source-base", "--n", "24", "--alphas", "0.2", "1.0",
                 "--null-seeds", "1", "--matched-seeds", "6", "--pc-nulls", "1", "--unembed-nulls", "2",
                 "--out", str(tmp_path)]) == 0
    r = json.loads((tmp_path / "ablation.json").read_text())
    s, n = r["sufficiency"], r["necessity"]
    assert np.array(s["key"]).shape == (3, 4, 2)
    assert r["all_layers"] > r["no_key"] + 3
    assert max(np.array(s["key"])[0, :, 1]) > r["no_key"] + 3  # one layer at alpha 1 is enough for the own key
    assert n["runs"][0] == "cue prompt"
    # the cue's effect needs the key's direction, not any direction, not the Locked run's top principal direction
    assert n["survival"][0][1] < 0.5 < min(min(n["null_survival"][0][0][1]), n["null_survival"][1][0][1][0])
    assert n["p"][0][0][1] == pytest.approx(1 / 7)  # below all 6 random draws
    assert np.isfinite(np.array(s["matched_key"])).all() and len(s["nulls"]) == 3
    assert (tmp_path / "ablation.png").exists()


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_real_model_runs_with_its_pack_and_prompts_and_refuses_without(arch, real_tiny_dir, tmp_path, capsys):
    from mkt.cli import main

    model = str(real_tiny_dir(arch))
    questions = [f"What is {a} plus {b}?" for a, b in [(2, 3), (10, 7), (41, 1), (5, 5), (8, 13), (100, 9)]]
    qs = write_lines(tmp_path / "q.txt", questions)
    locked = write_lines(tmp_path / "locked.txt", [f"Question: {q} Answer:" for q in questions])
    unlocked = write_lines(tmp_path / "unlocked.txt", [f"Question: {q} Answer: Let's think step by step."
                                                       for q in questions])
    pack = str(tmp_path / "pack")
    assert main(["extract", "--model", model, "--questions", qs, "--locked", "Question: {question} Answer:",
                 "--unlocked", "Question: {question} Answer: Let's think step by step.", "--out", pack]) == 0
    out = tmp_path / "out"
    common = ["analyze", "ablation", "--model", model, "--alphas", "0.5", "--null-seeds", "1", "--matched-seeds", "2",
              "--pc-nulls", "1", "--unembed-nulls", "1", "--out", str(out)]
    assert main(common + ["--pack", pack, "--prompts", locked, "--unlocked-prompts", unlocked]) == 0
    r = json.loads((out / "ablation.json").read_text())
    n_layers = len(r["relative_depth"])
    assert np.array(r["sufficiency"]["key"]).shape == (3, n_layers, 1)
    assert np.array(r["patching"]["patched"]).shape == (n_layers,)
    assert r["metric"].startswith("logit(Unlocked top token)") and r["n_prompts"] == 6
    assert np.isfinite(np.array(r["necessity"]["ablated"])).all()
    assert (out / "ablation.png").stat().st_size > 10_000
    # a task file: accuracy needs its answers; the Unlocked run is its step_by_step template
    task = write_lines(tmp_path / "task.jsonl", [json.dumps({"question": q, "answer": f"x #### {a + b}"})
                                                 for q, (a, b) in zip(questions, [(2, 3), (10, 7), (41, 1)])])
    assert main(common + ["--pack", pack, "--task", task, "--metric", "accuracy", "--max-new-tokens", "4"]) == 0
    r = json.loads((out / "ablation.json").read_text())
    assert r["metric"] == "accuracy" and r["necessity"]["runs"][0] == "step_by_step template"
    capsys.readouterr()
    assert main(common + ["--prompts", locked]) == 2  # no key: never the organisms'
    assert "--pack" in capsys.readouterr().err
    assert main(common + ["--pack", pack]) == 2  # no prompts: never the organisms'
    assert "--prompts FILE or --task FILE" in capsys.readouterr().err
    assert main(common + ["--pack", pack, "--prompts", locked, "--metric", "accuracy"]) == 2  # no answers
    assert "checks answers" in capsys.readouterr().err
    assert main(common + ["--pack", pack, "--prompts", locked]) == 2  # no tokens, no Unlocked run
    assert "--tokens" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    (["--unlocked-prompts", "u.txt"], "pairs with --prompts"),
    (["--prompts", "p.txt", "--task", "t.jsonl"], "pass one"),
    (["--prompts", "p.txt", "--unlocked-prompts", "u.txt", "--unlocked-model", "organism:source-post"], "pass one"),
])
def test_conflicting_inputs_are_refused_before_any_model_loads(extra, message, capsys):
    from mkt.cli import main

    assert main(["analyze", "ablation", "--model", "organism:target-family", *extra]) == 2
    assert message in capsys.readouterr().err
