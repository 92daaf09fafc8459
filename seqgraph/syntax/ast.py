"""The abstract syntax tree: plain dataclasses, each with the source span it came from.

The AST says only what was written. Names, sizes, types and shapes are resolved later, by
:mod:`seqgraph.check`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

from ..errors import Source, Span


# --- expressions -----------------------------------------------------------------------

@dataclass
class Number:
    """A numeric literal: ``3``, ``0.5``, ``1e-3``."""
    value: Union[int, float]
    span: Span


@dataclass
class String:
    """A string literal (used by train settings: ``text("corpus.txt")``)."""
    value: str
    span: Span


@dataclass
class Name:
    """A reference to a value, a size or an option such as ``both``."""
    id: str
    span: Span


@dataclass
class Delayed:
    """``v[t-1]``: the value of state ``v`` at the previous time step."""
    id: str
    delay: int
    span: Span


@dataclass
class Keyword:
    """``name = value`` inside a call."""
    name: str
    value: "Expr"
    span: Span


@dataclass
class Call:
    """``func(args..., key = value...)``. ``span`` is the function's name (where a caret
    points); ``extent`` covers the whole call, up to its closing parenthesis."""
    func: str
    args: list
    keywords: list
    span: Span
    extent: Optional[Span] = None


@dataclass
class BinOp:
    """``left op right`` with op one of ``+ - * / @`` or a comparison ``> < >= <= == !=``."""
    op: str
    left: "Expr"
    right: "Expr"
    span: Span


@dataclass
class Neg:
    """Unary minus."""
    operand: "Expr"
    span: Span


@dataclass
class Tuple:
    """``(a, b)``: several values, as in ``init = (h0, c0)``."""
    items: list
    span: Span


Expr = Union[Number, String, Name, Delayed, Call, BinOp, Neg, Tuple]


# --- types ------------------------------------------------------------------------------

@dataclass
class TypeExpr:
    """A written type. ``kind`` is ``seq`` (``seq[float, F]``), ``tensor``
    (``tensor[float, C, H, W]``), ``class`` (``int[K]``) or ``vector`` (``[dims]``).
    ``time`` names a sequence's time axis when it is not the model's default one."""
    kind: str
    dtype: str
    dims: list
    span: Span
    time: Optional[str] = None


# --- statements and blocks ----------------------------------------------------------------

@dataclass
class Declaration:
    """``input``/``target``/``param``/``state`` NAME : TYPE [= init]."""
    kind: str
    name: str
    type: TypeExpr
    init: Optional[Expr]
    span: Span


@dataclass
class Output:
    """``output NAME [= expr]``: marks a value the model hands back."""
    name: str
    value: Optional[Expr]
    span: Span


@dataclass
class Assign:
    """``a = expr`` or ``a, b = expr``; ``target_spans`` point at each name."""
    targets: list
    value: Expr
    span: Span
    target_spans: list = field(default_factory=list)


@dataclass
class SizeParam:
    """A model's size parameter, ``hidden = 128``."""
    name: str
    default: Optional[Expr]
    span: Span


@dataclass
class Port:
    """A cell's input or output, ``x : [X]``."""
    name: str
    type: TypeExpr
    span: Span


@dataclass
class Model:
    """``model Name(sizes) { statements }``."""
    name: str
    sizes: list
    body: list
    span: Span


@dataclass
class Cell:
    """``cell Name(inputs) -> outputs { statements }``: one time step of a recurrence."""
    name: str
    inputs: list
    outputs: list
    body: list
    span: Span


@dataclass
class Setting:
    """``key = value`` in a train block."""
    name: str
    value: Expr
    span: Span


@dataclass
class Train:
    """``train [Model] { settings }``."""
    model: Optional[str]
    settings: list
    span: Span


@dataclass
class Program:
    """A whole file: its models, cells and train blocks in order of appearance."""
    source: Source
    models: list
    cells: list
    trains: list
