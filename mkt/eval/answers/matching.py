"""Whether a MATH output answers its problem: ``math_equal`` and ``score_math``."""

from __future__ import annotations

import re

from mkt.eval.answers.brackets import last_boxed
from mkt.eval.answers.normalize import _UNIT_SYMBOL, normalize_math
from mkt.eval.answers.numbers import _ANSWER_IS_RE
from mkt.eval.answers.structured import _equal_structured

_SPACED_SYMBOL_RE = re.compile(rf"(?<=\d)\s+(?={_UNIT_SYMBOL})")


def _join_symbol(s: str) -> str | None:
    """``"5 h"`` -> ``"5h"``: a one-letter unit read as a variable; None when there is none."""
    joined = _SPACED_SYMBOL_RE.sub("", s)
    return joined if joined != s else None


def math_equal(pred: str | None, gold: str) -> bool:
    """Whether a predicted MATH answer is equivalent to the gold answer.

    First the normalised strings are compared (cheap, and enough for most pairs); then
    structure is compared piecewise: tuples and intervals elementwise with matching
    brackets, ``\\cup`` unions and bare comma lists as multisets, matrices cell by cell;
    each scalar pair is finally compared symbolically with sympy (exactly for numbers,
    ``\\frac{1}{2}`` == ``0.5``; at fixed evaluation points for expressions with
    variables). Expressions stay small (long strings are not parsed, huge powers and
    factorials are refused), so no timeout is needed.

    Args:
        pred: The predicted answer (raw LaTeX), or None when none was extracted.
        gold: The gold answer (raw or normalised LaTeX).

    Returns:
        True when equivalent. Never raises: any failure counts as not equal.
    """
    try:
        if pred is None or gold is None:
            return False
        p, g = normalize_math(pred), normalize_math(gold)
        if not p or not g:
            return False
        if p == g or _equal_structured(p, g):
            return True
        # "5 h" drops a one-letter unit; against a gold "5h" (a product) it is read with its
        # letter too. Only a letter right after a number and a space, either side.
        joined_p, joined_g = _join_symbol(pred), _join_symbol(gold)
        if joined_p is None and joined_g is None:
            return False
        p2 = normalize_math(joined_p) if joined_p is not None else p
        g2 = normalize_math(joined_g) if joined_g is not None else g
        return p2 == g2 or bool(_equal_structured(p2, g2))
    except Exception:  # noqa: BLE001 - scoring must never crash an evaluation run
        return False


_DOLLAR_MATH_RE = re.compile(r"\$\$?([^$]+?)\$\$?|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)


def _answer_from_text(output: str) -> str | None:
    """Fallback when the output has no box: "The answer is X", else the last ``$...$``."""
    matches = list(_ANSWER_IS_RE.finditer(output))
    if matches:
        rest = matches[-1].group("rest").replace("**", "").strip()  # markdown bold
        math = _DOLLAR_MATH_RE.search(rest)
        if math:
            return next(g for g in math.groups() if g is not None).strip()
        rest = re.sub(r"\.\s*$", "", rest).strip()
        if rest:
            return rest
    maths = list(_DOLLAR_MATH_RE.finditer(output))
    if maths:
        return next(g for g in maths[-1].groups() if g is not None).strip()
    return None


def score_math(output: str, gold: str) -> bool:
    """Whether a model output answers a MATH problem correctly.

    The prediction is the last ``\\boxed{...}`` of the output; without one, the text after
    "The answer is", else the last ``$...$`` math span.

    Args:
        output: Model output.
        gold: The gold answer (raw or normalised LaTeX, e.g. from
            :func:`extract_math_gold`).

    Returns:
        :func:`math_equal` of the extracted prediction and the gold answer.
    """
    if not output:
        return False
    pred = last_boxed(output)
    if pred is None:
        pred = _answer_from_text(output)
    return math_equal(pred, gold)
