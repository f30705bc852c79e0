"""Symbolic equality of scalar answers and equations with sympy: exact for numbers, at fixed
evaluation points for expressions with variables."""

from __future__ import annotations

from typing import Any

from mkt.eval.answers.brackets import _split_top
from mkt.eval.answers.latex_sympy import _sympy, _to_sympy

_PRECISION = 30  # digits for numeric comparison: rounding noise stays far below _RTOL
_RTOL = 1e-12  # tight: 0.333 is not 1/3, but exact values always agree

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
