"""Elementwise ops: binary arithmetic with NumPy broadcasting, unary functions, constants.

The three gates of backprop live here: ``add`` distributes the upstream gradient, ``mul``
switches it (each input gets it times the other input), ``maximum`` routes it to the winner.
"""

from __future__ import annotations

from ..sizes import format_shape
from .registry import Op, ShapeError, register, unbroadcast


# --- binary ops -------------------------------------------------------------------------


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


def _binary(name, forward, grads, rule, doc):
    """Register a broadcasting binary op. ``grads`` holds one function per input,
    ``grad(xp, g, out, a, b)``, giving that input's full-size gradient, which is summed back
    to the input's shape here; only the wanted ones run."""

    def vjp(xp, g, out, a, b, wanted=(True, True)):
        return tuple(unbroadcast(xp, grad(xp, g, out, a, b), x.shape) if want else None
                     for grad, x, want in zip(grads, (a, b), wanted))

    return register(Op(name, shape=broadcast_shapes, forward=forward, vjp=vjp, rule=rule,
                       doc=doc, arity=2, selective=True))


def _tie_weight(xp, g, a, b):
    # Ties split the gradient evenly: the subgradient halfway between the two one-sided ones.
    return xp.where(a > b, 1.0, xp.where(a == b, 0.5, 0.0)).astype(g.dtype)


_binary("add", lambda xp, a, b: a + b,
        (lambda xp, g, out, a, b: g, lambda xp, g, out, a, b: g),
        "distribute", "a + b, broadcasting like NumPy; the gradient reaches both inputs unchanged.")
_binary("sub", lambda xp, a, b: a - b,
        (lambda xp, g, out, a, b: g, lambda xp, g, out, a, b: -g),
        "distribute (negated to b)", "a - b, broadcasting like NumPy.")
_binary("mul", lambda xp, a, b: a * b,
        (lambda xp, g, out, a, b: g * b, lambda xp, g, out, a, b: g * a),
        "switch", "a * b elementwise, broadcasting; each input's gradient is g times the other.")
_binary("div", lambda xp, a, b: a / b,
        (lambda xp, g, out, a, b: g / b, lambda xp, g, out, a, b: -g * out / b),
        "g / b, -g * a / b^2", "a / b elementwise, broadcasting like NumPy.")
_binary("maximum", lambda xp, a, b: xp.maximum(a, b),
        (lambda xp, g, out, a, b: g * _tie_weight(xp, g, a, b),
         lambda xp, g, out, a, b: g * (1 - _tie_weight(xp, g, a, b))),
        "route",
        "The elementwise max of a and b, broadcasting; the gradient goes to the larger input. "
        "Tie rule: where a == b the upstream gradient is split evenly, half to each input.")


# --- unary ops --------------------------------------------------------------------------


def _unary(name, forward, slope, rule, doc):
    """Register an elementwise unary op; ``slope(xp, x, y)`` is dy/dx given input and output."""
    return register(Op(name, shape=lambda x: tuple(x), forward=forward,
                       vjp=lambda xp, g, out, x: (g * slope(xp, x, out),),
                       rule=rule, doc=doc, arity=1))


def _forward_sigmoid(xp, x):
    # exp(-|x|) never overflows; pick the algebraically equal form that avoids 1 + huge.
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


_unary("neg", lambda xp, x: -x, lambda xp, x, y: -1, "-g", "-x.")
_unary("sigmoid", _forward_sigmoid, lambda xp, x, y: y * (1 - y), "g * y * (1 - y)",
       "The logistic function 1 / (1 + exp(-x)), computed without overflow for any x.")
_unary("tanh", lambda xp, x: xp.tanh(x), lambda xp, x, y: 1 - y * y, "g * (1 - y^2)",
       "The hyperbolic tangent.")
_unary("relu", lambda xp, x: xp.maximum(x, 0), lambda xp, x, y: x > 0, "g * [x > 0]",
       "max(x, 0); its gradient at exactly 0 is 0 (as in PyTorch).")
_unary("exp", lambda xp, x: xp.exp(x), lambda xp, x, y: y, "g * y", "e to the power x.")
_unary("log", lambda xp, x: xp.log(x), lambda xp, x, y: 1 / x, "g / x",
       "The natural logarithm.")


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
