"""Structured answers compared piecewise: tuples and intervals elementwise, unions and lists as
multisets, matrices cell by cell."""

from __future__ import annotations

import re

from mkt.eval.answers.brackets import _split_top, _wrapped
from mkt.eval.answers.symbolic import _scalar_equal


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
