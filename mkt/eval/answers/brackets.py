"""Braces and brackets of LaTeX answers: matching pairs, top-level splits, the last ``\\boxed{...}``."""

from __future__ import annotations

import re


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
