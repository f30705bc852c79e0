"""What the analyses share: model/key/prompt arguments, organism defaults, JSON output."""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mkt.cliargs import device_name, dtype_name, finite_float, positive_int


def add_model_key_arguments(p: argparse.ArgumentParser, default_target: str = "organism:target-family") -> None:
    """--model / --pack / --prompts with organism defaults, shared by the analyses' CLIs."""
    p.add_argument("--model", default=default_target,
                   help=f"model to analyse: hub name, local dir or organism:NAME (default {default_target})")
    p.add_argument("--pack", default=None,
                   help="capability pack for the model (required for a non-organism model; default on organisms: the "
                   "organism Source's key transferred by the paper's Locked-only protocol, as in the demo)")
    p.add_argument("--prompts", default=None, help="prompt file: .jsonl (prompts may span lines) or UTF-8 text, one per "
                   "line (default on organisms: organism test prompts; a non-organism model needs --prompts or --task)")
    p.add_argument("--task", default=None,
                   help="task JSONL (gsm8k, MATH or AGIEval-math fields; mkt.eval.tasks.load_task): its questions in the "
                   "task's direct template are the prompts, and its answers score accuracy")
    p.add_argument("--field", default="question", help="JSONL field of --prompts")
    add_chat_argument(p)
    p.add_argument("--n", type=positive_int, default=100, help="number of prompts (default 100)")
    p.add_argument("--alpha", type=finite_float, default=None, help="intervention strength (default: the pack's)")
    p.add_argument("--device", type=device_name, default="cpu", help="device (default cpu)")
    p.add_argument("--dtype", type=dtype_name, default="float32", help="model dtype: float32, bf16, fp16 (default float32)")
    p.add_argument("--out", default=None, help="output directory (default runs/<analysis>)")


def add_chat_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chat", action="store_true",
                   help="put each prompt (from --prompts or a --task template, and its Unlocked pair) inside the "
                   "model's chat template as the user turn, ending where the answer begins")


def chat_formatted(args, tokenizer, prompts: list[str] | None) -> list[str] | None:
    """``prompts`` as user turns of the tokenizer's chat template with ``--chat``; as given otherwise."""
    if not getattr(args, "chat", False) or prompts is None:
        return prompts
    from mkt.prompts import apply_chat

    return [apply_chat(tokenizer, p) for p in prompts]


def _zoo_hash(*names: str) -> str:
    """sha256 over the named organisms' weight and config files (what the key is computed from)."""
    import hashlib

    from mkt.organisms.zoo import organism_path

    h = hashlib.sha256()
    for name in names:
        path = organism_path(name.removeprefix("organism:"))
        for f in sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".json", ".bin")):
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def cached_organism_key(target, target_name: str, cache_dir: str | Path | None = None):
    """``organism_key``, cached on disk: ``<cache_dir>/<target>-<seed>-<zoo hash>.safetensors``.

    The key is deterministic given the zoo's weights and the demo's seed, so the file is named
    by both and validated on load (target, seed, hash, shape); a file that does not match is
    recomputed and overwritten. Default cache dir: ``$MKT_CACHE`` or ``~/.cache/mkt``, then
    ``organism-keys``.
    """
    import os

    from safetensors import SafetensorError
    from safetensors.torch import load, save

    from mkt.artifacts import check_tensor, read_bytes, replace_atomically
    from mkt.key import MasterKey
    from mkt.models import HOOK_POINTS, model_identity
    from mkt.organisms.demo import DEMO_SEED

    root = Path(cache_dir or Path(os.environ.get("MKT_CACHE", Path.home() / ".cache" / "mkt")) / "organism-keys")
    digest = _zoo_hash("source-base", target_name)
    meta = {"target": target_name, "seed": str(DEMO_SEED), "zoo_hash": digest}
    path = root / f"{target_name.removeprefix('organism:')}-{DEMO_SEED}-{digest}.safetensors"
    identity = model_identity(target)
    if path.is_file():
        try:  # the same checks as any key: a file that fails them is recomputed, never used
            data = read_bytes(path, "a cached key", "")
            stored = json.loads(data[8 : 8 + int.from_bytes(data[:8], "little")]).get("__metadata__", {})
            provenance = json.loads(stored["provenance"])
            if all(stored.get(k) == v for k, v in meta.items()) and stored["hook"] in HOOK_POINTS and isinstance(
                    provenance, dict):
                directions = check_tensor(load(data).get("directions"), "directions",
                                          (identity.n_layers, identity.width(stored["hook"])), str(path), "")
                return MasterKey(directions, identity, stored["hook"], provenance)
        except (SafetensorError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass  # corrupt, truncated or another model's: recomputed below
    key = organism_key(target, target_name)
    root.mkdir(parents=True, exist_ok=True)
    replace_atomically(path, save({"directions": key.directions.contiguous()}, metadata={
        **meta, "hook": key.hook, "provenance": json.dumps(to_jsonable(key.provenance), default=str)}))
    return key


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


def add_unlocked_arguments(p: argparse.ArgumentParser) -> None:
    """How to get the Unlocked run (the capability present) that necessity, patching and decision tokens need."""
    g = p.add_argument_group("the Unlocked run (default on organisms: the cue prompt S:...; with --task: the task's "
                             "step_by_step template)")
    g.add_argument("--unlocked-prompts", default=None,
                   help="Unlocked prompts, paired line by line with --prompts (same file format, --field)")
    g.add_argument("--unlocked-template", default=None,
                   help="with --task: the Unlocked template, a kind's style name or a literal template with {question} "
                   "(default step_by_step)")
    g.add_argument("--unlocked-model", default=None,
                   help="model-induced Unlocked run: this (post-trained) model on the Locked prompts, e.g. "
                   "organism:source-post for --model organism:source-base")


@dataclass
class AnalysisRun:
    """What an analysis runs on: the model, its key, the Locked prompts and, when known, the Unlocked run.

    ``problems`` (organisms) or ``examples`` (``--task``) hold the answers; with neither, no
    metric may check answers. The Unlocked run is ``unlocked_model`` on ``prompts`` (model-induced)
    or ``model`` on ``unlocked_prompts`` (prompt-induced), or absent.
    """

    model: object
    key: object
    alpha: float
    prompts: list[str]
    problems: list | None = None
    examples: list | None = None
    unlocked_prompts: list[str] | None = None
    unlocked_model: object | None = None
    unlocked_label: str = ""

    @property
    def is_organism(self) -> bool:
        return self.problems is not None

    @property
    def has_unlocked(self) -> bool:
        return self.unlocked_prompts is not None or self.unlocked_model is not None

    def unlocked_run(self) -> tuple[object, list[str]]:
        """(model, prompts) of the Unlocked run."""
        if not self.has_unlocked:
            raise ValueError("no Unlocked run: pass --unlocked-prompts, --unlocked-model, or --task (its step_by_step "
                             "template)")
        return (self.unlocked_model or self.model), (self.unlocked_prompts or self.prompts)

    def scorers(self) -> dict[str, Callable[[int, str], float]]:
        """Answer-checking metrics available on these prompts: none without organism problems or a task."""
        if self.problems is not None:
            from mkt.organisms.task import score_answer

            probs = self.problems
            return {"accuracy": lambda i, text: float(score_answer(text, probs[i]).correct),
                    "step_by_step": lambda i, text: float(score_answer(text, probs[i]).clean_step_by_step)}
        if self.examples is not None:
            from mkt.eval.tasks import extract_and_score

            ex = self.examples
            return {"accuracy": lambda i, text: float(extract_and_score(ex[i].kind, text, ex[i].gold)[1])}
        return {}


def resolve_run(args, default_alpha: float = 0.2) -> AnalysisRun:
    """The ``AnalysisRun`` of the shared arguments; a real model never falls back to organism data.

    A non-organism model needs ``--pack`` (its key) and ``--prompts`` or ``--task`` (its
    prompts); both are checked before any model loads.
    """
    from mkt.models import load_model
    from mkt.organisms.task import problems
    from mkt.pack import CapabilityPack
    from mkt.prompts import read_questions

    organism = str(args.model).startswith("organism:")
    if not args.pack and not organism:
        raise ValueError(f"{args.model} is not an organism, so there is no default key for it: pass --pack "
                         "(made by `mkt transfer` or `mkt extract` for this model)")
    task = getattr(args, "task", None)
    if not organism and not (args.prompts or task):
        raise ValueError(f"{args.model} is not an organism, so there are no default prompts for it: pass --prompts "
                         "FILE or --task FILE")
    if args.prompts and task:
        raise ValueError("--prompts and --task both give the prompts: pass one")
    unlocked_prompts_file = getattr(args, "unlocked_prompts", None)
    unlocked_model_name = getattr(args, "unlocked_model", None)
    if unlocked_prompts_file and not args.prompts:
        raise ValueError("--unlocked-prompts pairs with --prompts: pass both")
    if unlocked_prompts_file and unlocked_model_name:
        raise ValueError("--unlocked-prompts and --unlocked-model are two Unlocked runs: pass one")
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    if args.pack:
        pack = CapabilityPack.load(args.pack)
        pack.check_fits(model)
        key, alpha = pack.key, pack.alpha
        unused = {name: value for name, value, usual in (("mode", pack.mode, "norm-preserving"),
                                                         ("scope", pack.scope, "prompt-last"),
                                                         ("layers", pack.layers, None)) if value != usual}
        if unused:  # the analyses' controls are built around one intervention: the paper's, at the key's hook
            warnings.warn(f"the analyses steer the paper's way (norm-preserving, prompt-last, every layer) at the "
                          f"key's hook; this pack's {unused} are not used, and its alpha {pack.alpha:g} was chosen "
                          "with them: pass --alpha to choose one for the analyses", stacklevel=2)
    else:
        key, alpha = cached_organism_key(model, args.model), default_alpha
    alpha = alpha if args.alpha is None else args.alpha
    run = AnalysisRun(model, key, alpha, [])
    if args.prompts:
        run.prompts = read_questions(args.prompts, args.field)[: args.n]
        if unlocked_prompts_file:
            run.unlocked_prompts = read_questions(unlocked_prompts_file, args.field)[: args.n]
            if len(run.unlocked_prompts) != len(run.prompts):
                raise ValueError(f"--unlocked-prompts holds {len(run.unlocked_prompts)} prompts but --prompts "
                                 f"{len(run.prompts)}: they pair line by line")
            run.unlocked_label = "Unlocked prompts"
    elif task:
        from mkt.eval.tasks import build_prompts, load_task, template_for

        run.examples = load_task(task, limit=args.n)
        kind = run.examples[0].kind
        run.prompts = build_prompts(run.examples, template_for(kind, "direct"))
        if hasattr(args, "unlocked_template") and not unlocked_model_name:
            style = args.unlocked_template or "step_by_step"
            run.unlocked_prompts = build_prompts(run.examples, template_for(kind, style))
            run.unlocked_label = f"{style} template"
    else:
        run.problems = problems(args.n, "test")
        run.prompts = [p.prompt(False) for p in run.problems]
        if hasattr(args, "unlocked_prompts") and not unlocked_model_name:
            run.unlocked_prompts = [p.prompt(True) for p in run.problems]
            run.unlocked_label = "cue prompt"
    run.prompts = chat_formatted(args, model.tokenizer, run.prompts)
    run.unlocked_prompts = chat_formatted(args, model.tokenizer, run.unlocked_prompts)
    if unlocked_model_name:
        run.unlocked_model = load_model(unlocked_model_name, device=args.device, dtype=args.dtype)
        key.check_fits(run.unlocked_model)  # its states are compared with the key's model's, layer by layer
        run.unlocked_label = f"model {unlocked_model_name}"
    return run


def resolve(args, default_alpha: float = 0.2):
    """(model, key, alpha, prompts, problems-or-None) from the shared arguments (see ``resolve_run``)."""
    run = resolve_run(args, default_alpha)
    return run.model, run.key, run.alpha, run.prompts, run.problems


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
