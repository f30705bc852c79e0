"""Tiny random-init models of real architectures carrying real tokenizers.

No weights are needed to meet what real checkpoints bring: BOS conventions, chat templates,
several end-of-sequence ids, pad tokens, big vocabularies. ``save_tiny_model("llama",
"shared/tokenizers/llama3_1", out)`` writes an HF directory (config, random weights, the real
tokenizer and a ``generation_config.json`` with the family's EOS list) that loads through
``mkt.load_model`` like any checkpoint. Tests and benchmarks use it; so can a user checking
a new family before downloading it.
"""

from __future__ import annotations

import json
import lzma
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch


@dataclass(frozen=True)
class TinyArch:
    """One architecture: its HF ``model_type``, the nearest real tokenizer, and its config quirks."""

    model_type: str
    tokenizer: str  # folder name under shared/tokenizers
    extra: tuple = ()  # extra config fields, as (name, value) pairs


# The tokenizer folders are those of ../shared/tokenizers (README there): each family gets the
# nearest real one. EOS lists are what the real generation_config.json files list.
ARCHITECTURES: dict[str, TinyArch] = {
    "qwen2": TinyArch("qwen2", "qwen3"),
    "qwen3": TinyArch("qwen3", "qwen3", (("head_dim", 16),)),
    "qwen3_moe": TinyArch("qwen3_moe", "qwen3", (("head_dim", 16), ("num_experts", 4), ("num_experts_per_tok", 2),
                                                 ("moe_intermediate_size", 64), ("decoder_sparse_step", 1))),
    "llama": TinyArch("llama", "llama3_1"),
    "mistral": TinyArch("mistral", "llama3_1"),
    "gemma2": TinyArch("gemma2", "gemma3", (("head_dim", 16),)),
    "gemma3": TinyArch("gemma3_text", "gemma3", (("head_dim", 16),)),
    "phi3": TinyArch("phi3", "llama3_1"),
    "gpt2": TinyArch("gpt2", "gpt2"),
    "gpt_neox": TinyArch("gpt_neox", "gpt2"),
    "olmo2": TinyArch("olmo2", "llama3_1"),
}

EOS_IDS = {"qwen3": [151645, 151643], "llama3_1": [128001, 128008, 128009], "gemma3": [1, 106], "gpt2": [50256]}


def load_tokenizer_folder(folder: str | Path, out: str | Path) -> Path:
    """Copy a ``shared/tokenizers`` folder to ``out``, decompressing ``tokenizer.json.xz``."""
    folder, out = Path(folder), Path(out)
    if not (folder / "tokenizer.json.xz").exists():
        raise FileNotFoundError(f"{folder} holds no tokenizer.json.xz: pass a folder of shared/tokenizers")
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokenizer.json").write_bytes(lzma.decompress((folder / "tokenizer.json.xz").read_bytes()))
    for f in folder.iterdir():
        if f.name != "tokenizer.json.xz" and f.is_file():
            shutil.copy(f, out / f.name)
    return out


def tiny_config(arch: str, vocab_size: int, d_model: int = 64, n_layers: int = 2, n_heads: int = 4,
                n_ctx: int = 512, bos: int | None = None, eos: int | list[int] | None = None,
                pad: int | None = None):
    """An HF config of ``arch`` at toy size with the real vocabulary."""
    from transformers import AutoConfig

    spec = ARCHITECTURES[arch]
    fields = dict(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=2 * d_model,
                  num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_heads // 2,
                  max_position_embeddings=n_ctx, bos_token_id=bos, eos_token_id=eos, pad_token_id=pad,
                  tie_word_embeddings=False)
    if arch == "gpt2":
        fields = dict(vocab_size=vocab_size, n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_positions=n_ctx,
                      bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)
    elif arch == "gpt_neox":
        fields.pop("num_key_value_heads")
        fields["intermediate_size"] = 4 * d_model
    fields.update(dict(spec.extra))
    return AutoConfig.for_model(spec.model_type, **fields)


def save_tiny_model(arch: str, tokenizers_root: str | Path, out: str | Path, d_model: int = 64,
                    n_layers: int = 2, n_heads: int = 4, seed: int = 0, weight_scale: float = 4.0) -> Path:
    """Write a random-init ``arch`` model with its family's real tokenizer to ``out``.

    Args:
        arch: a key of ``ARCHITECTURES`` (``qwen2``, ``llama``, ``gemma3``, ...).
        tokenizers_root: the folder holding ``qwen3/``, ``llama3_1/``, ``gemma3/``, ``gpt2/``.
        out: the HF model directory to write.
        weight_scale: matrices are scaled up from the default init so that activations differ
            visibly between prompts.

    Returns:
        ``out``, loadable with ``mkt.load_model(out)``.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}: use one of {sorted(ARCHITECTURES)}")
    spec = ARCHITECTURES[arch]
    out = Path(out)
    load_tokenizer_folder(Path(tokenizers_root) / spec.tokenizer, out)
    tok = AutoTokenizer.from_pretrained(out)
    eos = EOS_IDS[spec.tokenizer]
    config = tiny_config(arch, len(tok), d_model, n_layers, n_heads, bos=tok.bos_token_id, eos=eos[0],
                         pad=tok.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 2:
                p.mul_(weight_scale)
    model.save_pretrained(out)
    GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=tok.pad_token_id).save_pretrained(out)
    (out / "tiny_model.json").write_text(json.dumps(dict(arch=arch, tokenizer=spec.tokenizer, seed=seed), indent=1))
    return out
