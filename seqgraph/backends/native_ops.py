"""The NumPy backend's native pieces of single ops: its override table (see
:class:`~seqgraph.backends.protocol.Override`), keyed by op name.

- ``mul``: the gradient of a value broadcast over the leading axes (a peephole weight) as
  one pass of row dots, not a full-size product and then a sum;
- ``cross_entropy``: forward and vjp row by row, one C loop per row instead of several
  NumPy passes over short rows.

Each piece is C compiled by :mod:`seqgraph.backends.native` and takes only arrays laid out
as its loop reads them; anything else it declines (None), and the op's NumPy rule runs.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass

import numpy

from ..ops.loss import valid_mask, valid_count
from . import native
from .protocol import Override


# --- mul: a broadcast input's gradient as row dots ---------------------------------------

# The gradient of a value broadcast over the leading (time, batch) axes, such as a peephole
# weight times the cell state, is sum over those axes of g * other. NumPy forms the product
# as a new (T, B, H) array and then sums it; this native loop
# takes one pass, summing eight rows at a time in their type and those sums in float64,
# each share of the rows (native.shares) into its own row of totals.
ROW_DOTS = "".join(f"""
typedef struct {{
    long rows, cols; const {ctype}* g; long g_step; const {ctype}* x; long x_step; double* totals; long parts;
}} sg_row_dots_{ctype}_job;

static void sg_row_dots_share_{ctype}(void* data, long part) {{
    const sg_row_dots_{ctype}_job* job = (const sg_row_dots_{ctype}_job*)data;
    const long cols = job->cols, end = sg_share_start(job->rows, job->parts, part + 1);
    const {ctype}* g = job->g;
    const {ctype}* x = job->x;
    double* total = job->totals + part * cols;
    {ctype} sums[cols];
    for (long first = sg_share_start(job->rows, job->parts, part); first < end; first += 8) {{
        const long last = first + 8 < end ? first + 8 : end;
        #pragma omp simd
        for (long j = 0; j < cols; j++) sums[j] = 0;
        for (long r = first; r < last; r++) {{
            #pragma omp simd
            for (long j = 0; j < cols; j++) sums[j] += g[r * job->g_step + j] * x[r * job->x_step + j];
        }}
        #pragma omp simd
        for (long j = 0; j < cols; j++) total[j] += sums[j];
    }}
}}

void sg_row_dots_{ctype}(long rows, long cols, const {ctype}* g, long g_step, const {ctype}* x,
                         long x_step, double* totals, long parts, void* const* threading) {{
    sg_row_dots_{ctype}_job job = {{rows, cols, g, g_step, x, x_step, totals, parts}};
    sg_share_out(sg_row_dots_share_{ctype}, &job, parts, threading);
}}""" for ctype in ("float", "double"))


def _row_step(array, lead: int):
    """Elements from one row to the next when ``array``'s leading ``lead`` axes are read as
    rows of contiguous trailing elements (a cotangent's column slice is), else None."""
    item = array.itemsize
    trailing = array.shape[lead:]
    expected = item
    for size, stride in zip(reversed(trailing), reversed(array.strides[lead:])):
        if size != 1 and stride != expected:
            return None
        expected *= size
    step = array.strides[lead - 1]
    for axis in range(lead - 1):
        if array.shape[axis + 1] != 1 and array.strides[axis] != array.strides[axis + 1] * array.shape[axis + 1]:
            return None
    return step // item if step % item == 0 and step >= 0 else None


def row_dots(xp, g, other, shape):
    """``sum(g * other)`` over g's leading axes down to ``shape``, natively, or None."""
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    ctype = native.C_TYPES.get(str(g.dtype))
    if (ctype is None or lead < 1 or not shape or g.shape[lead:] != shape or other.shape != g.shape
            or other.dtype != g.dtype or 0 in g.shape or not native.usable(xp)):
        return None
    steps = _row_step(g, lead), _row_step(other, lead)
    loops = native.op_loops(ROW_DOTS)
    if loops is None or None in steps:
        return None
    cols = math.prod(shape)
    rows = g.size // cols
    parts, threading = native.shares(xp, rows, native.SHARE_ROWS)
    totals = numpy.zeros((parts, cols), dtype=numpy.float64)
    pointer, long = ctypes.c_void_p, ctypes.c_long
    getattr(loops, f"sg_row_dots_{ctype}")(long(rows), long(cols), pointer(g.ctypes.data), long(steps[0]),
                                           pointer(other.ctypes.data), long(steps[1]),
                                           pointer(totals.ctypes.data), long(parts), pointer(threading))
    return totals.sum(axis=0).astype(g.dtype).reshape(shape)


def _mul_vjp(xp, g, out, a, b, wanted=None):
    """Each wanted gradient of ``a * b`` whose input is broadcast over g's leading axes as
    native row dots (None where that does not apply)."""
    wanted = wanted if wanted is not None else (True, True)
    return tuple(row_dots(xp, g, other, x.shape) if want and g.shape != x.shape else None
                 for x, other, want in ((a, b, wanted[0]), (b, a, wanted[1])))


# --- cross_entropy: row by row --------------------------------------------------------------

# Cross-entropy row by row as native loops, used on NumPy for
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


def native_rows(xp, logits, target, lengths):
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
    count = valid_count(xp, valid_mask(xp, lengths, logits.shape[0]), target.size, logits)
    if lengths is None:
        return _NativeRows(loops, ctype, logits.reshape(-1, classes), flat_target, None, 1, 1, count)
    batch = logits.shape[1]
    return _NativeRows(loops, ctype, logits.reshape(-1, classes), flat_target,
                       xp.ascontiguousarray(lengths, dtype=xp.int64), batch,
                       flat_target.size // (logits.shape[0] * batch), count)


def _cross_entropy_forward(xp, logits, target, lengths=None):
    rows = native_rows(xp, logits, target, lengths)
    if rows is None:
        return None
    nll = xp.empty(rows.logits.shape[0], dtype=logits.dtype)
    if not rows.call(xp, "forward", nll):
        return None  # a class id outside the classes: NumPy's indexing reports it
    return xp.asarray(nll.sum() / rows.count, dtype=logits.dtype)


def _cross_entropy_vjp(xp, g, out, logits, target, lengths=None, wanted=None):
    rows = native_rows(xp, logits, target, lengths)
    if rows is None:
        return None
    grad = xp.empty(logits.shape, dtype=logits.dtype)
    if not rows.call(xp, "backward", grad, float(g / rows.count)):
        return None
    return (grad, None) + ((None,) if lengths is not None else ())


OVERRIDES = {
    "mul": Override(vjp=_mul_vjp),
    "cross_entropy": Override(forward=_cross_entropy_forward, vjp=_cross_entropy_vjp),
}
