"""Batch sizes that fit the machine: sized from the model's shapes, the sequence length and free memory.

A batch row costs its KV cache, the logits of one step over the vocabulary (Gemma 3 has 262k
tokens: 1 MB a row in float32, a few copies live at once), and during the prompt's forward its
activations (the MLP's hidden layer and the attention scores of every prompt token). The
default ``batch_size`` of generation and ``Decoding`` is ``None``: the largest batch whose rows
fit in half the free memory, at most :data:`MAX_BATCH`.
"""

from __future__ import annotations

import torch

MAX_BATCH = 256
SHARE = 0.5  # of the free memory: the rest for the model's weights in flight, other work, fragmentation
LOGIT_COPIES = 4  # a step's logits, their float32 copy, log-softmax and its exp (entropies)


def row_bytes(model, n_tokens: int, prompt_tokens: int) -> int:
    """Bytes one batch row needs at its peak: KV cache of ``n_tokens``, one step's logits, and the
    activations of a forward over ``prompt_tokens`` at once.

    Args:
        model: a TransformerBridge (its ``cfg`` gives the shapes).
        n_tokens: prompt + new tokens (what the KV cache holds at the end).
        prompt_tokens: the longest prompt (the prefill's length).
    """
    cfg = model.cfg
    element = torch.finfo(cfg.dtype).bits // 8 if getattr(cfg, "dtype", None) is not None else 4
    kv_heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    kv = 2 * cfg.n_layers * kv_heads * cfg.d_head * n_tokens * element
    logits = LOGIT_COPIES * cfg.d_vocab * 4
    d_mlp = getattr(cfg, "d_mlp", None) or 4 * cfg.d_model
    prefill = prompt_tokens * (3 * d_mlp + 8 * cfg.d_model + 2 * cfg.n_heads * prompt_tokens) * 4
    return kv + logits + prefill


def free_bytes(device: torch.device | str) -> int:
    """Memory free now on ``device`` (available RAM on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def fitting_batch_size(model, n_tokens: int, prompt_tokens: int) -> int:
    """The largest batch (1 to :data:`MAX_BATCH`) whose rows fit in :data:`SHARE` of the free memory."""
    budget = SHARE * free_bytes(model.cfg.device)
    return int(max(1, min(MAX_BATCH, budget // row_bytes(model, n_tokens, prompt_tokens))))
