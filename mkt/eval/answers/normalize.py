"""Normalising LaTeX answers: presentation-only differences (``\\dfrac``, ``^\\circ``, units, ``1{,}024``,
``\\left`` ...) removed, so equal answers are mostly equal strings."""

from __future__ import annotations

import re

from mkt.eval.answers.brackets import _match_brace, _split_top, _wrapped, last_boxed
from mkt.eval.answers.unicode_math import _unicode_to_latex

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
