"""Training the model organisms: tiny HF causal LMs on the addition task, saved as HF dirs.

Deterministic from a seed on CPU: the corpus comes from ``random.Random(seed)``, the
initialisation and dropout-free updates from ``torch.manual_seed(seed)``.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mkt.eval.organism_task import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SCORE_METRICS,
    SPECIAL_TOKENS,
    VOCAB_CHARS,
    Recipe,
    problems,
    score_answer,
)

MANIFEST = "organism.json"


def build_tokenizer():
    """A character-level HF fast tokenizer over the task's alphabet; encoding prepends ``<bos>``,
    as every training sequence starts with it."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + tuple(VOCAB_CHARS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<pad>"
    )


def encode(text: str) -> list[int]:
    """Token ids of ``text`` (no BOS), without a tokenizer object: one id per character."""
    offset = len(SPECIAL_TOKENS)
    return [offset + VOCAB_CHARS.index(c) for c in text]


def decode(ids: list[int]) -> str:
    """Text of generated ids, up to the first EOS."""
    out = []
    for i in ids:
        if i == EOS_ID:
            break
        if i >= len(SPECIAL_TOKENS):
            out.append(VOCAB_CHARS[i - len(SPECIAL_TOKENS)])
    return "".join(out)


@dataclass(frozen=True)
class OrganismSpec:
    """Architecture and training recipe of one organism.

    ``init`` names another organism of the zoo to start from (post-training).
    """

    arch: str = "qwen2"
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    seed: int = 0
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 200
    recipe: Recipe = field(default_factory=Recipe)
    init: str | None = None
    max_positions: int = 80

    def hf_config(self):
        from transformers import GPT2Config, LlamaConfig, Qwen2Config

        common = dict(bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
        vocab = len(SPECIAL_TOKENS) + len(VOCAB_CHARS)
        if self.arch == "gpt2":
            return GPT2Config(
                vocab_size=vocab, n_embd=self.d_model, n_layer=self.n_layers, n_head=self.n_heads,
                n_positions=self.max_positions, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **common,
            )
        cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}.get(self.arch)
        if cls is None:
            raise ValueError(f"unknown arch {self.arch!r}: use 'qwen2', 'llama' or 'gpt2'")
        return cls(
            vocab_size=vocab, hidden_size=self.d_model, intermediate_size=4 * self.d_model,
            num_hidden_layers=self.n_layers, num_attention_heads=self.n_heads,
            num_key_value_heads=self.n_heads, max_position_embeddings=self.max_positions,
            tie_word_embeddings=self.arch == "qwen2", rope_theta=10000.0, **common,
        )


def make_batch(recipe: Recipe, rng: random.Random, batch_size: int):
    """Right-padded ids, attention mask and labels (loss on answer tokens and EOS only)."""
    seqs, starts = [], []
    for _ in range(batch_size):
        prompt, answer = recipe.example(rng)
        seqs.append([BOS_ID] + encode(prompt) + encode(answer) + [EOS_ID])
        starts.append(1 + len(prompt))
    width = max(len(s) for s in seqs)
    ids = torch.full((batch_size, width), PAD_ID, dtype=torch.long)
    labels = torch.full((batch_size, width), -100, dtype=torch.long)
    mask = torch.zeros((batch_size, width), dtype=torch.long)
    for i, (s, start) in enumerate(zip(seqs, starts)):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
        labels[i, start : len(s)] = torch.tensor(s[start:])
    return ids, mask, labels


@torch.no_grad()
def hf_greedy(model, prompts: list[str], max_new_tokens: int = 44) -> list[str]:
    """Greedy answers of an HF model to organism prompts (left-padded batch)."""
    seqs = [[BOS_ID] + encode(p) for p in prompts]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[PAD_ID] * (width - len(s)) + s for s in seqs])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(s) for s in seqs])[:, None]).long()
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
        eos_token_id=EOS_ID, pad_token_id=PAD_ID,
    )
    return [decode(row) for row in out[:, width:].tolist()]


def quick_eval(model, n: int = 100, split: str = "dev") -> dict[str, float]:
    """Clean step-by-step rate and accuracy on plain and on cue prompts."""
    probs = problems(n, split)
    result = {}
    for name, cue in (("plain", False), ("cue", True)):
        scores = [score_answer(a, p) for a, p in zip(hf_greedy(model, [p.prompt(cue) for p in probs]), probs)]
        for metric in SCORE_METRICS:
            result[f"{name}_{metric}"] = sum(getattr(s, metric) for s in scores) / n
    return result


def train_organism(spec: OrganismSpec, out_dir: str | Path, init_dir: str | Path | None = None,
                   eval_every: int = 500, progress: bool = True) -> dict:
    """Train one organism and save it (HF model, tokenizer, ``organism.json``) to ``out_dir``.

    Returns the manifest written.
    """
    from transformers import AutoModelForCausalLM

    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed + 1000)
    if spec.init is not None:
        if init_dir is None:
            raise ValueError(f"spec starts from organism {spec.init!r}: pass init_dir")
        model = AutoModelForCausalLM.from_pretrained(init_dir)
    else:
        model = AutoModelForCausalLM.from_config(spec.hf_config())
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.1, betas=(0.9, 0.98))

    def lr_at(step: int) -> float:
        if step < spec.warmup:
            return spec.lr * (step + 1) / spec.warmup
        progress_ = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
        return spec.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress_)))

    log, start = [], time.time()
    model.train()
    bar = tqdm(range(spec.steps), desc=f"train {Path(out_dir).name}", disable=not progress)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        ids, mask, labels = make_batch(spec.recipe, rng, spec.batch_size)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
        if eval_every and ((step + 1) % eval_every == 0) and step + 1 < spec.steps:
            model.eval()
            log.append(dict(step=step + 1, loss=loss.item(), **quick_eval(model)))
            model.train()
    model.eval()
    final = quick_eval(model, n=200)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    build_tokenizer().save_pretrained(out)
    manifest = dict(
        spec=asdict(spec), n_params=n_params, train_seconds=round(time.time() - start, 1),
        final_loss=loss.item(), final_dev_metrics=final, log=log,
        task="multi-term addition; see mkt/eval/organism_task.py",
    )
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return manifest


def with_steps(spec: OrganismSpec, steps: int) -> OrganismSpec:
    """The same organism with another training length (short runs in tests)."""
    return replace(spec, steps=steps, warmup=min(spec.warmup, max(1, steps // 4)))
