"""What the analyses share: model/key/prompt options and arguments, the run they resolve to, JSON output."""

from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from mkt.cliargs import add_model_arguments, finite_float, model_loading, positive_int


@dataclass(frozen=True)
class ModelOptions:
    """How to load a model (``mkt.cliargs.add_model_arguments``; ``mkt.models.load_model``'s arguments)."""

    device: str | None
    dtype: str
    device_map: str | None
    n_devices: int | None
    trust_remote_code: bool


@dataclass(frozen=True)
class RunOptions(ModelOptions):
    """What an analysis runs on (``add_model_key_arguments``): the model, its key (a pack, or on an
    organism the organism key), the prompts (a file, a task, or the organism's) and where to write."""

    model: str | None
    pack: str | None
    prompts: str | None
    task: str | None
    field: str
    chat: bool
    n: int
    alpha: float | None
    out: str | None


@dataclass(frozen=True)
class UnlockedRunOptions(RunOptions):
    """``RunOptions`` of an analysis that also compares with the Unlocked run (``add_unlocked_arguments``)."""

    unlocked_prompts: str | None
    unlocked_template: str | None
    unlocked_model: str | None


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
    add_model_arguments(p, batch_size=False)
    p.add_argument("--out", default=None, help="output directory (default runs/<analysis>)")


def add_chat_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--chat", action="store_true",
                   help="put each prompt (from --prompts or a --task template, and its Unlocked pair) inside the "
                   "model's chat template as the user turn, ending where the answer begins")


def chat_formatted(options: RunOptions, tokenizer, prompts: list[str] | None) -> list[str] | None:
    """``prompts`` as user turns of the tokenizer's chat template with ``chat``; as given otherwise."""
    if not options.chat or prompts is None:
        return prompts
    from mkt.prompts import apply_chat

    return [apply_chat(tokenizer, p) for p in prompts]


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
            from mkt.eval.organism_task import score_answer

            probs = self.problems
            return {"accuracy": lambda i, text: float(score_answer(text, probs[i]).correct),
                    "step_by_step": lambda i, text: float(score_answer(text, probs[i]).clean_step_by_step)}
        if self.examples is not None:
            from mkt.eval.tasks import extract_and_score

            ex = self.examples
            return {"accuracy": lambda i, text: float(extract_and_score(ex[i].kind, text, ex[i].gold)[1])}
        return {}


def resolve_run(options: RunOptions, default_alpha: float = 0.2) -> AnalysisRun:
    """The ``AnalysisRun`` of the shared options; a real model never falls back to organism data.

    A non-organism model needs ``--pack`` (its key) and ``--prompts`` or ``--task`` (its
    prompts); both are checked before any model loads.
    """
    from mkt.eval.organism_task import problems
    from mkt.models import load_model
    from mkt.pack import CapabilityPack
    from mkt.prompts import read_questions

    organism = str(options.model).startswith("organism:")
    if not options.pack and not organism:
        raise ValueError(f"{options.model} is not an organism, so there is no default key for it: pass --pack "
                         "(made by `mkt transfer` or `mkt extract` for this model)")
    task = options.task
    if not organism and not (options.prompts or task):
        raise ValueError(f"{options.model} is not an organism, so there are no default prompts for it: pass --prompts "
                         "FILE or --task FILE")
    if options.prompts and task:
        raise ValueError("--prompts and --task both give the prompts: pass one")
    compares_unlocked = isinstance(options, UnlockedRunOptions)
    unlocked_prompts_file = options.unlocked_prompts if compares_unlocked else None
    unlocked_model_name = options.unlocked_model if compares_unlocked else None
    if unlocked_prompts_file and not options.prompts:
        raise ValueError("--unlocked-prompts pairs with --prompts: pass both")
    if unlocked_prompts_file and unlocked_model_name:
        raise ValueError("--unlocked-prompts and --unlocked-model are two Unlocked runs: pass one")
    model = load_model(options.model, **model_loading(options))
    if options.pack:
        pack = CapabilityPack.load(options.pack)
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
        from mkt.organisms.keys import cached_organism_key

        key, alpha = cached_organism_key(model, options.model), default_alpha
    alpha = alpha if options.alpha is None else options.alpha
    run = AnalysisRun(model, key, alpha, [])
    if options.prompts:
        run.prompts = read_questions(options.prompts, options.field)[: options.n]
        if unlocked_prompts_file:
            run.unlocked_prompts = read_questions(unlocked_prompts_file, options.field)[: options.n]
            if len(run.unlocked_prompts) != len(run.prompts):
                raise ValueError(f"--unlocked-prompts holds {len(run.unlocked_prompts)} prompts but --prompts "
                                 f"{len(run.prompts)}: they pair line by line")
            run.unlocked_label = "Unlocked prompts"
    elif task:
        from mkt.eval.tasks import build_prompts, load_task, template_for

        run.examples = load_task(task, limit=options.n)
        kind = run.examples[0].kind
        run.prompts = build_prompts(run.examples, template_for(kind, "direct"))
        if compares_unlocked and not unlocked_model_name:
            style = options.unlocked_template or "step_by_step"
            run.unlocked_prompts = build_prompts(run.examples, template_for(kind, style))
            run.unlocked_label = f"{style} template"
    else:
        run.problems = problems(options.n, "test")
        run.prompts = [p.prompt(False) for p in run.problems]
        if compares_unlocked and not unlocked_model_name:
            run.unlocked_prompts = [p.prompt(True) for p in run.problems]
            run.unlocked_label = "cue prompt"
    run.prompts = chat_formatted(options, model.tokenizer, run.prompts)
    run.unlocked_prompts = chat_formatted(options, model.tokenizer, run.unlocked_prompts)
    if unlocked_model_name:
        run.unlocked_model = load_model(unlocked_model_name, **model_loading(options))
        key.check_fits(run.unlocked_model)  # its states are compared with the key's model's, layer by layer
        run.unlocked_label = f"model {unlocked_model_name}"
    return run


def resolve(options: RunOptions, default_alpha: float = 0.2):
    """(model, key, alpha, prompts, problems-or-None) from the shared options (see ``resolve_run``)."""
    run = resolve_run(options, default_alpha)
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


def save_figure(fig, path: str | Path, title: str | None = None, dpi: int = 110) -> None:
    """``fig`` under ``title``, laid out, written to ``path`` (PNG) and closed."""
    if title is not None:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


def write_outputs(result, plot, out: str | Path, name: str) -> Path:
    """``<out>/<name>.json`` and ``<out>/<name>.png`` for one analysis result."""
    out = Path(out)
    save_json(result, out / f"{name}.json")
    plot(result, out / f"{name}.png")
    return out
