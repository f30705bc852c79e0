"""The ``mkt`` lm-eval model: its log-likelihoods are a plain HF model's with llama.cpp-style added
vectors, and its generations are mkt's, request by request."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None,
                                reason="lm_eval is not importable: pip install 'mkt[lm-eval]'")


def _instance(args):
    from lm_eval.api.instance import Instance

    return Instance("generate_until" if isinstance(args[1], dict) else "loglikelihood", {}, args, 0)


@pytest.fixture(scope="module")
def packs(tiny_models, tmp_path_factory):
    from mkt.key import MasterKey
    from mkt.models import model_identity
    from mkt.pack import CapabilityPack

    ident = model_identity(tiny_models["llama"])
    directions = torch.randn(ident.n_layers, ident.d_model, generator=torch.Generator().manual_seed(3)) * 2
    root = tmp_path_factory.mktemp("packs")
    return (CapabilityPack(MasterKey(directions, ident), 0.6, "constant", "all", [1, 3]).save(root / "constant"),
            CapabilityPack(MasterKey(directions, ident), 0.4).save(root / "paper"))


def test_loglikelihood_is_hf_with_added_vectors(tiny_dirs, packs):
    from transformers import AutoModelForCausalLM

    from mkt.interop.lm_eval_model import MktLM
    from mkt.models import encode
    from mkt.pack import CapabilityPack

    lm = MktLM(str(tiny_dirs["llama"]), pack=str(packs[0]))
    context, continuation = "Q:12+34|A:", "46"
    (logprob, _), = lm.loglikelihood([_instance((context, continuation))])
    pack = CapabilityPack.load(packs[0])
    hf = AutoModelForCausalLM.from_pretrained(tiny_dirs["llama"], dtype=torch.float32)
    handles = [hf.model.layers[n].register_forward_hook(
        lambda m, a, out, v=pack.alpha * pack.key.directions[n]: out + v if torch.is_tensor(out) else (out[0] + v,
                                                                                                       *out[1:]))
        for n in pack.layers]
    ctx = encode(lm.model.tokenizer, context)
    ids = torch.tensor([encode(lm.model.tokenizer, context + continuation)])
    with torch.no_grad():
        logits = hf(ids).logits[0].double()
    for h in handles:
        h.remove()
    expected = torch.log_softmax(logits[:-1], -1)[len(ctx) - 1:].gather(-1, ids[0, len(ctx):, None]).sum()
    assert abs(logprob - float(expected)) < 1e-4
    unsteered, = MktLM(str(tiny_dirs["llama"])).loglikelihood([_instance((context, continuation))])
    assert abs(unsteered[0] - logprob) > 1e-3


def test_generate_until_is_mkt_generate(tiny_dirs, packs):
    from mkt.generation import generate
    from mkt.interop.lm_eval_model import MktLM
    from mkt.pack import CapabilityPack

    lm = MktLM(str(tiny_dirs["llama"]), pack=str(packs[1]))
    prompts = ["Q:12+34|A:", "Q:56+78+11|A:", "S:13+57|A:"]
    kwargs = [dict(until=["|"], max_gen_toks=6), dict(until="|", max_gen_toks=6), dict(max_gen_toks=4)]
    got = lm.generate_until([_instance((p, k)) for p, k in zip(prompts, kwargs)])
    steering = CapabilityPack.load(packs[1]).steering()
    want = [g.text for g in generate(lm.model, prompts[:2], 6, steering, stop=["|"])]
    want += [generate(lm.model, prompts[2:], 4, steering)[0].text]
    assert got == want
    plain = MktLM(str(tiny_dirs["llama"])).generate_until([_instance((p, k)) for p, k in zip(prompts, kwargs)])
    assert plain != got
