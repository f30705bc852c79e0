"""What the analyses share: model/key/prompt arguments, organism defaults, JSON output."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np

from mkt.cliargs import device_name, dtype_name, finite_float, positive_int


def add_model_key_arguments(p: argparse.ArgumentParser, default_target: str = "organism:target-family") -> None:
    """--model / --pack / --prompts with organism defaults, shared by the analyses' CLIs."""
    p.add_argument("--model", default=default_target,
                   help=f"model to analyse: hub name, local dir or organism:NAME (default {default_target})")
    p.add_argument("--pack", default=None,
                   help="capability pack for the model (required for a non-organism model; default on organisms: the "
                   "organism Source's key transferred by the paper's Locked-only protocol, as in the demo)")
    p.add_argument("--prompts", default=None, help="prompt file: .jsonl (prompts may span lines) or UTF-8 text, one per line (default: organism test prompts)")
    p.add_argument("--field", default="question", help="JSONL field of --prompts")
    p.add_argument("--n", type=positive_int, default=100, help="number of prompts (default 100)")
    p.add_argument("--alpha", type=finite_float, default=None, help="intervention strength (default: the pack's)")
    p.add_argument("--device", type=device_name, default="cpu", help="device (default cpu)")
    p.add_argument("--dtype", type=dtype_name, default="float32", help="model dtype: float32, bf16, fp16 (default float32)")
    p.add_argument("--out", default=None, help="output directory (default runs/<analysis>)")


def organism_key(target, target_name: str):
    """The organism Source's prompt key, transferred into ``target`` exactly as the demo does.

    The paper's protocol: a rank-32 least-squares map fitted on Locked prompts only,
    zero-centred, never on the Target's Unlocked states; the demo's seed. Into
    ``source-base`` itself, the Source's own key. On the organisms this key cannot be told
    from its controls (docs/organisms.md): analyses of it describe what the key does, not
    that the transfer is real.
    """
    from mkt.models import load_model
    from mkt.organisms.demo import DEMO_SEED, FIT, RANK
    from mkt.organisms.task import LOCKED_TEMPLATE, UNLOCKED_TEMPLATE, problems
    from mkt.pipeline import run_transfer

    source = load_model("organism:source-base", device="cpu")
    if target_name == "organism:source-base":
        from mkt.extract import extract_prompt_key

        return extract_prompt_key(source, [p.question for p in problems(256, "train", 1)], LOCKED_TEMPLATE,
                                  UNLOCKED_TEMPLATE)
    report = run_transfer(source, target, [p.question for p in problems(256, "train", 1)],
                          [p.question for p in problems(320, "train", 2)], LOCKED_TEMPLATE, UNLOCKED_TEMPLATE,
                          k=RANK, method=FIT, center=True, alignment_set="locked", heldout_fraction=0.2,
                          seed=DEMO_SEED)
    return report.target_key


def resolve(args, default_alpha: float = 0.2):
    """(model, key, alpha, prompts, problems-or-None) from the shared arguments."""
    from mkt.models import load_model
    from mkt.organisms.task import problems
    from mkt.pack import CapabilityPack
    from mkt.prompts import read_questions

    if not args.pack and not str(args.model).startswith("organism:"):
        raise ValueError(f"{args.model} is not an organism, so there is no default key for it: pass --pack "
                         "(made by `mkt transfer` or `mkt extract` for this model)")
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.pack:
        pack = CapabilityPack.load(args.pack)
        pack.check_fits(model)
        key, alpha = pack.key, pack.alpha
    else:
        key, alpha = organism_key(model, args.model), default_alpha
    alpha = alpha if args.alpha is None else args.alpha
    if args.prompts:
        return model, key, alpha, read_questions(args.prompts, args.field)[: args.n], None
    probs = problems(args.n, "test")
    return model, key, alpha, [p.prompt(False) for p in probs], probs


def to_jsonable(obj):
    if is_dataclass(obj):
        return {k: to_jsonable(v) for k, v in asdict(obj).items()}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    return obj


def save_json(result, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_jsonable(result), indent=1))
    return path


def relative_depth(n_layers: int) -> np.ndarray:
    """Layer l's depth as a fraction: 0 for the first block, 1 for the last."""
    return np.arange(n_layers) / max(1, n_layers - 1)


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_outputs(result, plot, out: str | Path, name: str) -> Path:
    """``<out>/<name>.json`` and ``<out>/<name>.png`` for one analysis result."""
    out = Path(out)
    save_json(result, out / f"{name}.json")
    plot(result, out / f"{name}.png")
    return out


def command_line(doc: str, add_arguments, run):
    """A module's ``main(argv)`` built from its docstring, arguments and ``run``."""
    def main(argv: list[str] | None = None):
        p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_arguments(p)
        return run(p.parse_args(argv))

    return main


def refuse_organism_prompts(args) -> None:
    """A real model gets real prompts: refuse, rather than fall back to the organisms' task.

    The organism questions mean nothing to a real model, and a result on them would look
    like a result on the model. Needs ``--prompts`` or ``--task`` (when the parser has it).
    """
    if str(args.model).startswith("organism:") or args.prompts or getattr(args, "task", None):
        return
    raise ValueError(f"{args.model} is not an organism: pass --prompts FILE"
                     + (" or --task FILE" if hasattr(args, "task") else "")
                     + " (the organism questions mean nothing to a real model)")
