"""Numbers as written in prose, and GSM8K's answers: extraction, one canonical spelling, scoring."""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

# A number as written in prose: properly grouped thousands (1,234,567), plain digits, or a
# bare decimal (.5). The grouped form comes first so that "1,234" is not read as "1".
_NUM_BODY = r"(?:\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
# The minus sign only counts when it touches the number ("-5", "-$5", "$-5") and is not a
# hyphen or a subtraction: a letter, digit or closing bracket right before it makes it a
# dash ("3-4", "COVID-19").
_NUMBER_RE = re.compile(
    rf"(?P<sign>(?<![\w)\]])-)?(?:\$\s?)?(?P<sign2>(?<=\$)-)?(?P<num>{_NUM_BODY})"
)
# Digit-group separators other than a plain comma, each only where exactly three digits
# follow: TeX's "{,}" (a comma set without the space TeX puts after a list comma),
# MATH's ",\!", spacing commands ("1\,024", SI style) and the Unicode thin spaces. In
# prose they become plain commas, so that the grouping check of _NUM_BODY still applies.
_GROUP_SEP_RE = re.compile(r"(?<=\d)(?:\{,\}|,\\!|\\[,;:! ]|[\u2009\u202f])(?=\d{3}(?!\d))")
_NON_ASCII_DIGIT_RE = re.compile(r"(?![0-9])\d")
_EXPONENT_END_RE = re.compile(r"\^\s*\{?\s*$")
_FINAL_MARK_RE = re.compile(r"####\s*(?P<rest>[^\n]*)")
_ANSWER_IS_RE = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is|:)\s*:?\s*(?P<rest>[^\n]*)", re.IGNORECASE
)


def _ascii_digits(text: str) -> str:
    """Decimal digits of other scripts (fullwidth ``\uff11\uff12``...) as ASCII ones: regexes'
    ``\\d`` matches them, so they would otherwise reach the comparison unconverted."""
    if text.isascii():
        return text
    return _NON_ASCII_DIGIT_RE.sub(lambda m: str(unicodedata.digit(m.group(0))), text)


def _plain_digits(text: str) -> str:
    """Numbers in plain ASCII: ``"1{,}024"`` and ``"1\\,024"`` -> ``"1,024"``; the Unicode
    minus (U+2212) -> ``"-"``, a sign that would otherwise be lost (the number read as 12
    where the model wrote minus 12); digits of other scripts as ASCII digits."""
    text = _ascii_digits(text.replace("\u2212", "-"))
    # Plain prose, the common case, has none of the separators: skipping the regex there
    # keeps GSM8K scoring as fast as before (the scan costs more than the extraction).
    if "{,}" in text or "\\" in text or "\u2009" in text or "\u202f" in text:
        text = _GROUP_SEP_RE.sub(",", text)
    return text


def normalize_number(s: str) -> str | None:
    """Canonical spelling of a number, or None when ``s`` is not one number.

    Accepts a sign (the Unicode minus too), a ``$``, thousands separators (only correctly
    grouped ones, so that a list such as ``"1,23"`` is not silently merged; ``{,}``,
    ``,\\!``, ``\\,`` and thin spaces count as commas), a trailing ``%`` and a trailing
    period. Trailing zeros of decimals and leading zeros are dropped and ``-0`` becomes ``0``.

    Args:
        s: Text such as ``"$1,234.50."``, ``"-3"``, ``".5"``, ``"1{,}024"``.

    Returns:
        ``"1234.5"``, ``"-3"``, ``"0.5"``, ``"1024"``; None for anything else (words,
        fractions, lists).
    """
    if not isinstance(s, str):
        return None
    t = _plain_digits(s).strip().replace("\\$", "$").replace("\\%", "%")
    t = t.rstrip(".").strip()
    t = t.rstrip("%").strip()
    sign = ""
    if t.startswith(("+", "-")):
        sign, t = ("-" if t[0] == "-" else ""), t[1:].strip()
    t = t.lstrip("$").strip()
    if t[:1] == "-" and not sign:  # "$-5"
        sign, t = "-", t[1:].strip()
    if not re.fullmatch(_NUM_BODY, t):
        return None
    t = t.replace(",", "")
    try:
        value = Decimal(t)
    except InvalidOperation:  # pragma: no cover - the regex only lets numbers through
        return None
    if value == 0:
        return "0"
    # Format by hand: Decimal.normalize() would write 100 as "1E+2".
    whole, _, frac = t.partition(".")
    whole = whole.lstrip("0") or "0"
    frac = frac.rstrip("0")
    return sign + whole + ("." + frac if frac else "")


def extract_gsm8k_gold(answer_field: str) -> str:
    """The gold number of a GSM8K ``answer`` field: what follows the last ``####``.

    Args:
        answer_field: The full worked solution ending in ``#### N``.

    Returns:
        The normalised number (``"1,600"`` -> ``"1600"``); the stripped raw text when it is
        not a number (never the case in GSM8K itself).
    """
    raw = answer_field.rsplit("####", 1)[-1].strip()
    return normalize_number(raw) or raw


def _signed(m: re.Match[str]) -> str | None:
    negative = bool(m.group("sign") or m.group("sign2"))
    return normalize_number(("-" if negative else "") + m.group("num"))


def _first_number(text: str) -> str | None:
    """The number a marker ("The answer is ...") introduces: the first one of its sentence,
    or the result of a computation ("5 - 3 = 2" gives 2)."""
    sentence = re.split(r"(?<!\d)\.(?!\d)|\.(?=\s|$)", text, maxsplit=1)[0]
    # Only a pure computation ("5 - 3 = 2") gives way to its result: in "12 because
    # 3 + 4 = 7" the answer is still 12.
    if "=" in sentence and not re.search(r"[a-zA-Z]", sentence.split("=", 1)[0]):
        sentence = sentence.rsplit("=", 1)[1]
    m = _NUMBER_RE.search(sentence)
    if m is None:
        return None
    return _signed(m)


def _is_exponent(text: str, start: int) -> bool:
    """Whether the number at ``text[start:]`` is a power: right after ``^`` or ``^{``."""
    return _EXPONENT_END_RE.search(text, max(0, start - 8), start) is not None


def extract_last_number(text: str) -> str | None:
    """The final numeric answer of a model output.

    An explicit ``#### N`` wins, then the last "The answer is N" (or "final answer: N"),
    then simply the last number in the text. Thousands separators (LaTeX's ``1{,}024``
    and ``1\\,024`` too), ``$``, units or words after the number, a trailing period and
    negative numbers (with ``-`` or the Unicode minus) are all handled.

    Args:
        text: Model output.

    Returns:
        The normalised number (``"$1,234.50."`` -> ``"1234.5"``), or None when the text
        has no number.
    """
    if not text:
        return None
    text = _plain_digits(text)
    # Explicit markers first: a chain of thought mentions many numbers, the marker says
    # which one is the answer. The last marker wins (models sometimes restate).
    for pattern in (_FINAL_MARK_RE, _ANSWER_IS_RE):
        for m in reversed(list(pattern.finditer(text))):
            found = _first_number(m.group("rest"))
            if found is not None:
                return found
    for m in reversed(list(_NUMBER_RE.finditer(text))):
        # An exponent is never the answer: "12 cm^2" and "9.8 m/s^{2}" end in a unit's power.
        if not _is_exponent(text, m.start()):
            return _signed(m)
    return None


def score_gsm8k(output: str, gold: str) -> bool:
    """Whether a model output's final number equals the gold GSM8K answer.

    Args:
        output: Model output.
        gold: The gold number (raw or already normalised, e.g. from
            :func:`extract_gsm8k_gold`).

    Returns:
        True when :func:`extract_last_number` of the output equals the normalised gold.
    """
    pred = extract_last_number(output)
    if pred is None:
        return False
    target = normalize_number(gold)
    if target is None:
        target = extract_last_number(gold)
    return target is not None and pred == target
