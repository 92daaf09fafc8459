"""The formula language elementwise ops are stated in, and what is written from a formula.

A formula is one expression over ``x{k}`` (a value: an op's input ``k``, or its output) and
``g{k}`` (a cotangent)::

    formula    := comparison
    comparison := sum [(> | < | >= | <= | == | !=) sum]
    sum        := product ((+ | -) product)*
    product    := unary ((* | /) unary)*
    unary      := - unary | primary
    primary    := number | x{k} | g{k} | function(formula, ...) | (formula)
    function   := exp | log | log1p | tanh | sqrt | abs | erf       (one argument)
                | max | min | pow                                   (two)
                | where                                             (three)

Precedence and grouping are Python's (``-a * b`` is ``(-a) * b``; ``a - b - c`` is
``(a - b) - c``); a comparison is 1 where it holds, else 0, and takes no chain
(``a < b < c`` is refused); ``where(c, a, b)`` is ``a`` where ``c`` is not 0, else ``b``. The
language is parsed here, by a small parser of its own, rather than as Python, so that what
is refused is refused by the grammar above and not by what Python happens to accept.

A formula is parsed once into a tree of :class:`Node` (:func:`parse_formula`), and that one
tree is

- **evaluated with an array namespace** (:func:`evaluate`, :func:`evaluate_all`): how an
  elementwise op computes its forward and vjp on NumPy or CuPy, and how a fused chain runs
  where it has no generated kernel. Every value is of the element type: a comparison's or a
  ``where``'s result is cast to the dtype of the formula's float arrays; a sub-expression
  that occurs more than once is computed once;
- **written as C or CUDA C** (:func:`cuda_expression`, :func:`cuda_statements`) over an element
  type ``T``: every number a literal of type ``T``, ``max`` and ``min`` the NaN-propagating
  maximum and minimum NumPy computes (functions ``sg_max`` and ``sg_min`` the generated
  code defines), ``where`` a conditional expression, a comparison ``1`` or ``0`` of type
  ``T``, and a sub-expression used more than once a ``const T`` local computed once;
- **written as ufunc calls** for the compiler's step loops (:mod:`seqgraph.ops.kernels`).

This module is pure: it imports no backend, and the backends import it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from ..errors import SeqgraphError

# each function of the formula language and how many arguments it takes
FUNCTIONS = {"exp": 1, "log": 1, "log1p": 1, "tanh": 1, "sqrt": 1, "abs": 1, "erf": 1,
             "max": 2, "min": 2, "pow": 2, "where": 3}
# the ufunc each function is on an array namespace, where its name differs
UFUNC_NAMES = {"abs": "absolute", "max": "maximum", "min": "minimum", "pow": "power"}
# the ufunc each operator is on an array namespace
OPERATOR_UFUNCS = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide", ">": "greater",
                   "<": "less", ">=": "greater_equal", "<=": "less_equal", "==": "equal",
                   "!=": "not_equal"}
# the C name of each function, where it differs (C's float ``exp`` is renamed by the caller)
CUDA_NAMES = {"abs": "fabs", "max": "sg_max", "min": "sg_min"}

COMPARISONS = (">", "<", ">=", "<=", "==", "!=")


@dataclass(frozen=True)
class Node:
    """One node of a parsed formula: ``kind`` is ``num``, ``var``, ``neg``, ``bin``, ``cmp``
    or ``call``; ``op`` the number, the variable's name, the operator or the function name;
    ``args`` the operands."""
    kind: str
    op: object
    args: tuple = ()

    @property
    def leaf(self) -> bool:
        """Whether this is a number or a variable."""
        return self.kind in ("num", "var")


# -- parsing ------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\s*(?:(?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
                    r"|(?P<name>[A-Za-z_]\w*)|(?P<symbol>>=|<=|==|!=|[-+*/<>(),]))")
_VARIABLE = re.compile(r"[xg]\d+")
_HINT = f"formulas may use + - * /, comparisons and {', '.join(FUNCTIONS)}"


def parse_formula(text: str) -> Node:
    """The tree of one formula; anything outside the formula language is a SeqgraphError."""
    return _Parser(text).formula()


def _tokens(text: str) -> list:
    """``(kind, text)`` of each token of ``text``, then ``("end", "")``."""
    found, at = [], 0
    while text[at:].strip():
        match = _TOKEN.match(text, at)
        if match is None:
            raise _unparsable(text, f"unexpected {text[at:].strip()[0]!r}")
        found.append((match.lastgroup, match.group(match.lastgroup)))
        at = match.end()
    return found + [("end", "")]


def _unparsable(text: str, why: str) -> SeqgraphError:
    return SeqgraphError(f"fused formula does not parse: {text!r} ({why})")


def _outside(text: str, piece: str) -> SeqgraphError:
    return SeqgraphError(f"fused formula {text!r} uses {piece!r}, which has no kernel form", hint=_HINT)


class _Parser:
    """A recursive-descent parser of the grammar in the module docstring."""

    def __init__(self, text: str):
        self.text = text
        self.tokens = _tokens(text)
        self.at = 0

    def formula(self) -> Node:
        tree = self.comparison()
        if self.peek() != "end":
            raise _unparsable(self.text, f"unexpected {self.found()}")
        return tree

    def peek(self) -> str:
        kind, token = self.tokens[self.at]
        return token if kind == "symbol" else kind

    def found(self) -> str:
        token = self.tokens[self.at][1]
        return repr(token) if token else "end"

    def take(self) -> str:
        token = self.tokens[self.at][1]
        self.at += 1
        return token

    def expect(self, symbol: str) -> None:
        if self.peek() != symbol:
            raise _unparsable(self.text, f"expected {symbol!r}, found {self.found()}")
        self.take()

    def comparison(self) -> Node:
        left = self.sum()
        if self.peek() not in COMPARISONS:
            return left
        symbol = self.take()
        right = self.sum()
        if self.peek() in COMPARISONS:
            raise _outside(self.text, "a chained comparison")
        return Node("cmp", symbol, (left, right))

    def sum(self) -> Node:
        tree = self.product()
        while self.peek() in ("+", "-"):
            symbol = self.take()
            tree = Node("bin", symbol, (tree, self.product()))
        return tree

    def product(self) -> Node:
        tree = self.unary()
        while self.peek() in ("*", "/"):
            symbol = self.take()
            tree = Node("bin", symbol, (tree, self.unary()))
        return tree

    def unary(self) -> Node:
        if self.peek() == "-":
            self.take()
            return Node("neg", "-", (self.unary(),))
        return self.primary()

    def primary(self) -> Node:
        kind = self.peek()
        if kind == "number":
            token = self.take()
            return Node("num", int(token) if token.isdigit() else float(token))
        if kind == "(":
            self.take()
            tree = self.comparison()
            self.expect(")")
            return tree
        if kind != "name":
            raise _unparsable(self.text, f"unexpected {self.found()}")
        name = self.take()
        if self.peek() != "(":
            if not _VARIABLE.fullmatch(name):
                raise _outside(self.text, name)
            return Node("var", name)
        if name not in FUNCTIONS:
            raise _outside(self.text, name)
        self.take()
        args = [self.comparison()]
        while self.peek() == ",":
            self.take()
            args.append(self.comparison())
        self.expect(")")
        if len(args) != FUNCTIONS[name]:
            raise _outside(self.text, f"{name} of {len(args)} argument{'s' * (len(args) != 1)}")
        return Node("call", name, tuple(args))


def variables(tree: Node) -> set:
    """The names of the variables ``tree`` reads."""
    if tree.kind == "var":
        return {tree.op}
    return set().union(*(variables(a) for a in tree.args)) if tree.args else set()


# -- evaluation with an array namespace ---------------------------------------------------------


def evaluate(formula, values: dict, xp):
    """The value of ``formula`` (text or a parsed tree) with ``values`` bound to its variables,
    computed with namespace ``xp``."""
    tree = parse_formula(formula) if isinstance(formula, str) else formula
    return evaluator((tree,))(values, xp)[0]


def evaluate_all(trees: tuple, values: dict, xp) -> list:
    """The values of several parsed formulas over the same ``values``; a sub-expression any
    of them share is computed once. A formula that is one variable gives that value itself."""
    return evaluator(tuple(trees))(values, xp)


@lru_cache(maxsize=None)
def evaluator(trees: tuple):
    """A function ``(values, xp)`` giving the values of the parsed formulas ``trees`` (made
    once per formula: what is evaluated repeatedly holds on to it)."""
    steps, position = [], {}

    def visit(node: Node) -> None:
        if node in position:
            return
        for arg in node.args:
            visit(arg)
        position[node] = len(steps)
        steps.append(_step(node, tuple(position[a] for a in node.args)))

    for tree in trees:
        visit(tree)
    roots = [position[tree] for tree in trees]

    def run(values: dict, xp) -> list:
        dtype = float_dtype(values)
        computed = []
        for step, computes in steps:
            value = step(computed, values, xp)
            if computes and dtype is not None and getattr(value, "dtype", dtype) is not dtype and value.dtype != dtype:
                value = value.astype(dtype)
            computed.append(value)
        return [computed[k] for k in roots]

    return run


def _step(node: Node, operands: tuple) -> tuple:
    """``(step, computes)``: ``step(computed, values, xp)`` gives the value of ``node`` from
    the values computed before it (at ``operands``); ``computes`` says it is not a leaf."""
    if node.kind == "num":
        return (lambda computed, values, xp: node.op), False
    if node.kind == "var":
        return (lambda computed, values, xp: values[node.op]), False
    if node.kind == "call" and node.op == "where":
        c, a, b = operands
        return (lambda computed, values, xp: xp.where(xp.not_equal(computed[c], 0), computed[a], computed[b])), True
    name = ufunc_name(node)
    if len(operands) == 1:
        (a,) = operands
        return (lambda computed, values, xp: function(xp, name)(computed[a])), True
    a, b = operands
    return (lambda computed, values, xp: function(xp, name)(computed[a], computed[b])), True


def ufunc_name(node: Node) -> str:
    """The ufunc that computes ``node`` (an operator, ``-x`` or a function other than where)."""
    if node.kind == "neg":
        return "negative"
    if node.kind == "call":
        return UFUNC_NAMES.get(node.op, node.op)
    return OPERATOR_UFUNCS[node.op]


def float_dtype(values: dict):
    """The dtype of the first float array among ``values`` (None if there is none)."""
    return next((v.dtype for v in values.values() if getattr(getattr(v, "dtype", None), "kind", "") == "f"), None)


# where a namespace lacks a function of the language, the backend over that namespace says
# where to find it: namespace -> {name: loader returning the function}
PROVIDED: dict = {}


def provide(xp, name: str, loader) -> None:
    """Let formulas over namespace ``xp`` call ``name``, which ``xp`` lacks, as ``loader()``
    (called the first time it is needed)."""
    PROVIDED.setdefault(xp, {})[name] = loader


def function(xp, name: str):
    """Function ``name`` of namespace ``xp``: its own, else the one its backend provided
    (:func:`provide`); ``erf``, which NumPy lacks, is otherwise SciPy's."""
    found = getattr(xp, name, None)
    if found is not None:
        return found
    loader = PROVIDED.get(xp, {}).get(name)
    if loader is not None:
        return loader()
    if name != "erf":
        raise AttributeError(f"namespace {getattr(xp, '__name__', xp)!r} has no function {name!r}")
    from scipy.special import erf
    return erf


# -- C and CUDA C ---------------------------------------------------------------------------------


def cuda_expression(node: Node, names: dict, functions: dict = None) -> str:
    """C (and CUDA C) for ``node`` over element type ``T``; sub-trees in ``names`` are read
    from the locals named there; ``functions`` renames functions (by default ``max`` is
    ``sg_max``, ``abs`` is ``fabs`` (see :data:`CUDA_NAMES`), others keep their names unless
    renamed: C's float ``exp`` is ``expf``)."""
    if node in names:
        return names[node]
    if node.kind == "num":
        return f"((T){_literal(node.op)})"
    if node.kind == "var":
        return node.op
    args = [cuda_expression(a, names, functions) for a in node.args]
    if node.kind == "neg":
        return f"(-{args[0]})"
    if node.kind == "call" and node.op == "where":
        return f"({args[0]} != ((T)0) ? {args[1]} : {args[2]})"
    if node.kind == "call":
        name = (functions or {}).get(node.op, CUDA_NAMES.get(node.op, node.op))
        return f"{name}({', '.join(args)})"
    if node.kind == "cmp":
        return f"((T)({args[0]} {node.op} {args[1]}))"
    return f"({args[0]} {node.op} {args[1]})"


def _literal(number) -> str:
    if isinstance(number, int):
        return str(number)
    if not math.isfinite(number):
        raise SeqgraphError(f"fused formula holds the number {number}, which has no C literal")
    return repr(float(number))


def cuda_statements(assignments: list, functions: dict = None) -> list:
    """Lines of C computing ``target = formula`` for every ``(target, tree)`` given; a
    sub-expression that occurs more than once becomes a ``const T`` local, computed once.

    With several targets every value is computed before any is stored: an output may share
    its buffer with an input."""
    counts: dict = {}
    for _, tree in assignments:
        _count(tree, counts)
    names, lines = {}, []
    for _, tree in assignments:
        _bind_shared(tree, counts, names, lines, functions)
    if len(assignments) == 1:
        (target, tree), = assignments
        return lines + [f"{target} = {cuda_expression(tree, names, functions)};"]
    lines += [f"const T r{k} = {cuda_expression(tree, names, functions)};"
              for k, (_, tree) in enumerate(assignments)]
    return lines + [f"{target} = r{k};" for k, (target, _) in enumerate(assignments)]


def _count(node: Node, counts: dict) -> None:
    counts[node] = counts.get(node, 0) + 1
    if counts[node] == 1:
        for arg in node.args:
            _count(arg, counts)


def _bind_shared(node: Node, counts: dict, names: dict, lines: list, functions: dict = None) -> None:
    if node in names or node.leaf:
        return
    for arg in node.args:
        _bind_shared(arg, counts, names, lines, functions)
    if counts[node] > 1:
        name = f"s{len(names)}"
        lines.append(f"const T {name} = {cuda_expression(node, names, functions)};")
        names[node] = name
