"""Answer extraction and equivalence for math benchmarks (GSM8K, Hendrycks MATH).

GSM8K answers are numbers: :func:`extract_last_number` finds the model's final number and
:func:`normalize_number` puts numbers into one canonical spelling (``"1,234.50"`` and
``"1{,}234.50"`` -> ``"1234.5"``). MATH answers are LaTeX: :func:`last_boxed` takes the last
``\\boxed{...}``, :func:`normalize_math` spells Unicode math as LaTeX (``\u03c0``, ``\u221a``,
``\u00b2``...) and removes presentation-only differences (``\\dfrac``, ``^\\circ``, units,
``1{,}024``, ``\\left``...), and :func:`math_equal` falls back to a symbolic comparison with sympy
(through a small LaTeX parser of our own: ``sympy.parsing.latex`` needs antlr) for
fractions vs decimals, tuples, intervals, matrices and unordered lists of values.

Everything here is pure Python; sympy is imported lazily, the first time a pair of answers
differs as strings, so that scoring GSM8K never pays for it.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

__all__ = [
    "extract_gsm8k_gold",
    "extract_last_number",
    "normalize_number",
    "last_boxed",
    "normalize_math",
    "math_equal",
    "extract_math_gold",
    "score_gsm8k",
    "score_math",
]

# --------------------------------------------------------------------------------------
# Numbers (GSM8K)
# --------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------
# LaTeX answers (MATH)
# --------------------------------------------------------------------------------------


def _match_brace(s: str, open_idx: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``open_idx``, or -1; skips ``\\{``/``\\}``."""
    depth = 0
    i = open_idx
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2  # an escaped character (\{, \}, \\) never opens or closes a group
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _brace_partners(s: str, pair: str = "{}") -> dict[int, int]:
    """Index of each ``{`` mapped to its closing ``}``, in one pass (unclosed ones absent);
    ``pair="()"`` pairs parentheses instead.

    One pass rather than a scan per box: a degenerate output with thousands of unclosed
    boxes would otherwise cost quadratic time."""
    opening, closing = pair
    partners: dict[int, int] = {}
    stack: list[int] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == opening:
            stack.append(i)
        elif c == closing and stack:
            partners[stack.pop()] = i
        i += 1
    return partners


_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])")


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``.

    Braces may nest arbitrarily (``\\boxed{\\frac{1}{\\sqrt{2}}}``); the brace-less form
    ``\\boxed 5`` gives the token after it. A box whose braces never close is skipped in
    favour of the previous well-formed one.

    Args:
        text: A solution or model output.

    Returns:
        The box's content, without the braces; None when there is no box.
    """
    if not text:
        return None
    boxes = list(_BOX_RE.finditer(text))
    if not boxes:
        return None
    partners = _brace_partners(text)
    for m in reversed(boxes):
        i = m.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == "{":
            close = partners.get(i)
            if close is not None:
                return text[i + 1 : close]
            continue
        # "\boxed 5$": the answer runs to the end of the math or of the word.
        tail = re.match(r"[^\s$]+", text[i:])
        if tail:
            return tail.group(0).rstrip(".")
    return None


# --------------------------------------------------------------------------------------
# Unicode math: read as the LaTeX it stands for
# --------------------------------------------------------------------------------------

# Greek letters in code point order from U+03B1 (alpha); the capitals sit at the same
# offsets from U+0391. Omicron (an o) and final sigma have no command of their own.
_GREEK_LETTERS = (
    "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi - pi rho "
    "sigma sigma tau upsilon phi chi psi omega"
).split()
_GREEK_CAPITALS = {"Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"}
# Each command gets a trailing space so that it cannot merge with a letter after it
# ("\u03c0r" must become "\\pi r", not "\\pir"); spaces are dropped later.
_UNICODE_SYMBOLS = {
    "\N{MINUS SIGN}": "-",
    "\N{FRACTION SLASH}": "/",
    "\N{DIVISION SLASH}": "/",
    "\N{MULTIPLICATION SIGN}": "\\times ",
    "\N{DIVISION SIGN}": "\\div ",
    "\N{MIDDLE DOT}": "\\cdot ",
    "\N{DOT OPERATOR}": "\\cdot ",
    "\N{PLUS-MINUS SIGN}": "\\pm ",
    "\N{MINUS-OR-PLUS SIGN}": "\\mp ",
    "\N{LESS-THAN OR EQUAL TO}": "\\le ",
    "\N{GREATER-THAN OR EQUAL TO}": "\\ge ",
    "\N{NOT EQUAL TO}": "\\ne ",
    "\N{ALMOST EQUAL TO}": "\\approx ",
    "\N{INFINITY}": "\\infty ",
    "\N{UNION}": "\\cup ",
    "\N{INTERSECTION}": "\\cap ",
    "\N{ELEMENT OF}": "\\in ",
    "\N{EMPTY SET}": "\\emptyset ",
    "\N{GREEK PHI SYMBOL}": "\\phi ",
    "\N{GREEK LUNATE EPSILON SYMBOL}": "\\epsilon ",
    "\N{GREEK THETA SYMBOL}": "\\theta ",
    "\N{DOUBLE-STRUCK CAPITAL R}": "\\mathbb{R}",
    "\N{DOUBLE-STRUCK CAPITAL N}": "\\mathbb{N}",
    "\N{DOUBLE-STRUCK CAPITAL Z}": "\\mathbb{Z}",
    "\N{DOUBLE-STRUCK CAPITAL Q}": "\\mathbb{Q}",
    "\N{DOUBLE-STRUCK CAPITAL C}": "\\mathbb{C}",
}
# Vulgar fractions (one quarter to seven eighths); a digit before one makes a mixed number,
# "2\u00bd" -> "2\\frac{1}{2}", which the parser reads as 2 + 1/2.
_VULGAR_FRACTIONS = "\u00bc\u00bd\u00be" + "".join(map(chr, range(0x2150, 0x215F)))
_SUPERSCRIPTS = "\u2070\u00b9\u00b2\u00b3\u2074\u2075\u2076\u2077\u2078\u2079\u207a\u207b"
_SUBSCRIPTS = "".join(map(chr, range(0x2080, 0x208A)))
_SCRIPT_DIGITS = str.maketrans(_SUPERSCRIPTS + _SUBSCRIPTS, "0123456789+-" + "0123456789")
_SCRIPT_RE = re.compile(f"[{_SUPERSCRIPTS}]+|[{_SUBSCRIPTS}]+")
# The degree sign (or the ordinal sign often typed for it) with an optional Celsius or
# Fahrenheit letter, and the one-character degree Celsius/Fahrenheit signs.
_DEGREE_RE = re.compile(r"[\u00b0\u00ba]\s*(?:[CF](?![a-zA-Z]))?|[\u2103\u2109]")
_ROOTS = {"\N{SQUARE ROOT}": "\\sqrt", "\N{CUBE ROOT}": "\\sqrt[3]", "\N{FOURTH ROOT}": "\\sqrt[4]"}
_ROOT_RE = re.compile(f"([{''.join(_ROOTS)}])\\s*")
_DECIMAL_RE = re.compile(r"\d+(?:\.\d+)?")


def _unicode_table() -> dict[int, str]:
    """``str.translate`` table: Greek letters, operators and vulgar fractions as LaTeX."""
    table = dict(_UNICODE_SYMBOLS)
    for k, name in enumerate(_GREEK_LETTERS):
        if name != "-":
            table[chr(0x3B1 + k)] = f"\\{name} "
        if name.capitalize() in _GREEK_CAPITALS:
            table[chr(0x391 + k)] = f"\\{name.capitalize()} "
    for c in _VULGAR_FRACTIONS:
        num, den = unicodedata.normalize("NFKC", c).split("\N{FRACTION SLASH}")
        table[c] = f"\\frac{{{num}}}{{{den}}}"
    return str.maketrans(table)


_UNICODE_TABLE = _unicode_table()


def _unicode_roots(s: str) -> str:
    """``\u221a12`` -> ``\\sqrt{12}``, ``\u221a(x+1)`` -> ``\\sqrt{x+1}``, ``\u221bx`` -> ``\\sqrt[3] x``.

    A Unicode root covers the whole number or parenthesised group after it: "\u221a12" means
    the root of 12, unlike TeX's ``\\sqrt12`` (which is ``\\sqrt{1}2``). Anything else
    after it (a letter, ``{...}``, a command) becomes the argument later, as for ``\\sqrt``.
    """
    parens = _brace_partners(s, "()")
    edits = []  # (start, end, replacement), never overlapping: nested roots each get theirs
    for m in _ROOT_RE.finditer(s):
        cmd, j = _ROOTS[m.group(1)], m.end()
        number = _DECIMAL_RE.match(s, j)
        if number is not None:
            edits.append((m.start(), number.end(), f"{cmd}{{{number.group(0)}}}"))
        elif j in parens:
            edits += [(m.start(), j + 1, cmd + "{"), (parens[j], parens[j] + 1, "}")]
        else:
            edits.append((m.start(), j, cmd + " "))
    out = []
    i = 0
    for begin, end, text in sorted(edits):
        out += [s[i:begin], text]
        i = end
    out.append(s[i:])
    return "".join(out)


def _script(m: re.Match[str]) -> str:
    """A run of superscript or subscript characters as ``^{...}`` or ``_{...}``."""
    run = m.group(0)
    return ("^{" if run[0] in _SUPERSCRIPTS else "_{") + run.translate(_SCRIPT_DIGITS) + "}"


def _unicode_to_latex(s: str) -> str:
    """Spell Unicode math the LaTeX way: ``2\u03c0`` -> ``2\\pi``, ``x\u00b2`` -> ``x^{2}``,
    ``\u00bd`` -> ``\\frac{1}{2}``, ``\u2264`` -> ``\\le``, ``30\u00b0C`` -> ``30^\\circ``.

    Models write these when they leave LaTeX (AGIEval-Math's gold answers are all ASCII).
    The result is ASCII wherever a symbol is known, so this runs once, before the
    normalising rules."""
    if s.isascii():
        return s
    s = _DEGREE_RE.sub(r"^\\circ ", _ascii_digits(s))
    s = s.translate(_UNICODE_TABLE)
    s = _SCRIPT_RE.sub(_script, s)
    return _unicode_roots(s)


# --------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------

# Units trailing a value are dropped: the value is the answer. MATH's gold answers drop
# them and the problem fixes the unit, so "12 cm" is not told from a gold "12 m" (nor is
# 12 cm converted: "120 mm" is not 12). A unit is a word of an allow-list (below: length,
# area, volume, mass, time, speed, temperature, money, angle, "percent", "units"; plurals,
# "square"/"cubic"/"squared" with a unit, "X per Y", "X/Y"), a known abbreviation, or a
# one-letter symbol right after a number and a space ("5 m", "9.8 m/s^2"; "\frac{1}{2} h"
# keeps its variable, "5m" is a product). Any other word keeps its place and makes the
# answer unreadable rather than equal to the bare number: "3 hundredths", "5 factorial",
# "7 less", "4 fold", "2 thirds" and object nouns ("8 meals") are not 3, 5, 7, 4, 2, 8.
# (GSM8K scoring reads the last number and never needs this list.)
_UNIT_ABBREVIATIONS = (
    r"(?i:(?:sq|cu)\.?\s*in|cm|mm|km|kg|mg|ml|ft|yds?|mi|mph|kph|hrs?|mins?|secs?|lbs?|oz|sq|cu|per)"
)
_GLUED_UNITS = "cm|mm|km|kg|ft|mph|kph"  # abbreviations that may touch the number: "12cm"
_UNIT_NAMES = (
    r"(?i:(?:(?:milli|centi|kilo)?(?:meter|metre)|inch(?:e)?|foot|feet|yard|mile|unit|acre|hectare"
    r"|(?:milli)?(?:liter|litre)|gallon|quart|pint|cup|(?:fluid\s+)?ounce|(?:milli|kilo)?gram|pound|ton|tonne"
    r"|second|minute|hour|day|week|month|year|decade|centur(?:y|ie)|knot"
    r"|degree|celsius|fahrenheit|kelvin|radian"
    r"|dollar|cent|euro|yen|rupee|penn(?:y|ie)|pence|percent)s?)(?![A-Za-z])"
)
_UNIT_WORD = (
    rf"(?:{_UNIT_ABBREVIATIONS}(?![A-Za-z])\.?"
    rf"|(?i:(?:square|cubic|squared|cubed)\s+)?{_UNIT_NAMES}"
    rf"|(?i:square|cubic)\s+{_UNIT_ABBREVIATIONS}(?![A-Za-z])\.?)"
)
_UNIT_SYMBOL = r"[msghL](?![A-Za-z])"
_UNIT_POWER = r"(?:\s*\^\s*\{?\s*[23]\s*\}?)?"
# "square units", "miles per hour", "km/h", "m/s^2": units joined by spaces or slashes.
_UNIT_REST = (
    rf"(?:(?:\s*/\s*|\s+)(?:{_UNIT_WORD}|{_UNIT_SYMBOL}){_UNIT_POWER})*"
    r"(?:\s+(?i:squared|cubed)(?![A-Za-z]))?\s*\.?\s*$"  # "12 cm squared"
)
_TRAILING_UNIT_RE = re.compile(
    rf"(?:(?:(?<=[\d}}.)])|(?<=\\pi))\s+{_UNIT_WORD}"
    rf"|(?<=\d)\s+{_UNIT_SYMBOL}"
    rf"|(?<=\d)(?:{_GLUED_UNITS})(?![A-Za-z]))"
    rf"{_UNIT_POWER}{_UNIT_REST}"
)
_TEXT_CMDS = r"text|textbf|textit|textrm|textnormal|mbox|mathrm|mathbf|mathit|mathsf|mathtt|hbox"
# The content of a \text{...} unit: unit words or symbols joined by spaces or slashes.
_TEXT_UNIT_BODY = (
    rf"\s*(?:{_UNIT_WORD}|{_UNIT_SYMBOL}){_UNIT_POWER}"
    rf"(?:(?:\s*/\s*|\s+)(?:{_UNIT_WORD}|{_UNIT_SYMBOL}){_UNIT_POWER})*\s*"
)
_TEXT_UNIT = rf"\\(?:{_TEXT_CMDS})\s*\{{{_TEXT_UNIT_BODY}\}}{_UNIT_POWER}"
# A \text{unit} at the very end of an answer that starts with a value is an annotation
# ("17\text{ meters}", "\text{km}/\text{h}"): the value alone is the answer.
_TRAILING_TEXT_RE = re.compile(rf"(?<=[\d}}.a-zA-Z])\s*{_TEXT_UNIT}(?:\s*/\s*{_TEXT_UNIT})*\s*\.?\s*$")
_TEXT_OPEN_RE = re.compile(rf"\\(?:{_TEXT_CMDS})\s*\{{")
# "\\" (a matrix row break) is matched first so that its second backslash is never read
# as the start of "\ " (a spacing command).
_SPACING_RE = re.compile(r"\\\\|\\(?:qquad|quad|[,;: >])")
_SIZING_RE = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|biggl|biggr|big|Big|bigg|Bigg)(?![a-zA-Z])")


def _unwrap_text(s: str) -> str:
    """Replace every ``\\text{...}`` (and friends) by its content, braces nested or not."""
    for _ in range(20):  # bounded: each pass removes one command
        m = _TEXT_OPEN_RE.search(s)
        if m is None:
            break
        close = _match_brace(s, m.end() - 1)
        if close == -1:
            s = s[: m.start()] + s[m.end() :]
        else:
            s = s[: m.start()] + s[m.end() : close] + s[close + 1 :]
    return s


def _read_arg(s: str, i: int) -> tuple[str, int] | None:
    """Read one TeX argument at ``s[i:]``: a ``{group}``, a ``\\command`` or one character."""
    while i < len(s) and s[i] == " ":
        i += 1
    if i >= len(s):
        return None
    if s[i] == "{":
        close = _match_brace(s, i)
        if close == -1:
            return None
        return s[i + 1 : close], close + 1
    if s[i] == "\\":
        m = re.match(r"\\[a-zA-Z]+|\\.", s[i:])
        assert m is not None
        return m.group(0), i + len(m.group(0))
    if s[i] in "}^_&":
        return None
    return s[i], i + 1


def _brace_args(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\sqrt2`` -> ``\\sqrt{2}``, ``\\binom``/``\\frac``
    with one braced and one bare argument likewise."""
    out: list[str] = []
    i = 0
    pattern = re.compile(r"\\(frac|binom|sqrt)(?![a-zA-Z])")
    while True:
        m = pattern.search(s, i)
        if m is None:
            out.append(s[i:])
            break
        out.append(s[i : m.start()])
        name = m.group(1)
        j = m.end()
        pieces = ["\\" + name]
        if name == "sqrt":
            k = j
            while k < len(s) and s[k] == " ":
                k += 1
            if k < len(s) and s[k] == "[":  # \sqrt[3]{x}: keep the index as written
                close = s.find("]", k)
                if close != -1:
                    pieces.append(s[k : close + 1])
                    j = close + 1
            n_args = 1
        else:
            n_args = 2
        for _ in range(n_args):
            arg = _read_arg(s, j)
            if arg is None:
                break
            content, j = arg
            pieces.append("{" + _brace_args(content) + "}")
        out.append("".join(pieces))
        i = j
    return "".join(out)


_ASSIGN_RE = re.compile(r"^(?P<var>[a-zA-Z]|\\[a-zA-Z]+)(?:_\{?\w+\}?)?(?:=|\\in(?![a-zA-Z]))(?P<rest>.+)$")


def _strip_assignment(s: str) -> str:
    """``x=\\frac{3}{2}`` -> ``\\frac{3}{2}``: a variable assignment whose right side is a value."""
    m = _ASSIGN_RE.match(s)
    if m is None:
        return s
    rest = m.group("rest")
    if re.search(r"=|<|>|\\le|\\ge|\\ne|\\approx", rest):
        return s  # a chain or an inequality, not an assignment
    var = m.group("var")
    # The right side must not mention the variable itself (then it is an equation, e.g.
    # "y=2y-1"); commands like \frac are removed before looking for the letter.
    bare = re.sub(r"\\[a-zA-Z]+", " ", rest)
    if (var.startswith("\\") and var in rest) or (not var.startswith("\\") and var in bare):
        return s
    if var.startswith("\\") and var in ("\\sin", "\\cos", "\\tan", "\\log", "\\ln"):
        return s
    return rest


_THOUSANDS = r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?"  # one number with thousands separators


def _normalize_once(s: str, thousands: bool = True) -> str:
    # One space for any run of whitespace first: it keeps every later regex linear even on
    # a degenerate generation full of blanks.
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\\[dtc]frac(?![a-zA-Z])", r"\\frac", s)
    s = s.replace("\\displaystyle", "")
    s = re.sub(r"\\(?:left|right)\.", "", s)  # invisible delimiters
    s = _SIZING_RE.sub("", s)
    # ",\!" (MATH's way) and "{,}" (TeX's comma without the list space) between digit
    # groups are thousands separators. Not before 1, 2 or 4 digits: "0{,}5" (a decimal
    # comma) and "1{,}24" stay unreadable rather than being guessed.
    s = re.sub(r"(\d)(?:,\\!|\{,\})\s*(?=\d{3}(?!\d))", r"\1", s)
    s = s.replace("\\!", "")
    s = _SPACING_RE.sub(lambda m: m.group(0) if m.group(0) == "\\\\" else " ", s)
    s = s.replace("~", " ")
    s = s.replace("\\$", "").replace("$", "")
    # Degrees: the value is what is asked for, the symbol is presentation.
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ(?![a-zA-Z])", "", s)
    s = re.sub(r"(?<=[\d}])\s*\\circ(?![a-zA-Z])", "", s)
    s = s.replace("\\%", "").replace("%", "")
    s = s.strip()
    s = re.sub(r"\.\s*$", "", s)  # a sentence's full stop
    s = _TRAILING_TEXT_RE.sub("", s) if re.search(r"[\d}]", s) else s
    s = _unwrap_text(s)
    s = _TRAILING_UNIT_RE.sub("", s)
    # "19 and 43", "1, 2, and 3", "x=2 or x=3": a list of answers.
    s = re.sub(r"(?<=\S)\s*,?\s+(?:and|or)\s+(?=\S)", ",", s)
    s = re.sub(r"\\(?:leq|leqslant)(?![a-zA-Z])", r"\\le", s)
    s = re.sub(r"\\(?:geq|geqslant)(?![a-zA-Z])", r"\\ge", s)
    s = re.sub(r"\\(?:neq)(?![a-zA-Z])", r"\\ne", s)
    s = s.strip()
    if thousands and re.fullmatch(_THOUSANDS, s):
        s = s.replace(",", "")  # the whole answer is one number with thousands separators
    # Scientific notation, the whole answer: "1.2e3" is 1.2\times10^{3}.
    m = re.fullmatch(r"(-?\d+(?:\.\d+)?)[eE]([-+]?)(\d{1,3})", s)
    if m:
        s = f"{m.group(1)}\\times10^{{{'-' if m.group(2) == '-' else ''}{m.group(3)}}}"
    # "2 pi" is 2\pi; "3 times 4" is 3\times 4.
    s = re.sub(r"(?:(?<=\d)\s*|^)pi(?![A-Za-z])", r"\\pi", s)
    s = re.sub(r"(?<=\d)\s+times\s+(?=\d)", r"\\times ", s)
    # Spaces carry no meaning in math mode, except that "\pi r" must not become "\pir".
    s = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", lambda m: m.group(1) + "\x00", s)
    s = re.sub(r"\s+", "", s).replace("\x00", " ")
    s = _brace_args(s)
    s = re.sub(r"([\^_])\{(\w)\}", r"\1\2", s)  # x^{2} -> x^2
    s = re.sub(r"\.+$", "", s)
    s = re.sub(r"(?<![\w}.])\.(\d)", r"0.\1", s)  # .5 -> 0.5
    # Trailing zeros of decimals: 3.50 -> 3.5, 5.0 -> 5.
    s = re.sub(r"(\d)\.(\d*?)0+(?![\d.])", lambda m: m.group(1) + ("." + m.group(2)).rstrip("."), s)
    # Simple numeric fractions: 2/5 -> \frac{2}{5}.
    # Not next to ^ or _ ("x^2/3" is (x^2)/3) nor inside longer numbers or words.
    s = re.sub(r"(?<![\w.^_])(\d+)/(\d+)(?![\w.{^_])", r"\\frac{\1}{\2}", s)
    s = _strip_assignment(s)
    parts = _split_top(s, ",") if "=" in s and _wrapped(s) is None else []
    if len(parts) > 1:
        # "x=1,x=2": the values of one variable. Not "a=2,b=3", whose order carries meaning.
        lhs = {part.split("=", 1)[0] for part in parts}
        if len(lhs) == 1 and all(_strip_assignment(part) != part for part in parts):
            s = ",".join(_strip_assignment(part) for part in parts)
    m = re.fullmatch(r"\(([A-Z])\)", s)  # multiple choice "(B)" -> "B"
    if m:
        s = m.group(1)
    return s


_LIST_COMMA_RE = re.compile(r",(?:\s|~|\\[ ,;:>]|\\q?quad)")


def normalize_math(s: str) -> str:
    """Normalise a MATH answer string so that equal answers compare equal as strings.

    Unicode math is first spelled as LaTeX (``\u03c0``, ``\u221a``, ``\u00b2``, ``\u00bd``,
    ``\u2264``...). Then removes ``$``, ``\\left``/``\\right``, spacing commands
    (``\\!``, ``\\,``, ``\\;``, ``\\ ``), spaces, degree signs, percent signs,
    ``\\text{...}``/``\\mbox{...}`` wrappers (dropping unit words that trail a value), a
    leading ``x=`` style assignment and a trailing period; rewrites ``\\dfrac``/``\\tfrac``
    as ``\\frac``, adds the braces of ``\\frac12`` and ``\\sqrt2``, writes ``.5`` as
    ``0.5``, ``3.50`` as ``3.5`` and ``1{,}024`` as ``1024``, and simple fractions ``a/b``
    as ``\\frac{a}{b}``. Deterministic and idempotent (the rules are applied until nothing
    changes).

    Args:
        s: A raw answer, e.g. ``"\\dfrac{1}{2}"`` or ``"17\\text{ cm}"``.

    Returns:
        The normalised string (``""`` for None or empty input).
    """
    if s is None:
        return ""
    s = _unicode_to_latex(str(s))
    # "2, 100" is a list, "2,100" one number: the whole-answer thousands rule is for an
    # answer written with no space after any comma (the rules below remove spaces, so this
    # is decided on the answer as written).
    thousands = _LIST_COMMA_RE.search(s) is None
    for _ in range(6):
        new = _normalize_once(s, thousands)
        if new == s:
            break
        s = new
    if not thousands and re.fullmatch(_THOUSANDS, s):
        # A list that reads like one number ("2, 100"): its commas keep their space, so
        # that the normal form stays a list when normalised again.
        s = s.replace(",", ", ")
    return s


def extract_math_gold(solution: str) -> str:
    """Normalised gold answer of a MATH solution: ``normalize_math(last_boxed(solution))``.

    Args:
        solution: The worked solution with a ``\\boxed{...}`` answer.

    Returns:
        The normalised boxed answer; ``""`` when the solution has no box.
    """
    box = last_boxed(solution)
    return normalize_math(box) if box is not None else ""


# --------------------------------------------------------------------------------------
# Symbolic comparison: a small LaTeX -> sympy parser
# --------------------------------------------------------------------------------------

_MAX_SYMBOLIC_LEN = 300  # longer answers are compared as strings only (sympy stays quick)
_MAX_EXPONENT = 200  # 10^{100000} would make sympy build a huge integer
_MAX_FACTORIAL = 200
_MAX_DIGITS = 5000  # the most digits an exact power may have
_PRECISION = 30  # digits for numeric comparison: rounding noise stays far below _RTOL
_RTOL = 1e-12  # tight: 0.333 is not 1/3, but exact values always agree


class _ParseError(Exception):
    pass


_TOKEN_RE = re.compile(
    r"\s*(\d*\.\d*\\overline\{\d+\}"  # a repeating decimal, one token
    r"|\\[a-zA-Z]+|\\[{}|]|\d+(?:\.\d+)?|\.\d+|[a-zA-Z]|\*\*|[-+*/^_(){}\[\]|!,=])"
)

_FUNCS = {
    "sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan",
    "sinh", "cosh", "tanh", "ln", "log", "exp",
}
_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
    "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon",
    "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi",
    "Sigma", "Upsilon", "Phi", "Psi", "Omega", "ell",
}
_IGNORED_CMDS = {"left", "right", "displaystyle", "mathrm", "operatorname"}


def _tokenize(s: str) -> list[str]:
    tokens = []
    i = 0
    while i < len(s):
        if s[i].isspace():
            i += 1
            continue
        m = _TOKEN_RE.match(s, i)
        if m is None:
            raise _ParseError(f"unexpected {s[i]!r}")
        tok = m.group(1)
        i = m.end()
        if tok.startswith("\\") and tok[1:] in _IGNORED_CMDS:
            continue
        tokens.append(tok)
    return tokens


class _Parser:
    """Recursive descent over LaTeX math tokens, building sympy expressions directly.

    Building the expression ourselves (rather than handing a string to ``parse_expr``)
    means no ``eval`` of model output and full control over implicit multiplication.
    """

    def __init__(self, tokens: list[str], sp: Any) -> None:
        self.toks = tokens
        self.i = 0
        self.sp = sp

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise _ParseError(f"expected {expected!r}, got {tok!r}")
        self.i += 1
        return tok

    def parse(self) -> Any:
        expr = self.expr()
        if self.peek() is not None:
            raise _ParseError(f"trailing {self.peek()!r}")
        return expr

    def expr(self) -> Any:
        left = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self.term()
            left = left + right if op == "+" else left - right
        return left

    def _starts_atom(self, tok: str | None) -> bool:
        if tok is None:
            return False
        if tok in ("(", "{", "\\{"):
            return True
        if tok.startswith("\\"):
            return tok not in ("\\cdot", "\\times", "\\div", "\\}", "\\|")
        return tok[0].isalnum() or tok[0] == "."

    def term(self) -> Any:
        left = self.unary()
        while True:
            tok = self.peek()
            if tok in ("*", "\\cdot", "\\times"):
                self.take()
                left = left * self.unary()
            elif tok in ("/", "\\div"):
                self.take()
                left = left / self.unary()
            elif self._starts_atom(tok):
                left = left * self.power()  # implicit multiplication: 2\sqrt{3}, 3x
            else:
                return left

    def unary(self) -> Any:
        tok = self.peek()
        if tok == "-":
            self.take()
            return -self.unary()
        if tok == "+":
            self.take()
            return self.unary()
        return self.power()

    def _split_digits(self) -> None:
        """A bare script takes one character: ``x^23`` is ``x^2 * 3``, ``\\log_28`` is
        ``log_2(8)``; split the digit run the tokenizer read as one number."""
        tok = self.peek()
        if tok is not None and tok.isdigit() and len(tok) > 1:
            self.toks[self.i] = tok[1:]
            self.toks.insert(self.i, tok[0])

    def _exponent(self) -> Any:
        tok = self.peek()
        if tok in ("{", "("):
            return self.atom()
        if tok == "-":
            self.take()
            return -self._exponent()
        self._split_digits()
        return self.atom()

    def _check_power(self, base: Any, exp: Any) -> None:
        """Refuse powers whose exact value would be enormous (sympy would compute it)."""
        if not (exp.is_number and exp.is_real and base.is_number):
            return
        if abs(base) in (0, 1):
            return
        if abs(exp) > _MAX_EXPONENT:
            raise _ParseError("exponent too large")
        if base.is_Rational:
            # (10^{100})^{100}: small exponent, huge result; bound the digits produced.
            digits = max(len(str(abs(base.p))), len(str(base.q)))
            if abs(exp) * digits > _MAX_DIGITS:
                raise _ParseError("power too large")

    def power(self) -> Any:
        base = self.postfix()
        if self.peek() in ("^", "**"):
            self.take()
            exp = self._exponent()
            self._check_power(base, exp)
            return self.sp.Pow(base, exp)
        return base

    def postfix(self) -> Any:
        value = self.atom()
        while self.peek() == "!":
            self.take()
            if not (value.is_Integer and 0 <= value <= _MAX_FACTORIAL):
                raise _ParseError("factorial of a non-small integer")
            value = self.sp.factorial(value)
        return value

    def group(self) -> Any:
        """A TeX argument: ``{...}`` or a single atom (``\\frac12`` was braced already)."""
        if self.peek() == "{":
            self.take("{")
            value = self.expr()
            self.take("}")
            return value
        return self.atom()

    def atom(self) -> Any:
        sp = self.sp
        tok = self.take()
        if "\\overline" in tok:  # a repeating decimal, 0.1\overline{6} == 1/6
            head, rep_digits = tok[:-1].split("\\overline{")
            whole, _, fixed = head.partition(".")
            base = sp.Rational(int(whole or "0"))
            if fixed:
                base += sp.Rational(int(fixed), 10 ** len(fixed))
            cycle = sp.Rational(int(rep_digits), (10 ** len(rep_digits) - 1) * 10 ** len(fixed))
            return base + cycle
        if tok[0].isdigit() or tok[0] == ".":
            value = sp.Rational(tok)  # exact: 0.5 == \frac{1}{2} without float noise
            # A mixed number, MATH style: 3\frac{1}{8} means 3 + 1/8.
            if tok.isdigit() and self.peek() == "\\frac":
                save = self.i
                self.take()
                num, den = self.group(), self.group()
                if num.is_Integer and den.is_Integer and den != 0 and 0 < num < den:
                    return value + sp.Rational(num, den)
                self.i = save
            return value
        if tok in ("(", "{", "\\{"):
            closing = {"(": ")", "{": "}", "\\{": "\\}"}[tok]
            value = self.expr()
            self.take(closing)
            return value
        if tok == "|":
            value = self.expr()
            self.take("|")
            return sp.Abs(value)
        if tok.isalpha() and len(tok) == 1:
            # i and e are the imaginary unit and Euler's number in competition answers;
            # read as constants, e^{i\pi} == -1 and \ln(e^2) == 2 come out right.
            if tok == "i":
                return sp.I
            if tok == "e" and self.peek() != "_":
                return sp.E
            name = tok
            if self.peek() == "_":
                self.take()
                self._split_digits()
                sub = self.take()
                if sub == "{":
                    parts = []
                    while self.peek() not in ("}", None):
                        parts.append(self.take())
                    self.take("}")
                    sub = "".join(parts)
                name = f"{tok}_{sub}"
            return sp.Symbol(name)
        if tok.startswith("\\"):
            return self.command(tok[1:])
        raise _ParseError(f"unexpected token {tok!r}")

    def command(self, name: str) -> Any:
        sp = self.sp
        if name == "frac":
            num = self.group()
            den = self.group()
            return num / den
        if name == "binom":
            n, k = self.group(), self.group()
            if not (n.is_Integer and k.is_Integer and 0 <= n <= 1000):
                raise _ParseError("binomial of a non-small integer")
            return sp.binomial(n, k)
        if name == "sqrt":
            index = None
            if self.peek() == "[":
                self.take("[")
                index = self.expr()
                self.take("]")
            radicand = self.group()
            return sp.sqrt(radicand) if index is None else sp.root(radicand, index)
        if name == "pi":
            return sp.pi
        if name == "infty":
            return sp.oo
        if name in _FUNCS:
            power = None
            if self.peek() == "^":  # \sin^2 x
                self.take()
                power = self._exponent()
            base = None
            if name == "log" and self.peek() == "_":
                self.take()
                self._split_digits()
                base = self.group()
            arg = self.power()
            fn = {"ln": sp.log, "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan}.get(
                name, getattr(sp, name, None)
            )
            value = sp.log(arg, base) if base is not None else fn(arg)
            return value ** power if power is not None else value
        if name in ("cdot", "times", "div", "cup", "cap", "in", "le", "ge", "ne", "pm", "mp"):
            raise _ParseError(f"operator \\{name} in operand position")
        if name in _GREEK:
            return sp.Symbol(name)
        # Anything else (\boxed, \overline, \vec, \mathbf...) has a meaning this parser
        # does not know: reading it as a plain symbol could make unequal answers agree.
        raise _ParseError(f"unsupported \\{name}")


_SYMPY: Any = None


def _sympy() -> Any:
    global _SYMPY
    if _SYMPY is None:
        import sympy

        _SYMPY = sympy
    return _SYMPY


def clear_parse_cache() -> None:
    """Forget every parsed expression, so a timing run starts cold."""
    _to_sympy.cache_clear()


@lru_cache(maxsize=4096)
def _to_sympy(s: str) -> Any:
    """Parse a normalised LaTeX scalar into sympy; None when it cannot be parsed."""
    if not s or len(s) > _MAX_SYMBOLIC_LEN:
        return None
    try:
        sp = _sympy()
        return _Parser(_tokenize(s), sp).parse()
    except Exception:  # any parse or sympy failure simply means "not comparable"
        return None


# Evaluation points for expressions with free symbols: deliberately odd values so that two
# different expressions agreeing on all of them by accident is vanishingly unlikely.
# A negative point tells sqrt(x^2) from x.
_POINTS = (0.7318, -1.3127, 2.2360679)


def _assignment(symbols: list[Any], k: int) -> dict[Any, float]:
    """The k-th evaluation point; the points rotate among the symbols so no two share a value."""
    return {sym: _POINTS[(k + j) % len(_POINTS)] + 0.1 * j for j, sym in enumerate(symbols)}


def _close(a: complex, b: complex) -> bool:
    return abs(a - b) <= _RTOL * max(1.0, abs(a), abs(b))


def _values(expr: Any, assignment: dict[Any, float]) -> complex:
    return complex(expr.evalf(_PRECISION, subs=assignment))


def _sympy_equal(a: Any, b: Any) -> bool:
    sp = _sympy()
    if a.has(sp.zoo, sp.nan) or b.has(sp.zoo, sp.nan):
        return False  # a division by zero is no answer, whatever it is compared with
    if a == b:
        return True
    if a.has(sp.oo, -sp.oo) or b.has(sp.oo, -sp.oo):
        return False  # infinities compare only structurally (oo - oo is nan)
    symbols = sorted(a.free_symbols | b.free_symbols, key=lambda x: x.name)
    if not symbols:
        # Rationals cancel exactly on subtraction; radicals, pi and the like are compared
        # numerically at high precision (cheaper and safer than simplify or expand, which
        # can take minutes on a power of a sum).
        if a - b == 0:
            return True
        va, vb = _values(a, {}), _values(b, {})
        return _finite(va) and _finite(vb) and _close(va, vb)
    for k in range(len(_POINTS)):
        va, vb = _values(a, _assignment(symbols, k)), _values(b, _assignment(symbols, k))
        if not (_finite(va) and _finite(vb)) or not _close(va, vb):
            return False
    return True


def _finite(z: complex) -> bool:
    return z == z and abs(z) != float("inf")


def _scalar_equal(p: str, g: str) -> bool:
    if p == g:
        return True
    if p.isalpha() and g.isalpha() and len(p) > 1:
        return p.lower() == g.lower()  # words ("Even", "even"); not variables (a vs A)
    if "=" in p or "=" in g:
        return _equation_equal(p, g)
    a, b = _to_sympy(p), _to_sympy(g)
    if a is None or b is None:
        return False
    try:
        return bool(_sympy_equal(a, b))
    except Exception:
        return False


def _equation_equal(p: str, g: str) -> bool:
    """``a=b`` vs ``c=d``: the same equation up to rearrangement and a nonzero factor."""
    ps, gs = _split_top(p, "="), _split_top(g, "=")
    if len(ps) != 2 or len(gs) != 2:
        return False
    sides = [_to_sympy(x) for x in (*ps, *gs)]
    if any(x is None for x in sides):
        return False
    lhs = sides[0] - sides[1]
    rhs = sides[2] - sides[3]
    if lhs == 0 or rhs == 0 or not lhs.free_symbols or not rhs.free_symbols:
        return False  # an identity or a statement about numbers, not an equation to solve
    try:
        ratio = lhs / rhs
        symbols = sorted(ratio.free_symbols, key=lambda x: x.name)
        values = [_values(ratio, _assignment(symbols, k)) for k in range(len(_POINTS))]
        return all(_finite(v) and v != 0 and _close(v, values[0]) for v in values)
    except Exception:
        return False


# --------------------------------------------------------------------------------------
# Structured answers: tuples, intervals, unions, lists, matrices
# --------------------------------------------------------------------------------------

def _split_top(s: str, sep: str) -> list[str]:
    """Split ``s`` on ``sep`` where no bracket of any kind (``\\{`` included) is open."""
    parts = []
    depth = 0
    start = 0
    i = 0
    while i < len(s):
        if depth == 0 and s.startswith(sep, i):
            if not (sep[-1].isalpha() and s[i + len(sep) : i + len(sep) + 1].isalpha()):
                parts.append(s[start:i])
                i += len(sep)
                start = i
                continue
        c = s[i]
        if c == "\\":
            if s.startswith("\\{", i):
                depth += 1
            elif s.startswith("\\}", i):
                depth -= 1
            i += 2  # the character after a backslash ("\,", "\}") is never a separator
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        i += 1
    parts.append(s[start:])
    return parts


def _wrapped(s: str) -> tuple[str, str, str] | None:
    """``(a,b]`` -> ``("(", "a,b", "]")`` when the first bracket closes at the very end."""
    if s.startswith("\\{") and s.endswith("\\}"):
        open_, close_, inner = "\\{", "\\}", s[2:-2]
    elif s[:1] in "([" and s[-1:] in ")]":
        open_, close_, inner = s[0], s[-1], s[1:-1]
    else:
        return None
    depth = 0
    for c in inner:  # "(1)+(2)" starts and ends with brackets but is not wrapped
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth < 0:
                return None
    return (open_, inner, close_) if depth == 0 else None


def _multiset_equal(ps: list[str], gs: list[str]) -> bool:
    if len(ps) != len(gs):
        return False
    remaining = list(gs)
    for p in ps:
        for k, g in enumerate(remaining):
            if _equal_structured(p, g):
                del remaining[k]
                break
        else:
            return False
    return True


_MATRIX_RE = re.compile(r"^\\begin\{([pbvBV]?matrix|array)\}(?:\{[^}]*\})?(.*)\\end\{\1\}$")


def _matrix(s: str) -> list[list[str]] | None:
    m = _MATRIX_RE.match(s)
    if m is None:
        return None
    rows = m.group(2).split("\\\\")
    if rows and rows[-1] == "":
        rows.pop()
    return [r.split("&") for r in rows]


def _expand_pm(s: str) -> str:
    """``1\\pm\\sqrt{2}`` -> ``1+\\sqrt{2},1-\\sqrt{2}``: one plus-minus is a list of two."""
    if s.count("\\pm") != 1 or "\\mp" in s or _wrapped(s) is not None or len(_split_top(s, ",")) > 1:
        return s
    return s.replace("\\pm", "+") + "," + s.replace("\\pm", "-")


def _equal_structured(p: str, g: str) -> bool:
    """Compare two normalised answers piece by piece, down to scalars."""
    if p == g:
        return True
    pp, gp = _expand_pm(p), _expand_pm(g)
    if (pp, gp) != (p, g):
        return _equal_structured(pp, gp)
    if p.startswith("\\begin") or g.startswith("\\begin"):
        mp, mg = _matrix(p), _matrix(g)
        if mp is None or mg is None or [len(r) for r in mp] != [len(r) for r in mg]:
            return False
        return all(_equal_structured(a, b) for ra, rb in zip(mp, mg) for a, b in zip(ra, rb))
    # Unions of intervals: the pieces in any order.
    pu, gu = _split_top(p, "\\cup"), _split_top(g, "\\cup")
    if len(pu) > 1 or len(gu) > 1:
        return _multiset_equal(pu, gu)
    pw, gw = _wrapped(p), _wrapped(g)
    # A set against a bare list of the same values: "\\{2,4\\}" answers "2, 4".
    if pw is not None and pw[0] == "\\{" and gw is None:
        return _multiset_equal(_split_top(pw[1], ","), _split_top(g, ","))
    if gw is not None and gw[0] == "\\{" and pw is None:
        return _multiset_equal(_split_top(p, ","), _split_top(gw[1], ","))
    # Tuples, intervals and sets: brackets must match; sets ignore order. "(2,3)" is an
    # ordered pair or an open interval, and both compare the same way: elementwise.
    p_items = _split_top(pw[1], ",") if pw else []
    g_items = _split_top(gw[1], ",") if gw else []
    if len(p_items) > 1 or len(g_items) > 1 or (pw and pw[0] == "\\{") or (gw and gw[0] == "\\{"):
        if pw is None or gw is None or (pw[0], pw[2]) != (gw[0], gw[2]):
            return False
        if pw[0] == "\\{":
            return _multiset_equal(p_items, g_items)
        if len(p_items) != len(g_items):
            return False
        return all(_equal_structured(a, b) for a, b in zip(p_items, g_items))
    # A bare comma-separated list of answers ("1,3" or "\\sqrt{5},-\\sqrt{5}"): any order.
    pl, gl = _split_top(p, ","), _split_top(g, ",")
    if len(pl) > 1 or len(gl) > 1:
        return _multiset_equal(pl, gl)
    return _scalar_equal(p, g)


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
