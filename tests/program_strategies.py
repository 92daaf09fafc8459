"""Well-typed seqgraph programs drawn at random: a Hypothesis strategy for the generated-program tests.

:func:`programs` draws the text of a file holding one or two cells and a model that calls
them. Every value the generator writes has a width it knows, so each statement it emits is
meant to check: inside a cell a width is a sum of the cell's size symbols (``X + 2*H``), in
the model a number. The bodies mix what a user writes: elementwise functions and arithmetic
(``+ - * /``, ``max``), broadcasting by a reduction (``e * sum(f)``, ``e - mean(f)``) or a
number, products of parameter matrices with gated, delayed or concatenated states
(``W @ (h[t-1] * s)``, ``W @ concat(x, h[t-1])``), ``split`` and ``slice``, several states and
outputs, layer calls inside cells (``dense``), several calls of the same cell, the prelude's
``lstm``, ``gru`` and ``rnn``, backward, bidirectional and stacked calls, and a loss built
from one or two losses whose prediction (and sometimes target) are expressions, over every
step or reduced over time (``last``, ``first``, ``mean_over_time``, ``max_over_time``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from hypothesis import strategies as st

MODEL_INPUT = 4  # the features of the model's input sequence
HIDDEN = 3  # the model's `hidden` size, which every cell call passes as H
CLASSES = 3


def width_text(width: Counter) -> str:
    """``Counter({"X": 1, "H": 2})`` as the size expression ``X + 2*H``; a number stays a number."""
    terms = []
    for symbol in sorted(width, key=lambda s: (s == "", s)):
        count = width[symbol]
        if not count:
            continue
        if symbol == "":
            terms.append(str(count))
        else:
            terms.append(symbol if count == 1 else f"{count}*{symbol}")
    return " + ".join(terms)


def scaled(width: Counter, factor: int) -> Counter:
    """``width`` times ``factor``."""
    return Counter({s: c * factor for s, c in width.items()})


@dataclass
class Scope:
    """What a body being written can read: values by width, and the parameters it declared."""
    values: list = field(default_factory=list)  # (expression text, width)
    params: list = field(default_factory=list)  # declaration lines
    statements: list = field(default_factory=list)
    counter: int = 0
    in_model: bool = False

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def of_width(self, width: Counter) -> list:
        return [text for text, w in self.values if w == width]

    def param(self, shape: list, init: str = "") -> str:
        name = self.fresh("p" if len(shape) == 1 else "W")
        dims = ", ".join(width_text(d) for d in shape)
        self.params.append(f"param {name} : [{dims}]" + (f" = {init}" if init else ""))
        return name


UNARY = ["sigmoid", "tanh", "relu", "neg", "exp", "log", "softmax", "log_softmax"]
BINARY = ["+", "-", "*", "/", "max"]
# No constant initialisers: relu(p) and max(p, q) of parameters that start equal would sit on
# a kink, where central differences and any gradient rule disagree.
INITS = ["", "uniform(0.5)", "normal(0.3)", "glorot"]


@st.composite
def expression(draw, scope: Scope, width: Counter, depth: int) -> str:
    """An expression of ``width`` built from what ``scope`` holds, at most ``depth`` deep."""
    if depth <= 0:
        return draw(leaf(scope, width))
    kind = draw(st.sampled_from(["leaf", "unary", "binary", "binary", "broadcast", "matmul", "matmul",
                                 "slice", "dense"]))
    inner = lambda w=width: expression(scope, w, depth - 1)  # noqa: E731
    if kind == "leaf":
        return draw(leaf(scope, width))
    if kind == "unary":
        op = draw(st.sampled_from(UNARY))
        a = draw(inner())
        if op == "neg":
            return f"-({a})"
        if op == "exp":
            return f"exp(tanh({a}))"  # bounded, so a deep program cannot overflow
        if op == "log":
            return f"log(sigmoid({a}) + 0.5)"
        return f"{op}({a})"
    if kind == "binary":
        op = draw(st.sampled_from(BINARY))
        a, b = draw(inner()), draw(inner())
        if op == "max":
            return f"max({a}, {b})"
        if op == "/":
            return f"({a}) / (2 + tanh({b}))"
        return f"({a}) {op} ({b})"
    if kind == "broadcast":
        a = draw(inner())
        by = draw(st.sampled_from(["sum", "mean", "number"]))
        op = draw(st.sampled_from(["+", "-", "*"]))
        if by == "number":
            other = draw(st.sampled_from(["0.5", "2", "1.5"]))
        else:
            other = f"{by}({draw(inner(draw(some_width(scope))))})"
        return f"({a}) {op} {other}" if draw(st.booleans()) else f"{other} {op} ({a})"
    if kind == "matmul":
        operand, operand_width = draw(product_operand(scope, depth - 1))
        return f"({scope.param([width, operand_width], draw(st.sampled_from(INITS)))} @ {operand})"
    if kind == "slice":
        extra = draw(some_width(scope))
        start = draw(st.sampled_from([Counter(), extra]))
        whole = draw(inner(width + extra))
        return f"slice({whole}, {width_text(start) or 0}, {width_text(start + width)})"
    return f"dense({draw(inner(draw(some_width(scope))))}, {width_text(width)})"


@st.composite
def product_operand(draw, scope: Scope, depth: int) -> tuple:
    """``(text, width)`` of what a parameter matrix multiplies: a gated or delayed state, a
    concatenation of two values, or any expression."""
    kind = draw(st.sampled_from(["gated", "concat", "plain"]))
    if kind == "concat":
        (first, a), (second, b) = draw(st.lists(st.sampled_from(scope.values), min_size=2, max_size=2))
        return f"concat({first}, {second})", a + b
    width = draw(some_width(scope))
    if kind == "gated":
        return f"({draw(leaf(scope, width))} * {draw(expression(scope, width, depth))})", width
    return f"({draw(expression(scope, width, depth))})", width


@st.composite
def some_width(draw, scope: Scope) -> Counter:
    """The width of a value the scope can read (so a leaf of it exists)."""
    return Counter(draw(st.sampled_from([w for _, w in scope.values])))


@st.composite
def leaf(draw, scope: Scope, width: Counter) -> str:
    """A value of ``width``: one the scope holds, a parameter vector, or a product reaching it."""
    held = scope.of_width(width)
    kinds = ["held", "held", "held", "param"] if held else ["product"] if scope.in_model else ["param", "product"]
    kind = draw(st.sampled_from(kinds))
    if kind == "held":
        return draw(st.sampled_from(held))
    if kind == "param":
        vector = scope.param([width], draw(st.sampled_from(INITS)))
        # in a model a parameter vector only biases a sequence, so every value stays one
        return f"({draw(leaf(scope, width))} + {vector})" if scope.in_model else vector
    source, source_width = draw(st.sampled_from(scope.values))
    return f"({scope.param([width, source_width])} @ {source})"


@st.composite
def body_statements(draw, scope: Scope, widths: list, locals_: int, depth: int) -> None:
    """``locals_`` assignments (plain or a split) of widths drawn from ``widths``."""
    for _ in range(locals_):
        width = Counter(draw(st.sampled_from(widths)))
        if draw(st.integers(0, 3)) == 0:
            parts = draw(st.integers(2, 3))
            names = [scope.fresh("q") for _ in range(parts)]
            whole = draw(expression(scope, scaled(width, parts), depth))
            scope.statements.append(f"{', '.join(names)} = split({whole}, {parts})")
            scope.values.extend((name, width) for name in names)
        else:
            name = scope.fresh("a")
            scope.statements.append(f"{name} = {draw(expression(scope, width, depth))}")
            scope.values.append((name, width))


@st.composite
def cell(draw, name: str) -> tuple:
    """``(text, outputs)``: a cell ``name(x : [X]) -> ...`` with one to three [H] states."""
    X, H = Counter({"X": 1}), Counter({"H": 1})
    states = [f"s{i}" for i in range(draw(st.integers(1, 3)))]
    scope = Scope(values=[("x", X)] + [(f"{s}[t-1]", H) for s in states])
    draw(body_statements(scope, [X, H, H + X], draw(st.integers(0, 2)), depth=2))
    for state in states:
        scope.statements.append(f"{state} = {draw(expression(scope, H, 3))}")
        scope.values.append((state, H))
    outputs = states[:draw(st.integers(1, len(states)))]
    ports = ", ".join(f"{o} : [H]" for o in outputs)
    # distinct, so max(s0[t-1], s1[t-1]) is no tie; none 0, since a zero state through a
    # dense layer (whose bias starts at 0) would put relu on its kink
    starts = draw(st.permutations(["0.25", "0.5", "-1"]))
    declared = [f"state {s} : [H] = {start}" for s, start in zip(states, starts)]
    lines = scope.params + declared + scope.statements
    text = f"cell {name}(x : [X]) -> {'(' + ports + ')' if len(outputs) > 1 else ports} {{\n" + \
        "".join(f"    {line}\n" for line in lines) + "}\n"
    return text, len(outputs)


# options of a recurrent call, and how many times [hidden] its output is per step
CALL_OPTIONS = [("", 1), ("", 1), ("", 1), (", direction = backward", 1), (", layers = 2", 1),
                (", direction = both", 2)]
# what turns a sequence into one value per example for a loss, or leaves it a sequence
OVER_TIME = ["", "", "last", "last", "first", "mean_over_time", "max_over_time"]


@dataclass
class Program:
    """A drawn file's text, and whether its loss compares with a computed target."""
    text: str
    computed_target: bool


@st.composite
def programs(draw) -> Program:
    """A :class:`Program`: one or two cells and a model calling them (and the prelude's
    layers), with a loss."""
    cells = [draw(cell(f"C{i}")) for i in range(draw(st.integers(1, 2)))]
    scope = Scope(values=[("x", Counter({"": MODEL_INPUT}))], in_model=True)
    calls = draw(st.lists(st.sampled_from(list(range(len(cells))) + ["lstm", "gru", "rnn"]),
                          min_size=1, max_size=3))
    for called in calls:
        source = draw(st.sampled_from([text for text, _ in scope.values]))
        options, widening = draw(st.sampled_from(CALL_OPTIONS))
        if isinstance(called, int):
            outputs = cells[called][1]
            names = [scope.fresh("h") for _ in range(draw(st.integers(1, outputs if not options else 1)))]
            scope.statements.append(f"{', '.join(names)} = C{called}({source}, hidden{options})")
        else:
            names = [scope.fresh("h")]
            scope.statements.append(f"{names[0]} = {called}({source}, hidden{options})")
        scope.values.extend((name, Counter({"": widening * HIDDEN})) for name in names)
    draw(body_statements(scope, [Counter({"": n}) for n in (HIDDEN, MODEL_INPUT, 2)],
                         draw(st.integers(0, 2)), depth=2))
    declarations, loss, computed = draw(loss_of(scope))
    lines = scope.params + ["input x : seq[float, 4]"] + declarations + scope.statements + [f"loss = {loss}"]
    model = f"model M(hidden = {HIDDEN}) {{\n" + "".join(f"    {line}\n" for line in lines) + "}\n"
    return Program("".join(text for text, _ in cells) + model, computed)


@st.composite
def loss_of(draw, scope: Scope) -> tuple:
    """``(target declarations, loss expression, whether a target is computed)``: one or two
    terms, each an mse or a cross-entropy of an expression, over every step or the last one;
    an mse may compare with an expression instead of a declared target."""
    declarations, terms, computed_target = [], [], False
    for index in range(draw(st.integers(1, 2))):
        reduce = draw(st.sampled_from(OVER_TIME))
        over_time = not reduce
        kind = draw(st.sampled_from(["mse", "mse_computed", "cross_entropy"]))
        width = Counter({"": CLASSES})
        prediction = draw(expression(scope, width, 2))
        wrap = (lambda e: f"{reduce}({e})") if reduce else (lambda e: e)
        target = f"y{index}"
        if kind == "mse_computed":
            computed = draw(expression(scope, width, 1))
            terms.append(f"mse({wrap(prediction)}, {wrap(computed)})")
            computed_target = True
            continue
        if kind == "mse":
            declarations.append(f"target {target} : " + (f"seq[float, {CLASSES}]" if over_time else f"[{CLASSES}]"))
        else:
            declarations.append(f"target {target} : " + (f"seq[int, {CLASSES}]" if over_time else f"int[{CLASSES}]"))
        terms.append(f"{kind}({wrap(prediction)}, {target})")
    weights = draw(st.lists(st.sampled_from(["", "0.5 * ", "2 * "]), min_size=len(terms), max_size=len(terms)))
    return declarations, " + ".join(w + t for w, t in zip(weights, terms)), computed_target
