"""Does a model's answer reason step by step, answer directly, or fall apart? A rule-based detector.

The step-by-step rate of issue 19 counts outputs labelled ``step-by-step``; ``direct`` and
``degenerate`` both count as failures, so a key that breaks the model (an answer that is one junk
token repeated, e.g. ``"ermeister..."``) never scores as reasoning.

The rules (checked on the text up to ``WINDOW`` characters, where a reader decides):

1. **degenerate**: no letters or digits; or more than ``MAX_ODD_CHARS`` of the characters outside
   letters, digits, whitespace and ASCII punctuation; or it asks instead of answering (a question
   and no arithmetic: the model echoes the question or invents another); or a sentence runs on
   past ``RUN_ON`` characters without ending (``"the 25k is the 25k is 25k ..."``).
2. Where the text starts **looping** (a unit of 2-30 characters repeated ``REPEAT_RUN`` or more
   times in a row, or a run of ``LOOP_WORDS`` words, numbers aside, met a third time), only the
   text before the loop counts: small models loop at the end of good working, and working that
   loops from its start is no working.
3. **step-by-step**: the text before any loop opens by announcing working (``First``, ``Step 1``,
   ``1.``, ``Let's``, ``We need``, ``To find``, ...) or holds at least ``MIN_STEPS`` steps, a step
   being a line or sentence that does arithmetic (``a op b``, or ``= number``) or begins a numbered
   or bulleted item or a sequencing word (``Then``, ``Next``, ``So``, ...); and where it loops,
   at least ``MIN_STEPS`` lines or sentences before the loop state a number (list numbering aside).
4. Otherwise **degenerate** where it loops, **direct** where it does not (a bare number, one
   sentence stating the answer).

Checked against 88 real outputs labelled by hand (Gemma-3-270M base and SmolLM2-135M-Instruct:
Locked, Unlocked and steered by their own key; docs/real-models.md, "Recognising step-by-step
answers"; tests/eval/data/step_by_step_labels.jsonl). On the held-out half (46 outputs, never
used to tune these rules) it agrees with the hand labels at accuracy 0.80 and Cohen's kappa 0.70
(the rules as first written, before any output was read: 0.67 and 0.52); on step-by-step or
not, the study's metric, accuracy 0.87 and kappa 0.69. Most disagreements are
outputs the labeller marked uncertain (template loops, an answer with a junk "explanation"); a
reader still decides where a verdict rests on a few outputs.
"""

from __future__ import annotations

import re
from collections import defaultdict

STEPS, DIRECT, DEGENERATE = "step-by-step", "direct", "degenerate"
LABELS = (STEPS, DIRECT, DEGENERATE)

WINDOW = 400  # characters read: the opening decides, as for a reader
REPEAT_RUN = 4  # a unit repeated this many times in a row is a loop
LOOP_WORDS = 8  # a run of this many words (numbers aside) met a third time is a loop
MAX_ODD_CHARS = 0.3  # share of characters outside letters, digits, whitespace and ASCII punctuation
MIN_STEPS = 2
RUN_ON = 200  # characters of one line or sentence without an end, beyond which the text has fallen apart

_OPENING = re.compile(
    r"^\W*(first(ly)?\b|step\s*1\b|1\s*[.):]\s|let'?s\b|let us\b|we (need|know|have|can|are|will|must)\b|"
    r"to (find|solve|calculate|determine|figure|answer|get|work)\b|i (need|will|know)\b)",
    re.IGNORECASE,
)
_ARITHMETIC = re.compile(r"\d[\d,.]*\s*[-+*/x×÷]\s*\$?\d|=\s*\$?\d")
_MARKER = re.compile(r"^\s*(\d+\s*[.):]|step\s*\d+\s*:?|[-*•])", re.IGNORECASE)
_ITEM = re.compile(r"^\s*(\d+[.):]|step\s*\d+|[-*•]\s|(then|next|so|after|finally|now|therefore|thus|since|"
                   r"this means|that means)\b)", re.IGNORECASE)
_REPEAT = re.compile(r"(\S.{1,29}?)\1{%d,}" % (REPEAT_RUN - 1), re.DOTALL)
_WORD = re.compile(r"[^\W_]+")


def _units(text: str) -> list[str]:
    """Lines, and sentences within them: the candidate steps."""
    return [s for line in text.splitlines() for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", line) if s.strip()]


def _is_junk(text: str) -> bool:
    """No letters or digits, or mostly characters outside letters, digits, whitespace and ASCII punctuation."""
    if not _WORD.search(text):
        return True
    visible = [c for c in text if not c.isspace()]
    odd = sum(1 for c in visible if not (c.isascii() or c.isalnum()))
    return odd > MAX_ODD_CHARS * len(visible)


def loop_start(text: str) -> int | None:
    """Where ``text`` starts repeating itself (a character offset), or None if it does not.

    The earlier of: the second copy of a unit repeated ``REPEAT_RUN`` times in a row; the second
    occurrence of a run of ``LOOP_WORDS`` words (every number counted as one and the same word)
    that occurs at least three times.
    """
    starts = []
    if m := _REPEAT.search(text):
        starts.append(m.start() + len(m.group(1)))
    words = list(_WORD.finditer(text))
    seen: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for i in range(len(words) - LOOP_WORDS + 1):
        run = tuple("#" if w.group().isdigit() else w.group().lower() for w in words[i:i + LOOP_WORDS])
        seen[run].append(words[i].start())
    starts += [at[1] for at in seen.values() if len(at) >= 3]
    return min(starts) if starts else None


def classify(text: str) -> str:
    """``step-by-step``, ``direct`` or ``degenerate`` (the rules in this module's docstring).

    Args:
        text: the model's continuation after the prompt (without the prompt).

    Returns:
        One of ``LABELS``.
    """
    head = text[:WINDOW]
    if _is_junk(head):
        return DEGENERATE
    if "?" in head and not _ARITHMETIC.search(head):
        return DEGENERATE
    if any(len(unit) > RUN_ON for unit in _units(head)):
        return DEGENERATE
    loop = loop_start(head)
    before = (head if loop is None else head[:loop]).strip()
    units = _units(before)
    steps = sum(1 for unit in units if _ARITHMETIC.search(unit) or _ITEM.search(unit))
    stepwise = bool(_OPENING.search(before)) or steps >= MIN_STEPS
    if loop is None:
        return STEPS if stepwise else DIRECT
    with_numbers = sum(1 for unit in units if re.search(r"\d", _MARKER.sub("", unit, count=1)))
    return STEPS if stepwise and with_numbers >= MIN_STEPS else DEGENERATE


def is_step_by_step(text: str) -> bool:
    """Whether ``text`` reasons step by step (``classify(text) == "step-by-step"``)."""
    return classify(text) == STEPS
