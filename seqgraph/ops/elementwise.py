"""Elementwise ops: binary arithmetic with NumPy broadcasting, unary functions, constants.

The three gates of backprop live here: ``add`` distributes the upstream gradient, ``mul``
switches it (each input gets it times the other input), ``maximum`` routes it to the winner.
"""

from __future__ import annotations

from ..sizes import format_shape
from .kernels import Call, Kernel, into, negated, over, passed, slope_times, times, ufunc_call
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


def _binary(name, forward, grads, rule, doc, kernel=None):
    """Register a broadcasting binary op. ``grads`` holds one function per input,
    ``grad(xp, g, out, a, b)``, giving that input's full-size gradient, which is summed back
    to the input's shape here; only the wanted ones run. ``kernel``: see Op.kernel."""

    def vjp(xp, g, out, a, b, wanted=(True, True)):
        return tuple(unbroadcast(xp, grad(xp, g, out, a, b), x.shape) if want else None
                     for grad, x, want in zip(grads, (a, b), wanted))

    return register(Op(name, shape=broadcast_shapes, forward=forward, vjp=vjp, rule=rule,
                       doc=doc, arity=2, selective=True, kernel=kernel, broadcasting=True))


def _tie_weight(xp, g, a, b):
    # Ties split the gradient evenly: the subgradient halfway between the two one-sided ones.
    return xp.where(a > b, 1.0, xp.where(a == b, 0.5, 0.0)).astype(g.dtype)


_binary("add", lambda xp, a, b: a + b,
        (lambda xp, g, out, a, b: g, lambda xp, g, out, a, b: g),
        "distribute", "a + b, broadcasting like NumPy; the gradient reaches both inputs unchanged.",
        Kernel(ufunc_call("add"), {0: passed, 1: passed}, "{0} + {1}",
               {0: "{g}", 1: "{g}"}, {0: (), 1: ()}))
_binary("sub", lambda xp, a, b: a - b,
        (lambda xp, g, out, a, b: g, lambda xp, g, out, a, b: -g),
        "distribute (negated to b)", "a - b, broadcasting like NumPy.",
        Kernel(ufunc_call("subtract"), {0: passed, 1: negated}, "{0} - {1}",
               {0: "{g}", 1: "-{g}"}, {0: (), 1: ()}))
_binary("mul", lambda xp, a, b: a * b,
        (lambda xp, g, out, a, b: g * b, lambda xp, g, out, a, b: g * a),
        "switch", "a * b elementwise, broadcasting; each input's gradient is g times the other.",
        Kernel(ufunc_call("multiply"), {0: times(lambda out, ins: ins[1]),
                                        1: times(lambda out, ins: ins[0])}, "{0} * {1}",
               {0: "{g} * {1}", 1: "{g} * {0}"}, {0: (1,), 1: (0,)}))
def _div_gradient_b(dst, mode, g, out, ins, tmp):
    # d(a / b)/db = -out / b
    return into(dst, mode, tmp, lambda t: [Call("multiply", (g, out), t), Call("divide", (t, ins[1]), t),
                                           Call("negative", (t,), t)])


_binary("div", lambda xp, a, b: a / b,
        (lambda xp, g, out, a, b: g / b, lambda xp, g, out, a, b: -g * out / b),
        "g / b, -g * a / b^2", "a / b elementwise, broadcasting like NumPy.",
        Kernel(ufunc_call("divide"), {0: over(lambda out, ins: ins[1]), 1: _div_gradient_b},
               "{0} / {1}", {0: "{g} / {1}", 1: "-{g} * {out} / {1}"}, {0: (1,), 1: (1, "out")}))
_binary("maximum", lambda xp, a, b: xp.maximum(a, b),
        (lambda xp, g, out, a, b: g * _tie_weight(xp, g, a, b),
         lambda xp, g, out, a, b: g * (1 - _tie_weight(xp, g, a, b))),
        "route",
        "The elementwise max of a and b, broadcasting; the gradient goes to the larger input. "
        "Tie rule: where a == b the upstream gradient is split evenly, half to each input.")


# --- unary ops --------------------------------------------------------------------------


def _unary(name, forward, slope, rule, doc, kernel=None):
    """Register an elementwise unary op; ``slope(xp, x, y)`` is dy/dx given input and output.
    ``kernel``: see Op.kernel."""
    return register(Op(name, shape=lambda x: tuple(x), forward=forward,
                       vjp=lambda xp, g, out, x: (g * slope(xp, x, out),),
                       rule=rule, doc=doc, arity=1, kernel=kernel))


def _forward_sigmoid(xp, x):
    # exp(-|x|) never overflows; pick the algebraically equal form that avoids 1 + huge.
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _sigmoid_in_place(out, ins):
    # 1 / (1 + exp(-x)); exp may overflow to inf for very negative x, and 1 / inf is exactly
    # the right 0 (the step loops run with overflow warnings off).
    return [Call("negative", (ins[0],), out), Call("exp", (out,), out), Call("add", (out, 1.0), out),
            Call("reciprocal", (out,), out)]


_unary("copy", lambda xp, x: x.copy(), lambda xp, x, y: 1, "g",
       "x itself, as a value of its own: a state that holds another state's previous value "
       "(a delay line, hp = h[t-1]).")

# The kernels' gradients of sigmoid and tanh read the kept output y: y (1 - y) and 1 - y^2.
_unary("neg", lambda xp, x: -x, lambda xp, x, y: -1, "-g", "-x.",
       Kernel(ufunc_call("negative"), {0: negated}, "-{0}", {0: "-{g}"}, {0: ()}))
_unary("sigmoid", _forward_sigmoid, lambda xp, x, y: y * (1 - y), "g * y * (1 - y)",
       "The logistic function 1 / (1 + exp(-x)), computed without overflow for any x.",
       Kernel(_sigmoid_in_place, {0: slope_times(lambda t, out, ins: [
           Call("subtract", (1.0, out), t), Call("multiply", (t, out), t)])},
           "1 / (1 + exp(-{0}))", {0: "{g} * {out} * (1 - {out})"}, {0: ("out",)}))
_unary("tanh", lambda xp, x: xp.tanh(x), lambda xp, x, y: 1 - y * y, "g * (1 - y^2)",
       "The hyperbolic tangent.",
       Kernel(ufunc_call("tanh"), {0: slope_times(lambda t, out, ins: [
           Call("multiply", (out, out), t), Call("subtract", (1.0, t), t)])},
           "tanh({0})", {0: "{g} * (1 - {out} * {out})"}, {0: ("out",)}))
_unary("relu", lambda xp, x: xp.maximum(x, 0), lambda xp, x, y: x > 0, "g * [x > 0]",
       "max(x, 0); its gradient at exactly 0 is 0 (as in PyTorch).",
       Kernel(lambda out, ins: [Call("maximum", (ins[0], 0.0), out, keyword=True)],
              {0: slope_times(lambda t, out, ins: [Call("greater", (ins[0], 0.0), t)])},
              "max({0}, 0)", {0: "{g} * ({0} > 0)"}, {0: (0,)}))
_unary("exp", lambda xp, x: xp.exp(x), lambda xp, x, y: y, "g * y", "e to the power x.",
       Kernel(ufunc_call("exp"), {0: times(lambda out, ins: out)}, "exp({0})",
              {0: "{g} * {out}"}, {0: ("out",)}))
_unary("log", lambda xp, x: xp.log(x), lambda xp, x, y: 1 / x, "g / x",
       "The natural logarithm.",
       Kernel(ufunc_call("log"), {0: over(lambda out, ins: ins[0])}, "log({0})",
              {0: "{g} / {0}"}, {0: (0,)}))


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
