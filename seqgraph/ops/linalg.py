"""Linear algebra and shape plumbing: matmul, affine, concat, slice, reshape, transpose, flatten.

Axis attributes are negative integers counted from the last axis, so they name the same
feature axis however many leading (batch, time) axes a runtime array carries.
"""

from __future__ import annotations

from ..sizes import format_shape
from .registry import Op, ShapeError, register, unbroadcast


def check_axis(shape: tuple, axis: int, arg: int = 0) -> None:
    """Raise a ShapeError unless ``axis`` is a negative axis of a feature shape ``shape``."""
    if not (isinstance(axis, int) and -len(shape) <= axis <= -1):
        raise ShapeError(f"axis {axis} is not an axis of {format_shape(shape)}", arg=arg,
                         hint="axes are negative, counted from the last: -1 is the last axis")


def product(sizes) -> object:
    """The product of some sizes (1 for none)."""
    total = 1
    for size in sizes:
        total = total * size
    return total


def lead(shape: tuple, ndim: int) -> tuple:
    """All but the last ``ndim`` entries of ``shape``."""
    return tuple(shape[:len(shape) - ndim])


# --- matmul -----------------------------------------------------------------------------


def _shape_matmul(w, x):
    if len(w) != 2:
        raise ShapeError(f"W must be a matrix [m, n], got {format_shape(w)}", arg=0)
    if len(x) < 1 or x[-1] != w[1]:
        raise ShapeError(f"W is {format_shape(w)} but x is {format_shape(x)}", arg=1,
                         hint=f"the last axis of x must equal W's second axis, {w[1]}")
    return tuple(x[:-1]) + (w[0],)


def _vjp_matmul(xp, g, out, w, x, wanted=(True, True)):
    m, n = w.shape
    gw = weight_gradient(xp, g.reshape(-1, m), x.reshape(-1, n)) if wanted[0] else None
    return gw, (_flat_product(xp, g, w) if wanted[1] else None)


def weight_gradient(xp, g_rows, x_rows):
    """``g_rows.T @ x_rows``: a weight's gradient summed over every row (batch and time) as
    one product (the products library picks the faster order for a narrow x: see
    :meth:`seqgraph.backends.mkl.Products.matmul`)."""
    return xp.matmul(g_rows.T, x_rows)


def _flat_product(xp, x, w):
    """``x @ w`` for x with any leading axes, as one 2-D product: a stacked (T, B, n) operand
    would otherwise run as T small products."""
    return xp.matmul(x.reshape(-1, x.shape[-1]), w).reshape(x.shape[:-1] + (w.shape[-1],))


register(Op(
    "matmul", shape=_shape_matmul, fresh=True,
    forward=lambda xp, w, x: _flat_product(xp, x, w.T),
    vjp=_vjp_matmul,
    rule="gW = sum g x^T, gx = W^T g",
    doc="W x for each example: W is an [m, n] parameter, x is (..., n) with any leading axes, "
        "the result (..., m) is x @ W.T.",
    arity=2, selective=True,
))


# --- affine -----------------------------------------------------------------------------
# ``W x + b`` as one op (the compiler makes it from a product and a bias added over all
# steps). Where W has more rows than columns the bias rides in the product: x gets a column
# of ones and W the bias as a column, so no pass over the (..., m) result adds it, and the
# bias gradient is the last column of the weight gradient's product, not a sum of its own.


def _shape_affine(w, b, x):
    out = _shape_matmul(w, x)
    if tuple(b) != (w[0],):
        raise ShapeError(f"b must be [{w[0]}] for W {format_shape(w)}, got {format_shape(b)}", arg=1)
    return out


def _bias_rides(w) -> bool:
    rows, columns = w.shape
    return rows > columns


def _with_ones(xp, x):
    """``x`` as rows (N, n) with a column of ones appended."""
    flat = x.reshape(-1, x.shape[-1])
    out = xp.empty((flat.shape[0], flat.shape[1] + 1), dtype=x.dtype)
    out[:, :-1] = flat
    out[:, -1] = 1
    return out


def _forward_affine(xp, w, b, x):
    if _bias_rides(w):
        product = xp.matmul(_with_ones(xp, x), xp.concatenate([w, b[:, None]], axis=1).T)
    else:
        product = xp.matmul(x.reshape(-1, x.shape[-1]), w.T)
        product += b
    return product.reshape(x.shape[:-1] + (w.shape[0],))


def _vjp_affine(xp, g, out, w, b, x, wanted=(True, True, True)):
    rows, columns = w.shape
    flat_g = g.reshape(-1, rows)
    gw = gb = None
    if wanted[0] and _bias_rides(w):
        both = weight_gradient(xp, flat_g, _with_ones(xp, x))
        gw, gb = xp.ascontiguousarray(both[:, :columns]), xp.ascontiguousarray(both[:, columns])
    elif wanted[0]:
        gw = weight_gradient(xp, flat_g, x.reshape(-1, columns))
    if wanted[1] and gb is None:
        # a sum over rows as a product with a row of ones: twice as fast as a reduction along
        # the long axis, and summed as the weight gradient beside it is
        gb = xp.matmul(xp.ones((1, flat_g.shape[0]), dtype=flat_g.dtype), flat_g)[0]
    return gw, gb if wanted[1] else None, _flat_product(xp, g, w) if wanted[2] else None


register(Op(
    "affine", shape=_shape_affine, forward=_forward_affine, vjp=_vjp_affine, fresh=True,
    rule="gW = sum g x^T, gb = sum g, gx = W^T g",
    doc="W x + b for each example, one product: W is an [m, n] parameter, b an [m] one, x is "
        "(..., n). Made by the compiler from a product and its bias over all steps.",
    arity=3, selective=True,
))


# --- concat -----------------------------------------------------------------------------


def _shape_concat(*xs, axis=-1):
    if not xs:
        raise ShapeError("needs at least one input")
    first = xs[0]
    check_axis(first, axis)
    total = 0
    for i, x in enumerate(xs):
        same = len(x) == len(first) and all(
            a == b for k, (a, b) in enumerate(zip(x, first)) if k != len(first) + axis)
        if not same:
            raise ShapeError(
                f"cannot join {format_shape(first)} and {format_shape(x)} on axis {axis}",
                arg=i, hint="all inputs must agree on every axis except the joined one")
        total = total + x[axis]
    return tuple(first[:axis]) + (total,) + tuple(first[len(first) + axis + 1:])


def _joint_shape(shapes, axis):
    """The shape every input broadcasts to, on every axis but ``axis`` (left as 1)."""
    n = max(len(s) for s in shapes)
    padded = [(1,) * (n - len(s)) + tuple(s) for s in shapes]
    joint = []
    for k in range(n):
        sizes = {s[k] for s in padded} - {1}
        joint.append(1 if k == n + axis or not sizes else max(sizes))
    return joint


def _forward_concat(xp, *xs, axis=-1):
    shapes = [x.shape for x in xs]
    if len({s[:len(s) + axis] + s[len(s) + axis + 1:] for s in shapes}) > 1:
        # Leading axes differ (e.g. a parameter joined to a batch): broadcast them first.
        joint = _joint_shape(shapes, axis)
        xs = [xp.broadcast_to(x, tuple(joint[:axis]) + (x.shape[axis],) +
                              tuple(joint[len(joint) + axis + 1:])) for x in xs]
    return xp.concatenate(xs, axis=axis)


def _vjp_concat(xp, g, out, *xs, axis=-1):
    grads, start = [], 0
    for x in xs:
        stop = start + x.shape[axis]
        grads.append(unbroadcast(xp, g[index_along(axis, slice(start, stop))], x.shape))
        start = stop
    return tuple(grads)


def index_along(axis: int, index) -> tuple:
    """An indexing tuple applying ``index`` to negative axis ``axis``."""
    return (Ellipsis, index) + (slice(None),) * (-axis - 1)


register(Op(
    "concat", shape=_shape_concat, forward=_forward_concat, vjp=_vjp_concat,
    rule="split g",
    doc="Join the inputs along ``axis`` (default -1, the feature axis).",
    arity=None, attrs=("axis",),
))


# --- slice ------------------------------------------------------------------------------


def _shape_slice(x, start, stop, axis=-1):
    check_axis(x, axis)
    size = x[axis]
    if all(isinstance(v, int) for v in (start, stop, size)) and not 0 <= start <= stop <= size:
        raise ShapeError(f"[{start}:{stop}] does not fit in axis {axis} of "
                         f"{format_shape(x)}", arg=0)
    return tuple(x[:axis]) + (stop - start,) + tuple(x[len(x) + axis + 1:])


def _vjp_slice(xp, g, out, x, start, stop, axis=-1):
    gx = xp.zeros(x.shape, dtype=g.dtype)
    gx[index_along(axis, slice(start, stop))] = g
    return (gx,)


register(Op(
    "slice", shape=_shape_slice,
    forward=lambda xp, x, start, stop, axis=-1: x[index_along(axis, slice(start, stop))],
    vjp=_vjp_slice,
    rule="g placed in zeros",
    doc="x[..., start:stop] along ``axis`` (0 <= start <= stop <= the axis size).",
    arity=1, attrs=("start", "stop", "axis"),
))


# --- reshape, transpose, flatten ----------------------------------------------------------


def _shape_reshape(x, shape, ndim):
    shape = tuple(shape)
    if not 0 <= ndim <= len(x):
        raise ShapeError(f"cannot replace the last {ndim} axes of {format_shape(x)}",
                         arg=0)
    old = tuple(x[len(x) - ndim:])
    if product(old) != product(shape):
        raise ShapeError(f"{format_shape(old)} does not hold as many elements as "
                         f"{format_shape(shape)}", arg=0)
    return lead(x, ndim) + shape


register(Op(
    "reshape", shape=_shape_reshape,
    forward=lambda xp, x, shape, ndim: x.reshape(lead(x.shape, ndim) + tuple(shape)),
    vjp=lambda xp, g, out, x, shape, ndim: (g.reshape(x.shape),),
    rule="reshape g back",
    doc="Replace the last ``ndim`` axes of x by ``shape`` (same number of elements).",
    arity=1, attrs=("shape", "ndim"),
))


def _permutation(ndim: int, axes) -> list:
    """The full-array permutation moving the last ``len(axes)`` axes as ``axes`` says."""
    k = len(axes)
    return list(range(ndim - k)) + [ndim + a for a in axes]


def _shape_transpose(x, axes):
    k = len(axes)
    if sorted(axes) != list(range(-k, 0)) or k > len(x):
        raise ShapeError(f"{tuple(axes)} is not a permutation of the last axes of "
                         f"{format_shape(x)}", arg=0, hint="write axes as negative ints, "
                         "e.g. (-1, -2) swaps the last two")
    return lead(x, k) + tuple(x[a] for a in axes)


def _vjp_transpose(xp, g, out, x, axes):
    perm = _permutation(x.ndim, axes)
    inverse = [0] * len(perm)
    for i, p in enumerate(perm):
        inverse[p] = i
    return (xp.transpose(g, inverse),)


register(Op(
    "transpose", shape=_shape_transpose,
    forward=lambda xp, x, axes: xp.transpose(x, _permutation(x.ndim, axes)),
    vjp=_vjp_transpose,
    rule="inverse permutation of g",
    doc="Permute the last len(axes) axes: output axis -k+i is input axis axes[i] "
        "(e.g. axes=(-1, -2) swaps the last two).",
    arity=1, attrs=("axes",),
))


def _shape_flatten(x, ndim):
    if not 1 <= ndim <= len(x):
        raise ShapeError(f"cannot merge the last {ndim} axes of {format_shape(x)}",
                         arg=0)
    return lead(x, ndim) + (product(x[len(x) - ndim:]),)


register(Op(
    "flatten", shape=_shape_flatten,
    forward=lambda xp, x, ndim: x.reshape(lead(x.shape, ndim) + (-1,)),
    vjp=lambda xp, g, out, x, ndim: (g.reshape(x.shape),),
    rule="reshape g back",
    doc="Merge the last ``ndim`` axes of x into one (row-major order).",
    arity=1, attrs=("ndim",),
))
