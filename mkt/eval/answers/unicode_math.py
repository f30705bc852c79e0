"""Unicode math read as the LaTeX it stands for (``\u03c0``, ``\u221a``, ``\u00b2`` ...)."""

from __future__ import annotations

import re
import unicodedata

from mkt.eval.answers.brackets import _brace_partners
from mkt.eval.answers.numbers import _ascii_digits

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
