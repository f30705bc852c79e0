"""A small LaTeX -> sympy parser of our own (``sympy.parsing.latex`` needs antlr); sympy is imported
lazily, the first time a pair of answers differs as strings."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_MAX_SYMBOLIC_LEN = 300  # longer answers are compared as strings only (sympy stays quick)
_MAX_EXPONENT = 200  # 10^{100000} would make sympy build a huge integer
_MAX_FACTORIAL = 200
_MAX_DIGITS = 5000  # the most digits an exact power may have
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
