"""Prompt templates: text with one ``{question}`` slot."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PromptTemplate:
    """A template such as ``"Q: {question}\\nA: Let's think step by step."``."""

    text: str

    def __post_init__(self) -> None:
        if "{question}" not in self.text:
            raise ValueError(
                f"template {self.text!r} has no {{question}} slot: write where the question goes, "
                "e.g. 'Q: {question}\\nA:'"
            )
        try:
            self.text.format(question="")
        except (KeyError, IndexError, ValueError) as err:
            raise ValueError(
                f"template {self.text!r} has braces other than {{question}} ({err}); double literal "
                "braces: '{{' and '}}'"
            ) from None

    @classmethod
    def of(cls, template: "str | PromptTemplate") -> "PromptTemplate":
        return template if isinstance(template, PromptTemplate) else cls(template)

    def format(self, question: str) -> str:
        return self.text.format(question=question)

    def format_all(self, questions: list[str]) -> list[str]:
        if not questions:
            raise ValueError("empty question set: pass at least one question")
        return [self.format(q) for q in questions]


def read_questions(path: str | Path, field: str = "question") -> list[str]:
    """Questions from a text file (one per non-empty line) or JSONL (``field`` of each record)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no prompt file at {path}")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if path.suffix == ".jsonl":
        out = []
        for i, ln in enumerate(lines, 1):
            rec = json.loads(ln)
            if field not in rec:
                raise ValueError(f"{path}:{i} has no field {field!r} (fields: {sorted(rec)}); pass --field")
            out.append(str(rec[field]))
        lines = out
    if not lines:
        raise ValueError(f"{path} holds no questions")
    return lines
