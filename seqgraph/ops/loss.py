"""Losses: cross-entropy and mean squared error, each a 0-d mean over the valid entries.

Both take an optional third input ``lengths`` (B,): then the leading axes are ``(T, B)`` and
entries with ``t >= lengths[b]`` are padding, left out of the mean. Padding is replaced by
zeros before any arithmetic, so whatever it holds (even inf) gives exactly zero gradient.
Neither the target nor the lengths get a gradient.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

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
    if lengths is None or (lengths.size and int(lengths.min()) >= steps):
        return None  # nothing is padding
    return time_mask(xp, lengths, steps)


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
# contiguous float logits: per row one pass for the max, one for the sum of exps, then the
# target's term; the vjp writes softmax * scale, less scale at the target. A padding row
# (its step at or past its sequence's length) is never read: its term and gradient are 0.
# The rows are shared out among MKL's threads where there are enough (native.shares).
# NumPy's version (below) makes several passes over short rows, each its own call.
def _row_loops(ctype: str, exp: str, log: str) -> str:
    # a NaN or inf in the row makes exp(row - top) NaN below, as in NumPy's version
    start = f"""
    const sg_ce_{ctype}_job* job = (const sg_ce_{ctype}_job*)data;
    const long classes = job->classes, batch = job->batch, inner = job->inner;
    const long* target = job->target;
    const long* lengths = job->lengths;
    const long last = sg_share_start(job->rows, job->parts, part + 1);
    for (long r = sg_share_start(job->rows, job->parts, part); r < last; r++) {{
        const long example = r / inner;
        const int padding = lengths && example / batch >= lengths[example % batch];
        const {ctype}* row = job->x + r * classes;"""
    check = "if (target[r] < 0 || target[r] >= classes) { job->ok[part] = 0; return; }"
    maximum = f"""
        {ctype} top = row[0];
        #pragma omp simd reduction(max:top)
        for (long j = 1; j < classes; j++) top = row[j] > top ? row[j] : top;"""
    entries = "".join(f"""
int sg_ce_{direction}_{ctype}(long rows, long classes, const {ctype}* x, const long* target,
        const long* lengths, long batch, long inner, {ctype} scale, {ctype}* out, long parts,
        void* const* threading) {{
    int ok[parts];
    for (long part = 0; part < parts; part++) ok[part] = 1;
    sg_ce_{ctype}_job job = {{rows, classes, x, target, lengths, batch, inner, scale, out, parts, ok}};
    sg_share_out(sg_ce_{direction}_share_{ctype}, &job, parts, threading);
    for (long part = 0; part < parts; part++) if (!ok[part]) return 0;
    return 1;
}}""" for direction in ("forward", "backward"))
    return f"""
typedef struct {{
    long rows, classes; const {ctype}* x; const long* target; const long* lengths; long batch, inner;
    {ctype} scale; {ctype}* out; long parts; int* ok;
}} sg_ce_{ctype}_job;

static void sg_ce_forward_share_{ctype}(void* data, long part) {{{start}
        if (padding) {{ job->out[r] = 0; continue; }}
        {check}{maximum}
        {ctype} total = 0;
        #pragma omp simd reduction(+:total)
        for (long j = 0; j < classes; j++) total += {exp}(row[j] - top);
        job->out[r] = {log}(total) + top - row[target[r]];
    }}
}}

static void sg_ce_backward_share_{ctype}(void* data, long part) {{{start}
        {ctype}* out = job->out + r * classes;
        if (padding) {{ for (long j = 0; j < classes; j++) out[j] = 0; continue; }}
        {check}{maximum}
        {ctype} total = 0;
        #pragma omp simd reduction(+:total)
        for (long j = 0; j < classes; j++) {{ out[j] = {exp}(row[j] - top); total += out[j]; }}
        const {ctype} factor = job->scale / total;
        #pragma omp simd
        for (long j = 0; j < classes; j++) out[j] *= factor;
        out[target[r]] -= job->scale;
    }}
}}

/* out: each row's term (forward) or the gradient (backward, times scale); 0 when a row's
   class id is outside the classes */{entries}
"""


CROSS_ENTROPY_LOOPS = _row_loops("float", "expf", "logf") + _row_loops("double", "exp", "log")


@dataclass
class _NativeRows:
    """What the native loops read: the library, the C type, logits as rows, their class ids,
    the lengths (or None), the batch, rows per example, and the count the mean divides by."""
    loops: object
    ctype: str
    logits: object
    target: object
    lengths: object
    batch: int
    inner: int
    count: object

    def call(self, xp, direction: str, out, scale: float = 0.0) -> bool:
        """Run ``sg_ce_<direction>`` over every row into ``out`` (the gradient times ``scale``
        backward); False when a row's class id is outside the classes."""
        pointer, number = ctypes.c_void_p, ctypes.c_float if self.ctype == "float" else ctypes.c_double
        rows = self.logits.shape[0]
        parts, threading = native.shares(xp, rows, native.SHARE_ROWS)
        return 1 == getattr(self.loops, f"sg_ce_{direction}_{self.ctype}")(
            ctypes.c_long(rows), ctypes.c_long(self.logits.shape[1]),
            pointer(self.logits.ctypes.data), pointer(self.target.ctypes.data),
            pointer(None if self.lengths is None else self.lengths.ctypes.data),
            ctypes.c_long(self.batch), ctypes.c_long(self.inner), number(scale), pointer(out.ctypes.data),
            ctypes.c_long(parts), pointer(threading))


def _native_rows(xp, logits, target, lengths):
    """The native loops' view of these arrays, or None when they cannot take them (then
    NumPy computes)."""
    ctype = native.C_TYPES.get(str(getattr(logits, "dtype", "")))
    if ctype is None or not native.usable(xp) or logits.ndim < (1 if lengths is None else 3) \
            or 0 in logits.shape or not logits.flags.c_contiguous:
        return None
    loops = native.op_loops(CROSS_ENTROPY_LOOPS)
    if loops is None:
        return None
    flat_target = xp.ascontiguousarray(target, dtype=xp.int64).reshape(-1)
    classes = logits.shape[-1]
    count = _valid_count(xp, _mask(xp, lengths, logits.shape[0]), target.size, logits)
    if lengths is None:
        return _NativeRows(loops, ctype, logits.reshape(-1, classes), flat_target, None, 1, 1, count)
    batch = logits.shape[1]
    return _NativeRows(loops, ctype, logits.reshape(-1, classes), flat_target,
                       xp.ascontiguousarray(lengths, dtype=xp.int64), batch,
                       flat_target.size // (logits.shape[0] * batch), count)


def _forward_cross_entropy(xp, logits, target, lengths=None):
    rows = _native_rows(xp, logits, target, lengths)
    if rows is not None:
        nll = xp.empty(rows.logits.shape[0], dtype=logits.dtype)
        if rows.call(xp, "forward", nll):
            return xp.asarray(nll.sum() / rows.count, dtype=logits.dtype)
        # a class id outside the classes: NumPy's indexing below reports it
    shifted, target, mask, count = _cross_entropy_parts(xp, logits, target, lengths)
    # -log p[target] = log sum exp - shifted[target]: the full log-softmax is never formed
    nll = xp.log(xp.sum(xp.exp(shifted), axis=-1)) - xp.take_along_axis(shifted, target[..., None], axis=-1)[..., 0]
    if mask is not None:
        nll = zero_where_not(xp, mask, nll)
    return xp.asarray(nll.sum() / count, dtype=logits.dtype)


def _vjp_cross_entropy(xp, g, out, logits, target, lengths=None):
    rows = _native_rows(xp, logits, target, lengths)
    if rows is not None:
        grad = xp.empty(logits.shape, dtype=logits.dtype)
        if rows.call(xp, "backward", grad, float(g / rows.count)):
            return (grad, None) + ((None,) if lengths is not None else ())
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
    arity=None, nondiff=(1, 2), held=(1,),
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
    arity=None, nondiff=(1, 2), held=(1,),
))
