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
        if isinstance(questions, str):
            raise TypeError("questions must be a list of strings, not one string (it would be read as one question "
                            "per character): pass [question]")
        if not questions:
            raise ValueError("empty question set: pass at least one question")
        return [self.format(q) for q in questions]


def apply_chat(tokenizer, user: str, system: str | None = None, **template_kwargs) -> str:
    """``user`` (and an optional system message) inside the tokenizer's chat template, ending
    where the assistant's answer begins (the generation prompt)."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("this tokenizer has no chat template: use a plain template (drop the chat option)")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **template_kwargs)


@dataclass(frozen=True)
class PromptFormat:
    """How one model is asked a question: a template, used as is or as the user turn of the
    model's own chat template.

    Two models in a transfer each have their own format: a Qwen Source asked in ChatML and a
    Llama Target asked in its header format, or a base Target asked plainly. Rendering needs
    the model's tokenizer, which owns the chat template.

    Args:
        template: the text with ``{question}``.
        chat: wrap it in the tokenizer's chat template (with the generation prompt).
        system: an optional system message (chat only).
        chat_kwargs: extra arguments of the chat template as (name, value) pairs, e.g.
            ``(("enable_thinking", False),)`` for Qwen3.
    """

    template: PromptTemplate
    chat: bool = False
    system: str | None = None
    chat_kwargs: tuple = ()

    def __post_init__(self) -> None:
        if self.system is not None and not self.chat:
            raise ValueError("a system message needs the chat template: pass chat=True or put it in the template")

    @classmethod
    def of(cls, fmt: "str | PromptTemplate | PromptFormat") -> "PromptFormat":
        return fmt if isinstance(fmt, PromptFormat) else cls(PromptTemplate.of(fmt))

    def render(self, tokenizer, question: str) -> str:
        text = self.template.format(question)
        return apply_chat(tokenizer, text, self.system, **dict(self.chat_kwargs)) if self.chat else text

    def render_all(self, tokenizer, questions: list[str]) -> list[str]:
        texts = self.template.format_all(questions)
        if not self.chat:
            return texts
        return [apply_chat(tokenizer, t, self.system, **dict(self.chat_kwargs)) for t in texts]

    def describe(self) -> dict:
        """A JSON-able record of the format (for provenance and run configurations)."""
        return dict(template=self.template.text, chat=self.chat, system=self.system,
                    chat_kwargs=dict(self.chat_kwargs))


def read_lines(path: str | Path) -> list[tuple[int, str]]:
    """(line number, text) of each non-blank line of a UTF-8 file, split on newlines only.

    ``str.splitlines`` would also split on U+2028 and other separators that can sit inside
    a prompt; a file that is not UTF-8 is refused with the place of the first bad byte.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no file at {path}: check the path")
    if not path.is_file():
        raise ValueError(f"{path} is a directory, not a file of prompts: pass the file itself")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path} cannot be read ({err.strerror or err}): check its permissions") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line} is not UTF-8 (byte {err.start}): save the file as UTF-8") from None
    lines = text.split("\n")
    return [(i, ln.rstrip("\r")) for i, ln in enumerate(lines, 1) if ln.strip()]


def read_jsonl(path: str | Path) -> list[tuple[int, dict]]:
    """(line number, record) of each non-blank line; every line must be one JSON object."""
    records = []
    for i, line in read_lines(path):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{i} is not valid JSON ({err.msg}): fix or remove that line") from None
        except RecursionError:
            raise ValueError(f"{path}:{i} nests JSON too deeply to read: fix or remove that line") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}:{i} is a JSON {type(record).__name__}, not an object with fields")
        records.append((i, record))
    return records


def is_jsonl(path: str | Path) -> bool:
    """Whether ``path`` is read as JSONL (one record per line) rather than one prompt per line."""
    return Path(path).suffix.lower() == ".jsonl"


def read_questions(path: str | Path, field: str = "question") -> list[str]:
    """Questions from a text file (one per non-empty line, by definition) or JSONL (``field`` of each record).

    Prompts that span lines (chat formats) belong in JSONL.
    """
    path = Path(path)
    if is_jsonl(path):
        out = []
        for i, rec in read_jsonl(path):
            if field not in rec:
                raise ValueError(f"{path}:{i} has no field {field!r} (fields: {sorted(rec)[:10]}); pass --field")
            if not isinstance(rec[field], str):
                raise ValueError(f"{path}:{i}: field {field!r} is a JSON {type(rec[field]).__name__}, not a string: "
                                 "write the question as a string")
            out.append(rec[field])
    else:
        out = [line for _, line in read_lines(path)]
    if not out:
        raise ValueError(f"{path} holds no questions")
    return out
