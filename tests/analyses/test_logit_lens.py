import json

import numpy as np
import pytest
import torch

from analyses.logit_lens import (
    direct_path,
    entropy,
    entropy_excluding,
    injection_deltas,
    lens_logits,
    lens_summary,
    logit_lens_sharpening,
    plot_logit_lens,
    report,
    residual_changes,
    steered_resid,
)
from mkt.activations import last_token_resid, prompt_states
from mkt.eval.stats import empirical_p_value
from mkt.extract import extract_prompt_key
from mkt.intervention import norm_preserving
from mkt.key import MasterKey
from mkt.models import load_model, model_identity, tokenize_left_padded
from tests.conftest import PROMPTS


def test_last_layer_lens_equals_the_real_logits(tiny_models):
    for model in tiny_models.values():
        ids, mask = tokenize_left_padded(model, PROMPTS)
        with torch.no_grad():
            real = torch.log_softmax(model(ids, attention_mask=mask)[:, -1].double(), -1)
        tokens = torch.tensor([[3, 5]]).expand(len(PROMPTS), -1)
        ent, prob, _ = lens_summary(model, last_token_resid(model, PROMPTS), tokens, batch_size=2)
        assert ent.shape == prob.shape == (len(PROMPTS), model.cfg.n_layers)
        assert torch.allclose(ent[:, -1], entropy(real), atol=1e-5)
        assert torch.allclose(prob[:, -1], real[:, [3, 5]].exp().sum(-1), atol=1e-6)


def test_entropy_values():
    uniform = torch.zeros(4)
    assert entropy(uniform).item() == pytest.approx(np.log(4))
    assert entropy(torch.tensor([100.0, 0, 0])).item() == pytest.approx(0, abs=1e-6)
    # without the opener: P = (0.9, 0.05, 0.05) leaves a uniform pair, log 2 nats, however large P(opener) is
    logp = torch.log(torch.tensor([[0.9, 0.05, 0.05], [0.98, 0.01, 0.01]], dtype=torch.float64))
    assert torch.allclose(entropy_excluding(logp, torch.tensor([[0], [0]])), torch.full((2,), np.log(2), dtype=torch.float64))
    logp = torch.log(torch.tensor([[0.5, 0.1, 0.3, 0.1]], dtype=torch.float64))
    assert entropy_excluding(logp, torch.tensor([[0, 2]])).item() == pytest.approx(np.log(2))


def test_direct_path_is_a_running_sum():
    g = torch.Generator().manual_seed(0)
    clean, inj = torch.randn(2, 4, 3, generator=g), torch.randn(2, 4, 3, generator=g)
    out = direct_path(clean, inj)
    for layer in range(4):
        assert torch.allclose(out[:, layer], clean[:, layer] + sum(inj[:, j] for j in range(layer + 1)))


def test_lens_summary_matches_the_lens_read_in_full(qwen):
    resid = last_token_resid(qwen, PROMPTS)
    lens = torch.log_softmax(lens_logits(qwen, resid).double(), -1)  # [n, layer, vocab] at once
    ids = torch.tensor([[3, 5], [1, 2], [0, 7], [4, 4], [9, 8]])
    ent, prob, rest = lens_summary(qwen, resid, ids, batch_size=2)
    assert torch.allclose(ent, entropy(lens), atol=1e-6)
    for i in range(len(PROMPTS)):
        keep = [t for t in range(lens.shape[-1]) if t not in ids[i].tolist()]
        assert torch.allclose(rest[i], entropy(lens[i][:, keep]), atol=1e-6)
    ref = torch.stack([lens[i][:, ids[i]].exp().sum(-1) for i in range(len(PROMPTS))])
    assert torch.allclose(prob, ref, atol=1e-8)


@pytest.mark.parametrize("hook", ["hook_resid_post", "hook_mlp_out"])
def test_direct_path_adds_the_formulas_change_to_the_no_key_states(qwen, hook):
    g = torch.Generator().manual_seed(1)
    key = MasterKey(torch.randn(qwen.cfg.n_layers, qwen.cfg.d_model, generator=g), model_identity(qwen), hook=hook)
    clean, at_hook = last_token_resid(qwen, PROMPTS), prompt_states(qwen, PROMPTS, hook=hook)
    deltas = injection_deltas(at_hook, key.directions, 0.7)
    units = key.directions / key.directions.norm(dim=-1, keepdim=True)
    for layer in range(qwen.cfg.n_layers):  # an independent formula applied to the no-key state at the key's hook
        assert torch.allclose(at_hook[:, layer] + deltas[:, layer], norm_preserving(at_hook[:, layer], units[layer], 0.7),
                              atol=1e-5)
    assert deltas.norm(dim=-1).min() > 1e-3  # the injection is there, at the key's hook
    # layer 0 sees no earlier injection: there the direct path is the steered run; later the layers react
    steered = steered_resid(qwen, PROMPTS, key.steering(alpha=0.7))
    direct = direct_path(clean, deltas)
    assert torch.allclose(direct[:, 0], steered[:, 0], atol=1e-5)
    assert not torch.allclose(direct[:, -1], steered[:, -1], atol=1e-3)
    # the steering acts at the key's hook: with hook_mlp_out the residual differs from a resid_post key's
    other = steered_resid(qwen, PROMPTS, MasterKey(key.directions, key.model).steering(alpha=0.7))
    assert torch.allclose(steered, other, atol=1e-5) == (hook == "hook_resid_post")


def test_analysis_steers_at_the_keys_hook_and_ranks_the_key(qwen, tmp_path):
    g = torch.Generator().manual_seed(2)
    key = MasterKey(torch.randn(qwen.cfg.n_layers, qwen.cfg.d_model, generator=g), model_identity(qwen),
                    hook="hook_mlp_out")
    ids = torch.tensor([[5]]).expand(len(PROMPTS), -1)
    r = logit_lens_sharpening(qwen, PROMPTS, key, 0.8, ids, ["t5"], [0, 1, 2, 3], 1.0, site_seeds=[0])
    assert r.hook == "hook_mlp_out" and r.token_prob_random.shape == (4, 3) and r.site_random.shape == (1, 3, 3)
    steered = steered_resid(qwen, PROMPTS, key.steering(alpha=0.8))
    assert r.token_prob_key == pytest.approx(lens_summary(qwen, steered, ids)[1].mean(0).numpy(), abs=1e-6)
    direct = direct_path(last_token_resid(qwen, PROMPTS),
                         injection_deltas(prompt_states(qwen, PROMPTS, hook="hook_mlp_out"), key.directions, 0.8))
    assert r.token_prob_direct == pytest.approx(lens_summary(qwen, direct, ids)[1].mean(0).numpy(), abs=1e-6)
    assert r.p_final == pytest.approx(empirical_p_value(r.token_prob_key[-1], r.token_prob_random[:, -1]))
    assert not np.allclose(r.token_prob_key, r.token_prob)  # the injection reached the stream
    assert "p =" in report(r)
    plot_logit_lens(r, tmp_path / "ll.png")
    assert (tmp_path / "ll.png").stat().st_size > 10_000


@pytest.mark.slow
def test_organism_key_sharpens_beyond_random_directions(tmp_path):
    from mkt.eval.organism_task import LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, problems

    model = load_model("organism:source-base", device="cpu")
    key = extract_prompt_key(model, [p.question for p in problems(64, "train", 1)], LOCKED_TEMPLATE, UNLOCKED_TEMPLATE)
    prompts = [p.prompt(False) for p in problems(40, "test")]
    t = model.tokenizer("T", add_special_tokens=False)["input_ids"][0]
    r = logit_lens_sharpening(model, prompts, key, 0.5, torch.full((40, 1), t), ["T"], list(range(9)), 1.0,
                              model_name="source-base", site_seeds=[0])
    assert r.entropy.shape == (4,) and r.relative_depth[-1] == 1.0 and r.site_key.shape == (4, 4)
    assert r.token_prob_key[-1] > r.token_prob[-1] + 0.3  # the final read-out now opens step by step
    assert r.token_prob_key[-1] > r.token_prob_random[:, -1].max() + 0.3  # ... which a random push does not do
    assert r.p_final == pytest.approx(0.1)  # the best rank 9 draws allow
    assert np.isnan(r.site_key[np.tril_indices(4)]).all() and not np.isnan(r.site_key[np.triu_indices(4, 1)]).any()
    plot_logit_lens(r, tmp_path / "ll.png")
    assert (tmp_path / "ll.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["qwen3", "llama"])
def test_real_model_runs_with_its_pack_and_prompts_and_refuses_without(arch, real_tiny_dir, tmp_path, capsys):
    from mkt.cli import main

    model = str(real_tiny_dir(arch))
    questions = [f"What is {a} plus {b}?" for a, b in [(2, 3), (10, 7), (41, 1), (5, 5), (8, 13)]]
    (tmp_path / "q.txt").write_text("\n".join(questions))
    (tmp_path / "locked.txt").write_text("\n".join(f"Question: {q} Answer:" for q in questions))
    (tmp_path / "unlocked.txt").write_text("\n".join(f"Question: {q} Answer: step by step," for q in questions))
    pack = str(tmp_path / "pack")
    assert main(["extract", "--model", model, "--questions", str(tmp_path / "q.txt"), "--locked",
                 "Question: {question} Answer:", "--unlocked", "Question: {question} Answer: step by step,",
                 "--out", pack]) == 0
    out = tmp_path / "out"
    common = ["analyze", "logit_lens", "--model", model, "--null-seeds", "1", "--out", str(out)]
    assert main(common + ["--pack", pack, "--prompts", str(tmp_path / "locked.txt"), "--unlocked-prompts",
                          str(tmp_path / "unlocked.txt")]) == 0
    r = json.loads((out / "logit_lens.json").read_text())
    n_layers = len(r["relative_depth"])
    assert np.array(r["site_key"]).shape == (n_layers, n_layers) and len(r["token_prob_direct"]) == n_layers
    assert r["tokens"] == ["the Unlocked run's top token"] and r["n_prompts"] == 5
    assert (out / "logit_lens.png").stat().st_size > 10_000
    assert main(common + ["--pack", pack, "--prompts", str(tmp_path / "locked.txt"), "--tokens", "The"]) == 0
    capsys.readouterr()
    assert main(common + ["--prompts", str(tmp_path / "locked.txt")]) == 2
    assert "--pack" in capsys.readouterr().err
    assert main(common + ["--pack", pack]) == 2
    assert "--prompts FILE or --task FILE" in capsys.readouterr().err
    assert main(common + ["--pack", pack, "--prompts", str(tmp_path / "locked.txt")]) == 2
    assert "--tokens" in capsys.readouterr().err


@pytest.mark.parametrize("arch", ["llama", "gemma3", "olmo2"])
def test_a_per_head_keys_direct_path_is_each_layers_own_change(arch, tiny_models, real_tiny_dir):
    """At attn.hook_z the formula acts per head; the residual change of one layer's injection is measured
    at hook_resid_mid. On Llama (attention output joins the residual linearly) it equals the per-head
    change through W_O, computed independently; Gemma 3 and OLMo-2 normalise the attention output first,
    where W_O alone would be wrong."""
    model = tiny_models["llama"] if arch == "llama" else load_model(real_tiny_dir(arch))
    prompts = PROMPTS if arch == "llama" else ["Question: 3 + 4?\nAnswer:", "Hello there, how are you"]
    n_heads, n_layers, d_head = model.cfg.n_heads, model.cfg.n_layers, model.cfg.d_head
    g = torch.Generator().manual_seed(2)
    key = MasterKey(torch.randn(n_layers, n_heads * d_head, generator=g), model_identity(model), "attn.hook_z")
    z = prompt_states(model, prompts, hook="attn.hook_z")
    heads, units = z.unflatten(-1, (n_heads, d_head)), key.directions.unflatten(-1, (n_heads, d_head))
    deltas = norm_preserving(heads, units / units.norm(dim=-1, keepdim=True), 0.6) - heads  # each head alone
    changes = residual_changes(model, prompts, z, key.directions, 0.6, "norm-preserving", key.hook)
    w_o = model.W_O.detach().float()  # [layer, head, d_head, d_model]
    through_w_o = torch.einsum("nlhe,lhed->nld", deltas, w_o)
    err = ((changes - through_w_o).norm(dim=-1) / through_w_o.norm(dim=-1)).max().item()
    assert (err < 1e-3) == (arch == "llama"), err
    assert changes.abs().max() > 1e-3
