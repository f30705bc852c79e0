"""Benchmark tasks: loading examples, building prompts, and scoring outputs.

Task kinds: ``gsm8k`` (``question``, ``answer`` ending in ``#### N``), ``math`` (MATH:
``problem``, ``solution`` with ``\\boxed{}``), ``agieval-math`` (``question``, ``answer``,
``other.solution``) and ``organism`` (the built-in addition task). Templates are data
(``templates.json``), not code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mkt.prompts import PromptFormat, PromptTemplate, apply_chat, read_jsonl

TEMPLATES: dict = json.loads((Path(__file__).parent / "templates.json").read_text())
KINDS = ("gsm8k", "math", "agieval-math", "organism")


@dataclass(frozen=True)
class Example:
    """One benchmark item; ``gold`` is the normalised reference answer."""

    id: str
    question: str
    gold: str
    kind: str
    solution: str = ""  # worked reference solution, used for few-shot demos


def scorer_kind(kind: str) -> str:
    """Which answer checker a task kind uses."""
    return {"gsm8k": "gsm8k", "math": "math", "agieval-math": "math", "organism": "organism"}[kind]


def _detect_kind(record: dict, path: Path) -> str:
    if "problem" in record and "solution" in record:
        return "math"
    if isinstance(record.get("other"), dict) and "solution" in record["other"]:
        return "agieval-math"
    if "question" in record and "####" in str(record.get("answer", "")):
        return "gsm8k"
    raise ValueError(
        f"cannot tell the task kind of {path} from its fields {sorted(record)}: pass kind= one of {KINDS}"
    )


TASK_FIELDS = {"gsm8k": ("question", "answer"), "math": ("problem", "solution"),
               "agieval-math": ("question", "answer", "other.solution")}


def _field(record: dict, name: str):
    """``record[name]``, with ``a.b`` reaching into a nested object; None when absent."""
    value = record
    for part in name.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _example(record: dict, index: int, kind: str, where: str = "record") -> Example:
    """One example; a missing or mistyped field is refused naming ``where`` (the file and line)."""
    from mkt.eval.answers import extract_gsm8k_gold, extract_math_gold, normalize_math

    if kind not in TASK_FIELDS:
        raise ValueError(f"unknown task kind {kind!r}: use one of {KINDS}")
    for name in TASK_FIELDS[kind]:
        value = _field(record, name)
        if value is None:
            raise ValueError(f"{where} lacks field {name!r} that a {kind!r} task needs: fix the file or pass --kind")
        if not isinstance(value, str) and not (name == "answer" and kind == "agieval-math"
                                               and isinstance(value, (int, float)) and not isinstance(value, bool)):
            raise ValueError(f"{where}: field {name!r} is a JSON {type(value).__name__}, not a string: fix the file")
    if kind == "gsm8k" and "####" not in record["answer"]:
        raise ValueError(f"{where}: a GSM8K answer ends in '#### N', this one has no '####': fix the file or pass "
                         "--kind")
    rid = str(record.get("id", index))
    if kind == "gsm8k":
        gold = extract_gsm8k_gold(record["answer"])
        worked = record["answer"].split("####")[0].strip()
        return Example(rid, record["question"], gold, kind, f"{worked} The answer is {gold}.")
    if kind == "math":
        return Example(rid, record["problem"], extract_math_gold(record["solution"]), kind, record["solution"])
    return Example(rid, record["question"], normalize_math(str(record["answer"])), kind, record["other"]["solution"])


def load_jsonl(path: str | Path, kind: str | None = None, limit: int | None = None) -> list[Example]:
    """Examples from a local JSONL file; the kind is detected from the fields when not given."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no task file at {path}")
    records = read_jsonl(path)
    if not records:
        raise ValueError(f"{path} holds no examples")
    kind = kind or _detect_kind(records[0][1], path)
    examples = [_example(r, i, kind, f"{path}:{line}") for i, (line, r) in enumerate(records)]
    return examples[:limit] if limit else examples


def organism_examples(n: int, split: str = "test", seed: int = 0) -> list[Example]:
    """``n`` organism problems of ``split`` as task examples (gold: the total; reference: the step-by-step answer)."""
    from mkt.eval.organism_task import problems

    return [Example(f"{split}-{i}", p.question, str(p.total), "organism", p.step_by_step_answer())
            for i, p in enumerate(problems(n, split, seed))]


HUB_DATASETS = {"gsm8k": ("openai/gsm8k", "main", "test", "gsm8k"),
                "math": ("hendrycks/competition_math", None, "test", "math")}


def load_task(name_or_path: str, kind: str | None = None, limit: int | None = None, split: str = "test",
              seed: int = 0) -> list[Example]:
    """Examples from a JSONL file, ``organism``, or a dataset name through HF ``datasets``."""
    if name_or_path == "organism":
        return organism_examples(limit or 200, split, seed)
    if Path(name_or_path).exists():
        return load_jsonl(name_or_path, kind, limit)
    hub = HUB_DATASETS.get(name_or_path, (name_or_path, None, split, kind))
    try:
        import datasets

        rows = datasets.load_dataset(hub[0], hub[1], split=hub[2])
    except ImportError:
        raise ValueError(
            f"{name_or_path!r} is not a local file and the `datasets` library is not installed: "
            "pass the path of a local JSONL file (or pip install datasets when online)"
        ) from None
    except Exception as err:  # offline, unknown name, gated dataset...
        raise ValueError(
            f"could not load dataset {name_or_path!r} from the hub ({type(err).__name__}); offline? "
            "pass the path of a local JSONL file instead"
        ) from None
    kind = hub[3] or kind
    if kind is None:
        raise ValueError(f"pass kind= one of {KINDS} for dataset {name_or_path!r}")
    examples = [_example(dict(r), i, kind) for i, r in enumerate(rows)]
    return examples[:limit] if limit else examples


def template_for(kind: str, style: str) -> PromptTemplate:
    """The ``direct`` or ``step_by_step`` template of a task kind, or a literal template."""
    table = TEMPLATES[scorer_kind(kind)]
    if style in ("direct", "step_by_step"):
        return PromptTemplate(table[style])
    return PromptTemplate(style)  # a literal template with {question}


def default_stop(kind: str) -> list[str]:
    """Stop strings for base-model prompts of a task kind: a base model that has answered goes
    on to write the next "Question: ..." of an imagined few-shot page, whose numbers the
    scorer would otherwise read as the answer."""
    return list(TEMPLATES[scorer_kind(kind)]["stop"])


def default_max_new_tokens(kind: str) -> int:
    """The paper's budgets: 512 new tokens for chain-of-thought on GSM8K-style tasks, 1024 for
    MATH-style solutions (a shorter budget cuts real chain-of-thought before its answer)."""
    return int(TEMPLATES[scorer_kind(kind)]["max_new_tokens"])


def build_prompts(examples: list[Example], template: PromptTemplate | PromptFormat, demos: list[Example] = (),
                  tokenizer=None, chat: bool = False) -> list[str]:
    """Prompts with optional few-shot demos, in the model's chat template when asked.

    Demos are formatted with the same template, followed by their worked solution; with a
    chat format the whole few-shot text is the user turn.
    """
    if not examples:
        raise ValueError("no examples to build prompts for")
    fmt = PromptFormat.of(template)
    answer_fmt = TEMPLATES[scorer_kind(examples[0].kind)]["demo_answer"]
    prefix = "".join(fmt.template.format(d.question) + answer_fmt.format(answer=d.solution) for d in demos)
    prompts = [prefix + fmt.template.format(e.question) for e in examples]
    if chat or fmt.chat:
        if tokenizer is None:
            raise ValueError("a chat format needs the model's tokenizer (tokenizer=model.tokenizer)")
        prompts = [apply_chat(tokenizer, p, fmt.system, **dict(fmt.chat_kwargs)) for p in prompts]
    return prompts


def extract_and_score(kind: str, output: str, gold: str) -> tuple[str | None, bool]:
    """The answer read from ``output`` and whether it equals ``gold``."""
    from mkt.eval.answers import (
        extract_last_number,
        last_boxed,
        normalize_math,
        score_gsm8k,
        score_math,
    )

    scorer = scorer_kind(kind)
    if scorer == "gsm8k":
        return extract_last_number(output), score_gsm8k(output, gold)
    if scorer == "math":
        boxed = last_boxed(output)
        return (normalize_math(boxed) if boxed is not None else None), score_math(output, gold)
    text = output.strip()  # the organisms: the number after the last '#', or a direct answer's whole text
    answer = text.rsplit("#", 1)[-1] if "#" in text else text or None
    return answer, answer == gold


def task_probe(examples: list[Example], prompts: list[str]):
    """A ``mkt.significance.Probe`` scoring ``correct`` on the examples' gold answers."""
    from mkt.significance import Probe

    return Probe(prompts, lambda texts: {"correct": [extract_and_score(e.kind, t, e.gold)[1]
                                                     for e, t in zip(examples, texts)]})
