"""Does a model's answer reason step by step, answer directly, or fall apart? A rule-based detector.

The step-by-step rate of issue 19 counts outputs labelled ``step-by-step``; ``direct`` and
``degenerate`` both count as failures, so a key that breaks the model (an answer that is one junk
token repeated, e.g. ``"ermeisterermeister..."``) never scores as reasoning.

The rules (checked in this order on the text up to ``WINDOW`` characters, where a reader decides):

1. **degenerate**: no letters or digits; or a unit of 2-30 characters repeated ``REPEAT_RUN``
   or more times in a row (``"ermeister ermeister ..."``, ``"= = = ="``); or fewer than
   ``MIN_DISTINCT`` distinct words per word among the first 40 words; or more than
   ``MAX_ODD_CHARS`` of the characters outside letters, digits, whitespace and ASCII punctuation.
2. **step-by-step**: an opening that announces working (``First``, ``Step 1``, ``1.``,
   ``Let's``, ``We need``, ``To find``, ...); or at least ``MIN_STEPS`` steps, a step being a
   line or sentence that does arithmetic (``a op b``, or ``= number``) or begins a numbered or
   bulleted item or a sequencing word (``Then``, ``Next``, ``So``, ...).
3. **direct**: anything else (a bare number, one sentence stating the answer).

NOT YET VALIDATED: the rules were written before any real output was read, from the pilot's
failures (issue 19). Until outputs labelled by hand are checked in with the agreement on a
held-out half asserted (docs/real-models.md, "The real-model study"), do not rest a verdict on it.
"""

from __future__ import annotations

import re

STEPS, DIRECT, DEGENERATE = "step-by-step", "direct", "degenerate"
LABELS = (STEPS, DIRECT, DEGENERATE)

WINDOW = 400  # characters read: the opening decides, as for a reader; later loops of a small model do not
REPEAT_RUN = 4  # a unit repeated this many times in a row is degenerate
MIN_DISTINCT = 0.3  # distinct words / words among the first 40, below which the text is degenerate
MAX_ODD_CHARS = 0.3  # share of characters outside letters, digits, whitespace and ASCII punctuation
MIN_STEPS = 2

_OPENING = re.compile(
    r"^\W*(first(ly)?\b|step\s*1\b|1\s*[.):]\s|let'?s\b|let us\b|we (need|know|have|can|are|will|must)\b|"
    r"to (find|solve|calculate|determine|figure|answer|get|work)\b|i (need|will|know)\b)",
    re.IGNORECASE,
)
_ARITHMETIC = re.compile(r"\d[\d,.]*\s*[-+*/x×÷]\s*\$?\d|=\s*\$?\d")
_ITEM = re.compile(r"^\s*(\d+[.):]|step\s*\d+|[-*•]\s|(then|next|so|after|finally|now|therefore|thus|since|"
                   r"this means|that means)\b)", re.IGNORECASE)
_REPEAT = re.compile(r"(\S.{1,29}?)\1{%d,}" % (REPEAT_RUN - 1), re.DOTALL)
_WORD = re.compile(r"[^\W_]+")


def _units(text: str) -> list[str]:
    """Lines, and sentences within them: the candidate steps."""
    return [s for line in text.splitlines() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", line) if s.strip()]


def is_degenerate(text: str) -> bool:
    """Whether ``text`` (read up to ``WINDOW`` characters) is junk rather than language."""
    head = text[:WINDOW]
    if not _WORD.search(head):
        return True
    if _REPEAT.search(head):
        return True
    words = _WORD.findall(head.lower())[:40]
    if len(words) >= 10 and len(set(words)) / len(words) < MIN_DISTINCT:
        return True
    visible = [c for c in head if not c.isspace()]
    odd = sum(1 for c in visible if not (c.isascii() or c.isalnum()))
    return odd > MAX_ODD_CHARS * len(visible)


def classify(text: str) -> str:
    """``step-by-step``, ``direct`` or ``degenerate`` (the rules in this module's docstring).

    Args:
        text: the model's continuation after the prompt (without the prompt).

    Returns:
        One of ``LABELS``.
    """
    if is_degenerate(text):
        return DEGENERATE
    head = text[:WINDOW].strip()
    if _OPENING.search(head):
        return STEPS
    steps = sum(1 for unit in _units(head) if _ARITHMETIC.search(unit) or _ITEM.search(unit))
    return STEPS if steps >= MIN_STEPS else DIRECT


def is_step_by_step(text: str) -> bool:
    """Whether ``text`` reasons step by step (``classify(text) == "step-by-step"``)."""
    return classify(text) == STEPS
