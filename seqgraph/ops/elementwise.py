"""Elementwise ops, each stated once by formulas: binary arithmetic with NumPy
broadcasting, unary functions; and the constant.

The three gates of backprop live here: ``add`` distributes the upstream gradient, ``mul``
switches it (each input gets it times the other input), ``maximum`` routes it to the winner.

:func:`pointwise` registers an elementwise op from its forward formula and one gradient
formula per differentiable input, written in the language of :mod:`seqgraph.ops.formula`
over ``{0}``, ``{1}``, ... (the inputs), ``{out}`` and ``{g}``. Everything else is derived
from them, so nothing is stated twice: the forward and the vjp evaluate the formulas with
the array namespace (broadcasting like NumPy, gradients summed back with
:func:`unbroadcast`), the compiler's fused chains and native C and CUDA loops are generated
from them, the step loops' in-place calls and what each gradient reads come from them
(:func:`seqgraph.ops.kernels.formula_kernel`), and so does whether the op runs in place
(``Op.in_place``). An op with attributes (a slope, bounds, an exponent) states its formulas
as a function of them, the numbers written into the formulas (:func:`number`). More such
ops are in :mod:`seqgraph.ops.pointwise` and :mod:`seqgraph.ops.per_example`.
"""

from __future__ import annotations

from functools import lru_cache, reduce

from ..sizes import format_shape
from .formula import evaluator
from .kernels import formula_kernel, formula_slots, formula_tree, in_place_ufunc
from .registry import Op, ShapeError, register, unbroadcast


def broadcast_shapes(a: tuple, b: tuple) -> tuple:
    """The NumPy broadcast of two feature shapes (right-aligned; a 1 stretches)."""
    n = max(len(a), len(b))
    a_full = (1,) * (n - len(a)) + tuple(a)
    b_full = (1,) * (n - len(b)) + tuple(b)
    out = []
    for da, db in zip(a_full, b_full):
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ShapeError(
                f"cannot broadcast {format_shape(a)} with {format_shape(b)}", arg=1,
                hint="elementwise operands must have equal sizes, or 1, on each trailing axis")
    return tuple(out)


# --- ops stated by formulas -------------------------------------------------------------


def number(value) -> str:
    """``value`` written into a formula."""
    return f"({float(value)!r})"


@lru_cache(maxsize=None)
def _evaluators(formulas, arity: int, attrs: tuple) -> tuple:
    """The evaluators of the forward formula and of each gradient formula of ``formulas(**attrs)``."""
    forward, gradients = formulas(**dict(attrs))
    return (evaluator((formula_tree(forward, arity),)),
            {port: evaluator((formula_tree(text, arity),)) for port, text in gradients.items()})


def pointwise(name: str, arity: int, formulas, rule: str, doc: str, attrs: tuple = (),
              nondiff: tuple = (), held: tuple = (), broadcasting: bool = False, forward=None,
              fresh: bool = False) -> Op:
    """Register the elementwise op whose formulas are ``formulas(**attrs)``: a pair of the
    forward formula and ``{input: gradient formula}`` (its keyword defaults are the
    attributes' defaults).

    ``forward`` replaces the evaluated forward formula on an array namespace where another
    form of the same function is better there (sigmoid's, which never overflows).
    ``broadcasting``, ``fresh``: see :class:`~seqgraph.ops.registry.Op`. (A backend may put faster
    pieces of its own in front of the forward and vjp: see :mod:`seqgraph.backends.protocol`.)"""
    slots = formula_slots(arity)
    fixed = None if attrs else _evaluators(formulas, arity, ())

    def evaluators(values: dict) -> tuple:
        return fixed or _evaluators(formulas, arity, tuple(sorted(values.items())))

    def evaluated_forward(xp, *inputs, **values):
        return xp.asarray(evaluators(values)[0](dict(zip(slots, inputs)), xp)[0])

    def vjp(xp, g, out, *inputs, wanted=None, **values):
        gradients = evaluators(values)[1]
        bound = dict(zip(slots, inputs + (out,)), g0=g)
        return tuple(_gradient(xp, gradients[port], bound, g, x.shape)
                     if port in gradients and (wanted is None or wanted[port]) else None
                     for port, x in enumerate(inputs))

    def kernel(**values):
        return formula_kernel(arity, *formulas(**values))

    shape = (lambda *shapes, **_: reduce(broadcast_shapes, shapes)) if arity > 1 else (lambda x, **_: tuple(x))
    return register(Op(name, shape=shape, forward=forward or evaluated_forward, vjp=vjp, rule=rule, doc=doc,
                       arity=arity, nondiff=nondiff, held=held, attrs=attrs, selective=arity > 1,
                       kernel=kernel if attrs else kernel(), broadcasting=broadcasting, fresh=fresh,
                       in_place=None if attrs else in_place_ufunc(formulas()[0], arity)))


def _gradient(xp, formula, bound: dict, g, shape: tuple):
    """One input's gradient: its ``formula``'s evaluator run and the result summed down to
    the input's ``shape``."""
    grad = formula(bound, xp)[0]
    return unbroadcast(xp, grad if grad.shape == g.shape else xp.broadcast_to(grad, g.shape), shape)


# --- binary ops -------------------------------------------------------------------------

pointwise("add", 2, lambda: ("{0} + {1}", {0: "{g}", 1: "{g}"}), "distribute",
          "a + b, broadcasting like NumPy; the gradient reaches both inputs unchanged.",
          broadcasting=True, fresh=True)
pointwise("sub", 2, lambda: ("{0} - {1}", {0: "{g}", 1: "-{g}"}), "distribute (negated to b)",
          "a - b, broadcasting like NumPy.", broadcasting=True, fresh=True)
pointwise("mul", 2, lambda: ("{0} * {1}", {0: "{g} * {1}", 1: "{g} * {0}"}), "switch",
          "a * b elementwise, broadcasting; each input's gradient is g times the other.",
          broadcasting=True, fresh=True)
pointwise("div", 2, lambda: ("{0} / {1}", {0: "{g} / {1}", 1: "-{g} * {out} / {1}"}), "g / b, -g * a / b^2",
          "a / b elementwise, broadcasting like NumPy.", broadcasting=True, fresh=True)
pointwise("maximum", 2, lambda: ("max({0}, {1})", {0: "{g} * (({0} > {1}) + 0.5 * ({0} == {1}))",
                                                   1: "{g} * (({1} > {0}) + 0.5 * ({0} == {1}))"}),
          "route",
          "The elementwise max of a and b, broadcasting; the gradient goes to the larger input. "
          "Tie rule: where a == b the upstream gradient is split evenly, half to each input.",
          broadcasting=True)


# --- unary ops --------------------------------------------------------------------------


def _forward_sigmoid(xp, x):
    # exp(-|x|) never overflows; pick the algebraically equal form that avoids 1 + huge.
    # (The formula's exp(-x) may overflow to inf for very negative x, and 1 / inf is exactly
    # the right 0: the step loops, which run with overflow warnings off, use it.)
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


register(Op("copy", shape=lambda x: tuple(x), forward=lambda xp, x: x.copy(), vjp=lambda xp, g, out, x: (g,),
            rule="g", arity=1,
            doc="x itself, as a value of its own: a state that holds another state's previous value "
                "(a delay line, hp = h[t-1])."))
pointwise("neg", 1, lambda: ("-{0}", {0: "-{g}"}), "-g", "-x.", fresh=True)
# sigmoid's and tanh's gradients read the kept output y: y (1 - y) and 1 - y^2
pointwise("sigmoid", 1, lambda: ("1 / (1 + exp(-{0}))", {0: "{g} * {out} * (1 - {out})"}), "g * y * (1 - y)",
          "The logistic function 1 / (1 + exp(-x)), computed without overflow for any x.",
          forward=_forward_sigmoid, fresh=True)
pointwise("tanh", 1, lambda: ("tanh({0})", {0: "{g} * (1 - {out} * {out})"}), "g * (1 - y^2)",
          "The hyperbolic tangent.", fresh=True)
pointwise("relu", 1, lambda: ("max({0}, 0)", {0: "{g} * ({0} > 0)"}), "g * [x > 0]",
          "max(x, 0); its gradient at exactly 0 is 0 (as in PyTorch).", fresh=True)
pointwise("exp", 1, lambda: ("exp({0})", {0: "{g} * {out}"}), "g * y", "e to the power x.", fresh=True)
pointwise("log", 1, lambda: ("log({0})", {0: "{g} / {0}"}), "g / x", "The natural logarithm.", fresh=True)


# --- constants --------------------------------------------------------------------------

register(Op(
    "const",
    shape=lambda value=0.0, dtype="float32": (),
    # a fill on the device, not a copy from the host: a captured CUDA graph replays a copy
    # from host memory that is long gone (see seqgraph.backends.capture)
    forward=lambda xp, value=0.0, dtype="float32": xp.full((), value, dtype=dtype),
    vjp=lambda xp, g, out, **attrs: (),
    rule="none",
    doc="A 0-d array holding the float attribute ``value`` in ``dtype``; it has no inputs.",
    arity=0,
    attrs=("value", "dtype"),
))
