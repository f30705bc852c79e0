"""Real architectures with real tokenizers: one BOS, every EOS, each model in its own format.

Tiny random-init models (mkt.tiny_models) of 11 architectures carry the real Qwen3, Llama 3.1,
Gemma 3 and GPT-2 tokenizers from ../shared/tokenizers (skipped when absent).
"""

from __future__ import annotations

import json

import pytest
import torch

from mkt.generation import generate
from mkt.models import eos_token_ids, load_model, tokenize_left_padded
from mkt.prompts import PromptFormat, PromptTemplate
from mkt.tiny_models import ARCHITECTURES

pytestmark = pytest.mark.slow

PLAIN = ["Question: What is 12 + 30?\nAnswer:", "Question: A train leaves at 3 pm and travels 2 hours. When?\nAnswer:"]
QUESTIONS = [f"What is {a} + {b}?" for a, b in [(1, 2), (13, 29), (7, 8), (120, 5), (44, 44), (3, 99), (61, 7),
                                                 (10, 10), (5, 6), (88, 12), (23, 32), (9, 90)]]
LOCKED = "Question: {question}\nAnswer:"
UNLOCKED = "Question: {question}\nAnswer: Let's think step by step."


@pytest.fixture(scope="module")
def real(real_tiny_dir):
    models = {}

    def get(arch: str):
        if arch not in models:
            models[arch] = load_model(real_tiny_dir(arch), device="cpu")
        return models[arch]

    return get


def _chat_ids(tok, text: str) -> list[int]:
    out = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=True, add_generation_prompt=True)
    return list(out["input_ids"] if hasattr(out, "keys") else out)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_tokenization_is_the_tokenizers_own_with_one_bos(real, real_tiny_dir, arch):
    from transformers import AutoTokenizer

    model = real(arch)
    # the reference is the family's tokenizer loaded afresh, never the bridge's copy (which
    # TransformerLens reloads with add_bos_token=True)
    tok = AutoTokenizer.from_pretrained(real_tiny_dir(arch))
    ids, mask = tokenize_left_padded(model, PLAIN)
    for row, m, text in zip(ids, mask, PLAIN):
        assert row[m.bool()].tolist() == tok(text)["input_ids"]
    if tok.chat_template:
        chat = PromptFormat(PromptTemplate("{question}"), chat=True).render(tok, "What is 2 + 2?")
        ids, mask = tokenize_left_padded(model, [chat])
        got = ids[0][mask[0].bool()].tolist()
        assert got == _chat_ids(tok, "What is 2 + 2?")
        if tok.bos_token_id is not None and chat.startswith(tok.bos_token or "\0"):
            assert got.count(tok.bos_token_id) == 1 and got[0] == tok.bos_token_id


class ForceToken:
    """A logit offset (``generate(logit_offset=...)``) that makes ``token`` win at step ``at``
    and forbids it before."""

    def __init__(self, token: int, at: int, vocab: int) -> None:
        self.token, self.at, self.vocab = token, at, vocab

    def begin(self, prompts):
        return _Forcing(self, len(prompts))


class _Forcing:
    def __init__(self, owner: ForceToken, rows: int) -> None:
        self.owner, self.rows, self.step = owner, rows, 0

    def offset(self):
        out = torch.zeros(self.rows, self.owner.vocab)
        out[:, self.owner.token] = 1e4 if self.step == self.owner.at else -1e4
        return out

    def advance(self, tokens) -> None:
        self.step += 1


@pytest.mark.parametrize("arch", ["llama", "qwen3", "gemma3", "gpt2"])
def test_generation_stops_on_every_eos_of_the_generation_config(real, arch):
    model = real(arch)
    listed = model.original_model.generation_config.eos_token_id
    listed = listed if isinstance(listed, list) else [listed]
    assert set(listed) <= set(eos_token_ids(model))
    for eos in listed:
        g = generate(model, PLAIN[:1], max_new_tokens=12, logit_offset=ForceToken(eos, 3, model.cfg.d_vocab))[0]
        assert g.stopped and g.n_tokens == 3, (eos, g.token_ids)
        assert eos not in g.token_ids


def test_stop_strings_cut_wherever_they_end(real):
    model = real("llama")
    free = generate(model, PLAIN[:1], max_new_tokens=12)[0]
    assert len(free.text) > 4
    stop = free.text[2:4]  # two characters from inside the free text, likely inside a token
    cut = generate(model, PLAIN[:1], max_new_tokens=12, stop=[stop])[0]
    assert cut.stopped and cut.text == free.text[: free.text.find(stop)]


def test_transfer_between_families_each_in_its_own_chat_format(real, tmp_path):
    """A Qwen3 Source asked in ChatML, a Llama Target in its header format: the map pairs the
    two models' Locked states question by question; the key steers the Target."""
    from mkt.pack import CapabilityPack
    from mkt.pipeline import alignment_prompts, run_transfer

    source, target = real("qwen3"), real("llama")
    s_locked, s_unlocked = (PromptFormat(PromptTemplate(t), chat=True) for t in (LOCKED, UNLOCKED))
    t_locked = PromptFormat(PromptTemplate(LOCKED), chat=True)
    src_prompts = alignment_prompts(QUESTIONS[:2], s_locked, None, "locked", source.tokenizer)
    tgt_prompts = alignment_prompts(QUESTIONS[:2], t_locked, None, "locked", target.tokenizer)
    assert "<|im_start|>user" in src_prompts[0] and "<|start_header_id|>" not in src_prompts[0]
    assert tgt_prompts[0].startswith("<|begin_of_text|>") and "<|im_start|>" not in tgt_prompts[0]
    report = run_transfer(source, target, QUESTIONS, QUESTIONS, s_locked, s_unlocked, k=4, center=True,
                          target_locked=t_locked, heldout_fraction=0.25)
    key = report.target_key
    assert key.directions.shape == (target.cfg.n_layers, target.cfg.d_model)
    assert torch.isfinite(key.directions).all() and (key.norms() > 0).all()
    assert len(report.heldout_error) == target.cfg.n_layers and all(e == e for e in report.heldout_error)
    # the key, saved and loaded as a pack, changes what the Target writes in its own chat format
    pack = CapabilityPack(key, alpha=2.0, mode="additive").save(tmp_path / "pack")
    loaded = CapabilityPack.load(pack)
    prompts = t_locked.render_all(target.tokenizer, QUESTIONS[:4])
    plain = generate(target, prompts, max_new_tokens=6)
    steered = generate(target, prompts, max_new_tokens=6, steering=loaded.steering())
    assert [g.token_ids for g in plain] != [g.token_ids for g in steered]


def test_transfer_command_with_a_format_per_model(real_tiny_dir, tmp_path, capsys):
    from mkt.cli import main

    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(QUESTIONS) + "\n")
    out = tmp_path / "pack"
    assert main(["transfer", "--source", str(real_tiny_dir("qwen3")), "--target", str(real_tiny_dir("gemma3")),
                 "--questions", str(qfile), "--locked", LOCKED, "--unlocked", UNLOCKED, "--source-chat",
                 "--target-chat", "--k", "4", "--out", str(out), "--device", "cpu"]) == 0
    report = json.loads((out / "transfer_report.json").read_text())
    assert report["target"] and len(report["coverage"]) == 2
    # a chat format for a tokenizer without a chat template is refused before any forward pass
    assert main(["transfer", "--source", str(real_tiny_dir("gpt2")), "--target", str(real_tiny_dir("llama")),
                 "--questions", str(qfile), "--locked", LOCKED, "--unlocked", UNLOCKED, "--source-chat",
                 "--k", "4", "--out", str(tmp_path / "p2"), "--device", "cpu"]) == 2
    assert "no chat template" in capsys.readouterr().err


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_extraction_steering_and_packs_run_on_every_architecture(real, arch, tmp_path):
    from mkt.extract import extract_prompt_key
    from mkt.pack import CapabilityPack

    model = real(arch)
    chat = bool(model.tokenizer.chat_template)
    locked, unlocked = (PromptFormat(PromptTemplate(t), chat=chat) for t in (LOCKED, UNLOCKED))
    key = extract_prompt_key(model, QUESTIONS[:6], locked, unlocked)
    assert key.directions.shape == (model.cfg.n_layers, model.cfg.d_model) and (key.norms() > 0).all()
    loaded = CapabilityPack.load(CapabilityPack(key, alpha=0.5).save(tmp_path / arch))
    assert torch.equal(loaded.key.directions, key.directions.float())
    prompts = locked.render_all(model.tokenizer, QUESTIONS[:3])
    gens = generate(model, prompts, max_new_tokens=4, steering=loaded.steering())
    assert all(1 <= g.n_tokens <= 4 for g in gens)


def _gsm8k_file(path, n: int = 14):
    rows = [dict(id=f"q{i}", question=f"Tom has {i} apples and buys {i + 3} more. How many now?",
                 answer=f"He has {i} + {i + 3} = {2 * i + 3} apples.\n#### {2 * i + 3}") for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_eval_combines_few_shot_chat_logit_transfer_and_a_pack(real_tiny_dir, tmp_path):
    from mkt.cli import main

    task = _gsm8k_file(tmp_path / "gsm.jsonl")
    target, source = str(real_tiny_dir("qwen3")), str(real_tiny_dir("qwen2"))  # one vocabulary: logit transfer applies
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(QUESTIONS) + "\n")
    assert main(["extract", "--model", target, "--questions", str(qfile), "--locked", LOCKED, "--unlocked", UNLOCKED,
                 "--chat", "--out", str(tmp_path / "pack"), "--device", "cpu"]) == 0
    out = tmp_path / "run"
    assert main(["eval", "--model", target, "--task", str(task), "--limit", "4", "--few-shot", "2", "--chat",
                 "--logit-transfer-from", source, "--pack", str(tmp_path / "pack"), "--max-new-tokens", "6",
                 "--out", str(out), "--device", "cpu"]) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    config = json.loads((out / "run.json").read_text())
    assert len(records) == 4 and config["stop"] == ["\nQuestion:"] and config["n_demos"] == 2
    for r in records:
        assert r["prompt"].startswith("<|im_start|>user\n") and r["prompt"].count("<|im_start|>user") == 1
        # the demos are the file's last items, with their worked solutions, and are not evaluated
        assert "#### " not in r["prompt"] and "The answer is 27." in r["prompt"] and "The answer is 29." in r["prompt"]
        assert r["id"] not in ("q12", "q13")


def test_model_induced_keys_in_extract_and_sweep(real_tiny_dir, tmp_path):
    from mkt.cli import main
    from mkt.tiny_models import save_tiny_model
    from tests.conftest import TOKENIZERS

    base = str(real_tiny_dir("llama"))
    post = str(save_tiny_model("llama", TOKENIZERS, tmp_path / "llama-post", seed=7))
    task = _gsm8k_file(tmp_path / "gsm.jsonl", 20)
    assert main(["sweep", "--source", base, "--unlocked-model", post, "--target", str(real_tiny_dir("olmo2")),
                 "--task", str(task), "--alphas", "0.5", "--ks", "2", "--ns", "8", "--dev-size", "3",
                 "--test-size", "3", "--null-seeds", "0", "--max-new-tokens", "4", "--target-chat",
                 "--out", str(tmp_path / "sweep"), "--device", "cpu"]) == 0
    result = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert result["best"]["n"] == 8 and result["best"]["k"] == 2
    run = json.loads((tmp_path / "sweep" / "sweep_run.json").read_text())
    assert run["formats"][2]["chat"] is True and run["formats"][0]["chat"] is False
    assert run["spec"]["stop"] == ["\nQuestion:"]
