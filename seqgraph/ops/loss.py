"""Losses: cross-entropy and mean squared error, each a 0-d mean over the valid entries.

Both take an optional third input ``lengths`` (B,): then the leading axes are ``(T, B)`` and
entries with ``t >= lengths[b]`` are padding, left out of the mean. Padding is replaced by
zeros before any arithmetic, so whatever it holds (even inf) gives exactly zero gradient.
Neither the target nor the lengths get a gradient.
"""

from __future__ import annotations

import ctypes

import numpy

from ..backends import native
from ..sizes import format_shape
from .registry import Op, ShapeError, register, unbroadcast
from .sequence import check_lengths, time_mask, zero_where_not


def _check_optional_lengths(lengths: tuple) -> None:
    if len(lengths) > 1:
        raise ShapeError("takes 2 or 3 inputs (the third is lengths), got "
                         f"{2 + len(lengths)}", arg=3)
    if lengths:
        check_lengths(lengths[0], 2)


def _mask(xp, lengths, steps):
    """The (T, B) validity mask, or None when every entry counts."""
    return None if lengths is None else time_mask(xp, lengths, steps)


def _valid_count(xp, mask, entries: int, like):
    """How many of ``entries`` entries are valid, as a 0-d array of ``like``'s dtype (at least
    1, so an all-padding batch gives 0 rather than NaN)."""
    if mask is None:
        return xp.full((), entries, dtype=like.dtype)
    per_step = entries // mask.size
    return xp.maximum(mask.sum(), 1).astype(like.dtype) * per_step


# --- cross-entropy ----------------------------------------------------------------------


def _shape_cross_entropy(logits, target, *lengths):
    _check_optional_lengths(lengths)
    if len(logits) < 1 or tuple(target) != tuple(logits[:-1]):
        raise ShapeError(f"logits are {format_shape(logits)} but the target is "
                         f"{format_shape(target)}", arg=1,
                         hint="logits [V] take one integer class id per example")
    return ()


def _cross_entropy_parts(xp, logits, target, lengths):
    """The per-entry terms: logits less their row maxima (..., V), class ids, mask, valid
    count. A row's log-probabilities are these less the log of their exps' sum."""
    mask = _mask(xp, lengths, logits.shape[0])
    if mask is not None:
        logits = zero_where_not(xp, mask, logits)
        target = zero_where_not(xp, mask, target)
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    return shifted, target, mask, _valid_count(xp, mask, target.size, logits)


# Cross-entropy row by row as native loops (seqgraph.backends.native), used on NumPy for
# contiguous float logits without lengths: per row one pass for the max, one for the sum of
# exps, then the target's term; the vjp writes softmax * scale, less scale at the target.
# NumPy's version (below) makes several passes over short rows, each its own call.
def _row_loops(ctype: str, exp: str, log: str) -> str:
    # a NaN or inf in the row makes exp(row - top) NaN below, as in NumPy's version
    maximum = f"""
        {ctype} top = row[0];
        #pragma omp simd reduction(max:top)
        for (long j = 1; j < classes; j++) top = row[j] > top ? row[j] : top;"""
    return f"""
void sg_ce_forward_{ctype}(long rows, long classes, const {ctype}* x, const long* target, {ctype}* nll) {{
    for (long r = 0; r < rows; r++) {{
        const {ctype}* row = x + r * classes;{maximum}
        {ctype} total = 0;
        #pragma omp simd reduction(+:total)
        for (long j = 0; j < classes; j++) total += {exp}(row[j] - top);
        nll[r] = {log}(total) + top - row[target[r]];
    }}
}}
void sg_ce_backward_{ctype}(long rows, long classes, const {ctype}* x, const long* target,
                            {ctype} scale, {ctype}* grad) {{
    for (long r = 0; r < rows; r++) {{
        const {ctype}* row = x + r * classes;
        {ctype}* out = grad + r * classes;{maximum}
        {ctype} total = 0;
        #pragma omp simd reduction(+:total)
        for (long j = 0; j < classes; j++) {{ out[j] = {exp}(row[j] - top); total += out[j]; }}
        const {ctype} factor = scale / total;
        #pragma omp simd
        for (long j = 0; j < classes; j++) out[j] *= factor;
        out[target[r]] -= scale;
    }}
}}
"""


CROSS_ENTROPY_LOOPS = _row_loops("float", "expf", "logf") + _row_loops("double", "exp", "log")


def _native_rows(xp, logits, target, lengths):
    """``(loops, C type, flat logits, flat targets)`` when the native loops can take these
    arrays, else None (then NumPy computes)."""
    ctype = {"float32": "float", "float64": "double"}.get(str(getattr(logits, "dtype", "")))
    if lengths is not None or ctype is None or not native.usable(xp) or logits.ndim < 1 \
            or 0 in logits.shape or not logits.flags.c_contiguous:
        return None
    loops = native.op_loops(CROSS_ENTROPY_LOOPS)
    flat_target = xp.ascontiguousarray(target, dtype=xp.int64).reshape(-1)
    classes = logits.shape[-1]
    if loops is None or flat_target.min() < 0 or flat_target.max() >= classes:
        return None  # an id outside the classes: NumPy's indexing reports it
    return loops, ctype, logits.reshape(-1, classes), flat_target


def _native_forward(rows, dtype):
    loops, ctype, flat, flat_target = rows
    nll = numpy.empty(flat.shape[0], dtype=dtype)
    getattr(loops, f"sg_ce_forward_{ctype}")(
        ctypes.c_long(flat.shape[0]), ctypes.c_long(flat.shape[1]), ctypes.c_void_p(flat.ctypes.data),
        ctypes.c_void_p(flat_target.ctypes.data), ctypes.c_void_p(nll.ctypes.data))
    return nll


def _native_backward(rows, scale, shape, dtype):
    loops, ctype, flat, flat_target = rows
    grad = numpy.empty(shape, dtype=dtype)
    number = ctypes.c_float if ctype == "float" else ctypes.c_double
    getattr(loops, f"sg_ce_backward_{ctype}")(
        ctypes.c_long(flat.shape[0]), ctypes.c_long(flat.shape[1]), ctypes.c_void_p(flat.ctypes.data),
        ctypes.c_void_p(flat_target.ctypes.data), number(float(scale)), ctypes.c_void_p(grad.ctypes.data))
    return grad


def _forward_cross_entropy(xp, logits, target, lengths=None):
    rows = _native_rows(xp, logits, target, lengths)
    if rows is not None:
        return xp.asarray(_native_forward(rows, logits.dtype).sum() / target.size, dtype=logits.dtype)
    shifted, target, mask, count = _cross_entropy_parts(xp, logits, target, lengths)
    # -log p[target] = log sum exp - shifted[target]: the full log-softmax is never formed
    nll = xp.log(xp.sum(xp.exp(shifted), axis=-1)) - xp.take_along_axis(shifted, target[..., None], axis=-1)[..., 0]
    if mask is not None:
        nll = zero_where_not(xp, mask, nll)
    return xp.asarray(nll.sum() / count, dtype=logits.dtype)


def _vjp_cross_entropy(xp, g, out, logits, target, lengths=None):
    rows = _native_rows(xp, logits, target, lengths)
    if rows is not None:
        scale = g / xp.asarray(target.size, dtype=logits.dtype)
        return (_native_backward(rows, scale, logits.shape, logits.dtype), None)
    shifted, target, mask, count = _cross_entropy_parts(xp, logits, target, lengths)
    scale = g / count
    grad = xp.exp(shifted, out=shifted)
    grad *= scale / xp.sum(grad, axis=-1, keepdims=True)  # softmax * g / count
    rows = grad.reshape(-1, grad.shape[-1])
    rows[xp.arange(rows.shape[0]), target.reshape(-1)] -= scale  # less the one-hot target
    if mask is not None:
        grad = zero_where_not(xp, mask, grad)
    return (grad, None) + ((None,) if lengths is not None else ())


register(Op(
    "cross_entropy", shape=_shape_cross_entropy,
    forward=_forward_cross_entropy, vjp=_vjp_cross_entropy,
    rule="g * (softmax - onehot) / n",
    doc="The mean of -log softmax(logits)[target] over the valid entries: logits (..., V) "
        "floats, target (...) integer class ids, optional lengths (B,) for (T, B) leading axes "
        "(PyTorch's reduction='mean'). Takes 2 or 3 inputs.",
    arity=None, nondiff=(1, 2),
))


# --- mean squared error -----------------------------------------------------------------


def _shape_mse(pred, target, *lengths):
    _check_optional_lengths(lengths)
    if tuple(pred) != tuple(target):
        raise ShapeError(f"the prediction is {format_shape(pred)} but the target is "
                         f"{format_shape(target)}", arg=1)
    return ()


def _mse_parts(xp, pred, target, lengths):
    """The valid differences pred - target (zero at padding) and how many are valid."""
    mask = _mask(xp, lengths, pred.shape[0])
    if mask is not None:
        pred = zero_where_not(xp, mask, pred)
        target = zero_where_not(xp, mask, target)
    diff = pred - target
    return diff, _valid_count(xp, mask, diff.size, pred)


def _forward_mse(xp, pred, target, lengths=None):
    diff, count = _mse_parts(xp, pred, target, lengths)
    return xp.asarray((diff * diff).sum() / count, dtype=pred.dtype)


def _vjp_mse(xp, g, out, pred, target, lengths=None):
    diff, count = _mse_parts(xp, pred, target, lengths)
    grad = unbroadcast(xp, diff * (2 * g / count), pred.shape)
    return (grad, None) + ((None,) if lengths is not None else ())


register(Op(
    "mse", shape=_shape_mse, forward=_forward_mse, vjp=_vjp_mse,
    rule="g * 2 (pred - target) / n",
    doc="The mean of (pred - target)**2 over all valid elements (PyTorch's MSELoss mean); "
        "optional lengths (B,) for (T, B) leading axes. Takes 2 or 3 inputs.",
    arity=None, nondiff=(1, 2),
))
