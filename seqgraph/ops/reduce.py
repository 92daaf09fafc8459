"""Reductions over feature axes: sum, mean, and the (log-)softmax normalisations."""

from __future__ import annotations

from ..sizes import format_shape
from .linalg import check_axis, product
from .registry import Op, ShapeError, register


def _shape_reduce(x, axis):
    for a in axis:
        check_axis(x, a)
    if len(set(axis)) != len(axis):
        raise ShapeError(f"axis {tuple(axis)} repeats an axis of {format_shape(x)}",
                         arg=0)
    dropped = {len(x) + a for a in axis}
    return tuple(d for k, d in enumerate(x) if k not in dropped)


def _spread(xp, g, x, axis):
    """``g`` with the reduced axes put back, broadcast to ``x``'s shape."""
    return xp.broadcast_to(xp.expand_dims(g, tuple(axis)), x.shape)


register(Op(
    "sum", shape=_shape_reduce,
    forward=lambda xp, x, axis: xp.asarray(xp.sum(x, axis=tuple(axis))),
    vjp=lambda xp, g, out, x, axis: (_spread(xp, g, x, axis),),
    rule="broadcast g",
    doc="The sum of x over the feature axes ``axis`` (a tuple of negative ints).",
    arity=1, attrs=("axis",),
))


def _vjp_mean(xp, g, out, x, axis):
    count = product(x.shape[a] for a in axis)
    return (_spread(xp, g / count, x, axis),)


register(Op(
    "mean", shape=_shape_reduce,
    forward=lambda xp, x, axis: xp.asarray(xp.mean(x, axis=tuple(axis))),
    vjp=_vjp_mean,
    rule="broadcast g / n",
    doc="The mean of x over the feature axes ``axis`` (a tuple of negative ints).",
    arity=1, attrs=("axis",),
))


def _shape_normalise(x, axis=-1):
    check_axis(x, axis)
    return tuple(x)


def stable_log_softmax(xp, x, axis=-1):
    """log softmax(x) along ``axis``; shifting by the max keeps every exp <= 1."""
    shifted = x - xp.max(x, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


def _forward_softmax(xp, x, axis=-1):
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


register(Op(
    "softmax", shape=_shape_normalise, forward=_forward_softmax,
    vjp=lambda xp, g, out, x, axis=-1: (
        out * (g - xp.sum(g * out, axis=axis, keepdims=True)),),
    rule="y * (g - sum(g * y))",
    doc="exp(x) / sum(exp(x)) along ``axis``, computed after subtracting the max (stable).",
    arity=1, attrs=("axis",),
))

register(Op(
    "log_softmax", shape=_shape_normalise, forward=stable_log_softmax,
    vjp=lambda xp, g, out, x, axis=-1: (
        g - xp.exp(out) * xp.sum(g, axis=axis, keepdims=True),),
    rule="g - softmax(x) * sum(g)",
    doc="x - log(sum(exp(x))) along ``axis``, computed after subtracting the max (stable).",
    arity=1, attrs=("axis",),
))
