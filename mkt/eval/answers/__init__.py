"""Answer extraction and equivalence for math benchmarks (GSM8K, Hendrycks MATH), a module per idea.

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

from mkt.eval.answers.brackets import last_boxed
from mkt.eval.answers.latex_sympy import clear_parse_cache
from mkt.eval.answers.matching import math_equal, score_math
from mkt.eval.answers.normalize import extract_math_gold, normalize_math
from mkt.eval.answers.numbers import extract_gsm8k_gold, extract_last_number, normalize_number, score_gsm8k

__all__ = [
    "clear_parse_cache",
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
