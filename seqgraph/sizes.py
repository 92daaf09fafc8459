"""Symbolic integer sizes: the arithmetic of shapes such as ``[4*H, X + H]``.

A size is either a plain ``int`` or a :class:`Size`, a polynomial with integer coefficients
over named size symbols. Arithmetic on sizes always returns an ``int`` when the result has no
symbols left, so concrete shapes are tuples of plain integers everywhere.
"""

from __future__ import annotations

from typing import Mapping, Union

SizeLike = Union[int, "Size"]
Monomial = tuple  # sorted tuple of symbol names, () for the constant term


class SizeError(ValueError):
    """Raised when size arithmetic has no exact answer (a symbolic size divided unevenly)."""


def _normalise(terms: dict) -> SizeLike:
    kept = {mono: coef for mono, coef in terms.items() if coef != 0}
    if not kept:
        return 0
    if set(kept) == {()}:
        return kept[()]
    return Size(kept)


def _terms(value: SizeLike) -> dict:
    if isinstance(value, Size):
        return dict(value.terms)
    if isinstance(value, int) and not isinstance(value, bool):
        return {(): value}
    raise TypeError(f"not a size: {value!r}")


class Size:
    """A polynomial over size symbols, e.g. ``4*H`` or ``X + H``; immutable and hashable."""

    __slots__ = ("terms",)

    def __init__(self, terms: Mapping[Monomial, int]):
        self.terms = dict(terms)

    @staticmethod
    def symbol(name: str) -> "Size":
        """The size named ``name``."""
        return Size({(name,): 1})

    def symbols(self) -> set:
        """The symbol names this size depends on."""
        return {name for mono in self.terms for name in mono}

    def subst(self, env: Mapping[str, SizeLike]) -> SizeLike:
        """Replace symbols by the sizes ``env`` gives them (symbols not in ``env`` stay)."""
        total: SizeLike = 0
        for mono, coef in self.terms.items():
            term: SizeLike = coef
            for name in mono:
                term = term * env.get(name, Size.symbol(name))
            total = total + term
        return total

    def __add__(self, other):
        terms = _terms(self)
        for mono, coef in _terms(other).items():
            terms[mono] = terms.get(mono, 0) + coef
        return _normalise(terms)

    __radd__ = __add__

    def __neg__(self):
        return _normalise({mono: -coef for mono, coef in self.terms.items()})

    def __sub__(self, other):
        return self + (-other if isinstance(other, Size) else -int(other))

    def __rsub__(self, other):
        return (-self) + other

    def __mul__(self, other):
        terms: dict = {}
        for m1, c1 in _terms(self).items():
            for m2, c2 in _terms(other).items():
                mono = tuple(sorted(m1 + m2))
                terms[mono] = terms.get(mono, 0) + c1 * c2
        return _normalise(terms)

    __rmul__ = __mul__

    def __floordiv__(self, other):
        if not isinstance(other, int) or other <= 0:
            raise SizeError(f"cannot divide {self} by {other}")
        if any(coef % other for coef in self.terms.values()):
            raise SizeError(f"{self} is not known to be divisible by {other}")
        return _normalise({mono: coef // other for mono, coef in self.terms.items()})

    def __eq__(self, other):
        try:
            return _terms(self) == _terms(other)
        except TypeError:
            return NotImplemented

    def __hash__(self):
        return hash(frozenset(self.terms.items()))

    def __repr__(self):
        return f"Size({self})"

    def __str__(self):
        # Higher-degree terms first, the constant last, and otherwise the order the terms
        # were written in: concat(x, h) of [X] and [H] reads [X + H], not [H + X].
        def order(item):
            mono, _ = item
            return (mono == (), -len(mono))

        parts = []
        for mono, coef in sorted(self.terms.items(), key=order):
            body = "*".join(mono)
            if not mono:
                text = str(abs(coef))
            elif abs(coef) == 1:
                text = body
            else:
                text = f"{abs(coef)}*{body}"
            sign = "-" if coef < 0 else "+"
            parts.append((sign, text))
        first_sign, first = parts[0]
        out = ("-" if first_sign == "-" else "") + first
        for sign, text in parts[1:]:
            out += f" {sign} {text}"
        return out


def subst(value: SizeLike, env: Mapping[str, SizeLike]) -> SizeLike:
    """Substitute symbols in a size (ints pass through)."""
    return value.subst(env) if isinstance(value, Size) else value


def format_shape(shape) -> str:
    """``(4*H, X + H)`` → ``[4*H, X + H]``."""
    return "[" + ", ".join(str(d) for d in shape) + "]"
