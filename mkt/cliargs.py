"""Argument types for the command line: bad values are refused when parsed, before any model loads.

Each raises ``argparse.ArgumentTypeError`` with what was wrong and what is allowed, so the
user sees one line naming the flag (argparse adds it) instead of a traceback minutes later.
"""

from __future__ import annotations

import argparse
import math

from mkt.models import DTYPES


def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _ranged(kind, accept, rule: str, name: str):
    """An argparse type: a ``kind`` number for which ``accept(value)`` holds, else "must be <rule>"."""

    def parse(text: str):
        value = _number(text, kind)
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value}")
        return value

    parse.__name__ = name
    return parse


positive_int = _ranged(int, lambda v: v >= 1, "1 or more", "positive_int")
nonnegative_int = _ranged(int, lambda v: v >= 0, "0 or more", "nonnegative_int")
finite_float = _ranged(float, lambda v: True, "finite", "finite_float")
positive_float = _ranged(float, lambda v: v > 0, "greater than 0", "positive_float")
nonnegative_float = _ranged(float, lambda v: v >= 0, "0 or more", "nonnegative_float")
fraction = _ranged(float, lambda v: 0 <= v < 1, "in [0, 1)", "fraction")


def layer_subset(text: str) -> tuple[int, ...] | None:
    """``all`` (None) or layer indices joined by dashes (``0-1-2``), each at most once."""
    if text.strip().lower() == "all":
        return None
    parts = text.split("-")
    if not all(p.isascii() and p.isdigit() for p in parts) or len(set(parts)) != len(parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a layer subset: use 'all' or distinct layer indices joined "
                                         "by dashes, e.g. 0-1-2")
    return tuple(int(p) for p in parts)


def dtype_name(text: str) -> str:
    """A torch dtype name; accepts the usual aliases (bf16, fp16, fp32, half)."""
    if text.lower() not in DTYPES:
        raise argparse.ArgumentTypeError(f"unknown dtype {text!r}: use one of {sorted(DTYPES)}")
    return DTYPES[text.lower()]


def device_name(text: str) -> str:
    """``--device``: a name torch accepts (``cpu``, ``cuda``, ``cuda:1``), refused when parsed otherwise."""
    import torch

    try:
        torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu, cuda, cuda:1, mps ...") from None
    return text


def stop_string(text: str) -> str:
    """A stop string; ``\\n`` and ``\\t`` typed in a shell mean a newline and a tab."""
    if not text:
        raise argparse.ArgumentTypeError("an empty stop string would end every generation at once: drop it")
    return text.replace("\\n", "\n").replace("\\t", "\t")


def add_model_arguments(p: argparse.ArgumentParser, batch_size: bool = True) -> None:
    """The "model loading" group every verb and analysis that loads a model takes (see ``model_loading``)."""
    g = p.add_argument_group("model loading")
    g.add_argument("--device", type=device_name, default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    g.add_argument("--dtype", type=dtype_name, default="float32",
                   help="float32, bfloat16 or float16, or fp32 / bf16 / fp16 (default float32)")
    g.add_argument("--device-map", default=None, help="HF device_map for large models, e.g. auto")
    g.add_argument("--n-devices", type=positive_int, default=None, help="spread the model over this many GPUs")
    g.add_argument("--trust-remote-code", action="store_true", help="allow model repos to run their own code (off by default)")
    if batch_size:
        g.add_argument("--batch-size", type=positive_int, default=32, help="prompts per forward pass (default 32)")


def model_loading(args) -> dict:
    """``load_model``'s keyword arguments from the ``add_model_arguments`` group (parsed, or options with its fields)."""
    return dict(device=args.device, dtype=args.dtype, device_map=args.device_map, n_devices=args.n_devices,
                trust_remote_code=args.trust_remote_code)
