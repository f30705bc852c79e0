"""Loading TransformerLens models and the small facts about them mkt relies on."""

from __future__ import annotations

import os
import pickle
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from jaxtyping import Int
from safetensors import SafetensorError
from torch import Tensor

from mkt.checkpoints import resolve_model_path
from mkt.checkpoints.gguf import converted_name
from mkt.errors import IncompatibleModelError, MktError, ModelLoadError, one_line

RESID_HOOK = "hook_resid_post"
# where keys are read and written in each block (TransformerLens names): the residual stream
# before, between and after the block's attention and MLP, the two sublayers' outputs, and the
# attention heads' outputs before W_O (``attn.hook_z``, [batch, pos, head, d_head]: per head)
PER_HEAD_HOOKS = ("attn.hook_z",)
DTYPES = {"float32": "float32", "fp32": "float32", "float": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
          "float16": "float16", "fp16": "float16", "half": "float16"}  # the names (and aliases) a dtype may go by
HOOK_POINTS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out", *PER_HEAD_HOOKS)


def check_hook(hook: str) -> str:
    """``hook`` when it is one of ``HOOK_POINTS``; a clear error otherwise."""
    if hook not in HOOK_POINTS:
        raise ValueError(f"unknown hook point {hook!r}: use one of {HOOK_POINTS}")
    return hook


def resid_hook_name(layer: int, hook: str = RESID_HOOK) -> str:
    """TransformerLens name of hook point ``hook`` of block ``layer`` (default: the residual
    stream after the block)."""
    return f"blocks.{layer}.{hook}"


def load_model(
    name_or_path: str | os.PathLike,
    device: str | None = None,
    dtype: torch.dtype | str = torch.float32,
    device_map: str | dict | None = None,
    n_devices: int | None = None,
    trust_remote_code: bool = False,
):
    """Load a model as a TransformerLens ``TransformerBridge``.

    Args:
        name_or_path: hub name (``Qwen/Qwen3-4B``), a local HF directory, a ``.gguf`` file (or a
            directory holding one; dequantized once and cached), a trained checkpoint of the
            real-model zoo as ``real:NAME`` (``real:gemma-3-270m``) or a built-in organism as
            ``organism:NAME`` (``organism:source-base``): :mod:`mkt.checkpoints`.
        device: ``cpu``, ``cuda``, ...; default: CUDA when available.
        dtype: parameter dtype (``torch.bfloat16`` or ``"bfloat16"`` for large models).
        device_map: passed through to HF for models spread across GPUs.
        n_devices: passed through to TransformerLens for multi-GPU models.
        trust_remote_code: off unless you ask for it.

    Raises:
        ModelLoadError: the model is neither a local directory nor reachable on the hub, or a
            GGUF file or zoo name cannot be had (the message names the fix).
    """
    from transformer_lens.model_bridge import TransformerBridge

    if isinstance(dtype, str):
        if dtype.lower() not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}: use one of {sorted(DTYPES)}")
        dtype = getattr(torch, DTYPES[dtype.lower()])
    if device is None and device_map is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    kwargs = dict(device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    if device_map is not None:
        kwargs["device_map"] = device_map
    if n_devices is not None:
        kwargs["n_devices"] = n_devices
    name = resolve_model_path(name_or_path)
    local = Path(name).expanduser()
    try:
        model = TransformerBridge.boot_transformers(str(local) if local.exists() else name, **kwargs)
    except (OSError, ValueError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError) as err:
        if local.exists():  # unreadable weights: a pickle with code in it, a truncated file ...
            if isinstance(err, pickle.UnpicklingError):
                why = "its pickled weights cannot be read as tensors alone, and mkt never runs a pickle's code"
            else:
                why = f"{type(err).__name__}: {one_line(err, 200)}"
            raise ModelLoadError(
                f"could not load the model in {local} ({why}): check that it is a complete HF model directory "
                "(config.json and its weights, best as .safetensors)"
            ) from err
        if not isinstance(err, (OSError, ValueError)):
            raise
        raise ModelLoadError(
            f"could not load model {name!r}: it is not a local directory and the hub is not "
            f"reachable or does not have it ({type(err).__name__}: {one_line(err, 200)}). "
            "Pass the path of a local HF model directory instead."
        ) from err
    use_family_tokenizer(model, str(local) if local.exists() else name, trust_remote_code)
    label = converted_name(local)
    if label:  # a dequantized GGUF: named by its file, not by the cache folder
        model.cfg.model_name = label
    model.eval()
    return model


@dataclass(frozen=True)
class ModelIdentity:
    """What a key, alignment or pack must know about the model it belongs to."""

    name: str
    architecture: str
    n_layers: int
    d_model: int
    d_vocab: int
    n_heads: int | None = None  # None: not recorded (packs written before per-head keys)
    d_head: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def fits(self, other: "ModelIdentity") -> bool:
        heads = [(a, b) for a, b in ((self.n_heads, other.n_heads), (self.d_head, other.d_head)) if None not in (a, b)]
        return (self.n_layers, self.d_model) == (other.n_layers, other.d_model) and all(a == b for a, b in heads)

    def width(self, hook: str) -> int:
        """The width of a state at ``hook``: d_model, or n_heads x d_head at a per-head hook (flattened)."""
        if hook not in PER_HEAD_HOOKS:
            return self.d_model
        if self.n_heads is None or self.d_head is None:
            raise IncompatibleModelError(f"a key at {hook} needs the model's n_heads and d_head, which this identity "
                                         f"of {self.name!r} does not record: extract the key again")
        return self.n_heads * self.d_head


def model_identity(model) -> ModelIdentity:
    """The identity of a bridge, or of an engine (``mkt.engines``), which carries its own."""
    if isinstance(getattr(model, "identity", None), ModelIdentity):
        return model.identity
    cfg = model.cfg
    name = getattr(cfg, "model_name", None) or "unknown"
    if os.path.isdir(name):  # local dirs are identified by their folder name, not the path
        name = Path(name).resolve().name
    return ModelIdentity(
        name=str(name),
        architecture=str(getattr(cfg, "architecture", None) or "unknown"),
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        d_vocab=int(cfg.d_vocab),
        n_heads=int(cfg.n_heads) if getattr(cfg, "n_heads", None) else None,
        d_head=int(cfg.d_head) if getattr(cfg, "d_head", None) else None,
    )



def check_layers(layers: list[int] | None, n_layers: int) -> list[int]:
    """All layers when ``layers`` is None; else the layers, validated."""
    if layers is None:
        return list(range(n_layers))
    layers = [int(x) for x in layers]
    bad = [x for x in layers if not 0 <= x < n_layers]
    if bad:
        raise IncompatibleModelError(
            f"unknown layer index {bad}: the model has {n_layers} layers, so use 0..{n_layers - 1}"
        )
    if not layers:
        raise IncompatibleModelError("empty layer list: name at least one layer")
    return sorted(set(layers))


def check_prompts(prompts: list[str]) -> None:
    """Refuse what cannot be a list of prompts, with one clear message, before any model work."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not one string (it would be read as one prompt per "
                        "character): pass [prompt]")
    if not prompts:
        raise ValueError("empty prompt list: pass at least one prompt")


def use_family_tokenizer(model, source: str, trust_remote_code: bool = False) -> None:
    """Give a booted bridge its family's own tokenizer, as ``AutoTokenizer`` loads it.

    TransformerLens reloads every tokenizer that has a BOS token with ``add_bos_token=True``,
    so its copy prepends a BOS where the family's tokenizer adds none (Qwen's ``<|endoftext|>``,
    SmolLM2's ``<|im_start|>``). mkt encodes every prompt through ``model.tokenizer``, so the
    family's tokenizer replaces it; the config's record of what the tokenizer adds is
    re-detected, so TransformerLens' own ``to_tokens`` still prepends its BOS when asked.
    (Not through the bridge's ``tokenizer`` setter: that reloads the tokenizer with the BOS
    again and resets ``d_vocab`` to the tokenizer's, not the embedding's, size.)
    """
    from transformer_lens.model_bridge.sources import detect_tokenizer_bos_eos
    from transformers import AutoTokenizer

    if getattr(model, "tokenizer", None) is None:
        return
    family = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    family.padding_side = model.tokenizer.padding_side
    rows = model.cfg.d_vocab  # ids at or past the embedding's rows cannot be fed, not even as masked padding
    if family.pad_token_id is None or family.pad_token_id >= rows:  # none, or one the tokenizer added: pad with EOS
        if family.eos_token_id is None or family.eos_token_id >= rows:
            raise ModelLoadError(f"the tokenizer of {source} has neither a pad token nor an EOS token among the "
                                 f"model's {rows} embedded ids, so prompts cannot be batched: set pad_token (or "
                                 "eos_token) in its tokenizer_config.json to a token of its vocabulary")
        family.pad_token = family.eos_token
    model._tokenizer = family
    if getattr(model, "_driver", None) is not None:
        model._driver.tokenizer = family
    model.cfg.tokenizer_prepends_bos, model.cfg.tokenizer_appends_eos = detect_tokenizer_bos_eos(family)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of one prompt exactly as the model family expects them: one BOS at most.

    A prompt is encoded with the tokenizer's own special-token rule (the BOS of Llama and
    Gemma, none for Qwen), except when the text already begins with the BOS string, as
    chat templates of Llama 3, Gemma and OLMo write it: then nothing is added, which is what
    ``apply_chat_template(..., tokenize=True)`` gives. (TransformerLens' ``to_tokens``
    prepends its own BOS on top, hence two.)
    """
    bos = getattr(tokenizer, "bos_token", None)
    has_bos = bool(bos) and text.startswith(bos)
    return list(tokenizer(text, add_special_tokens=not has_bos)["input_ids"])


def tokenize_left_padded(
    model, prompts: list[str]
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Token ids and attention mask of ``prompts``, left-padded.

    Each prompt is encoded alone (:func:`encode`), then padded on the left, so position -1
    is every row's last real token and the mask comes from the lengths (never from pad
    ids, which may equal BOS).
    """
    if not prompts:
        raise ValueError("empty prompt list: pass at least one prompt")
    rows = [encode(model.tokenizer, p) for p in prompts]
    n_ctx = getattr(model.cfg, "n_ctx", None)
    too_long = [i for i, r in enumerate(rows) if n_ctx and len(r) > n_ctx]
    if too_long:  # truncation would cut the end of the prompt, where keys are read and applied
        i = too_long[0]
        raise MktError(
            f"prompt {i} is {len(rows[i])} tokens but the model's context is {n_ctx} "
            f"({len(too_long)} prompt(s) too long): shorten the prompts or the template"
        )
    empty = [i for i, r in enumerate(rows) if not r]
    if empty:
        raise MktError(f"prompt {empty[0]} encodes to no tokens: pass a non-empty prompt")
    width = max(len(r) for r in rows)
    pad = model.tokenizer.pad_token_id
    if pad is None:
        pad = model.tokenizer.eos_token_id or 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    device = model.cfg.device
    return ids.to(device), mask.to(device)


def eos_token_ids(model) -> list[int]:
    """Every id that ends a generation: the tokenizer's EOS and the generation config's list.

    Chat models end a turn with a token other than the tokenizer's EOS (Llama 3.1 Instruct
    ``<|eot_id|>``, Gemma ``<end_of_turn>``, Qwen ``<|im_end|>`` and ``<|endoftext|>``); their
    ``generation_config.json`` lists them all.
    """
    ids: list[int] = []
    config = getattr(getattr(model, "original_model", None), "generation_config", None)
    listed = getattr(config, "eos_token_id", None)
    for x in [model.tokenizer.eos_token_id] + (listed if isinstance(listed, (list, tuple)) else [listed]):
        if x is not None and int(x) not in ids:
            ids.append(int(x))
    return ids


def single_token_id(model, text: str) -> int:
    """The id of ``text`` when it is exactly one token (no BOS); a clear error otherwise."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"{text!r} is {len(ids)} tokens for this tokenizer, not one: pass a single token")
    return int(ids[0])


def load_random_init(name_or_path: str | os.PathLike, seed: int = 0, device: str | None = "cpu",
                     dtype: torch.dtype | str = torch.float32):
    """A freshly initialised model of ``name_or_path``'s config and tokenizer (no trained weights).

    The Source-free control: the whole transfer pipeline run from this model in place of the
    Source must not pass, or the pipeline, not the Source, produced the result.
    """
    import tempfile

    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    name = resolve_model_path(name_or_path)
    config = AutoConfig.from_pretrained(name, trust_remote_code=False)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    label = f"random-init-{converted_name(name) or Path(name).name}-seed{seed}"
    with tempfile.TemporaryDirectory(prefix="mkt-") as tmp:
        model.save_pretrained(Path(tmp) / label)
        AutoTokenizer.from_pretrained(name).save_pretrained(Path(tmp) / label)
        bridge = load_model(Path(tmp) / label, device=device, dtype=dtype)
    bridge.cfg.model_name = label  # the folder is gone: keep a readable identity
    return bridge
