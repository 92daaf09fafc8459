"""The products batched over time by NumPy's OpenBLAS, shared out on MKL's threads, where
that is faster than MKL's own.

A training step's large products (the input projections, the output layer, every weight
gradient) have no fixed operand and run once per pass. MKL runs them on its generic code
path on CPUs that are not Intel's, and on a 2-core AMD EPYC (Zen 4) OpenBLAS's kernels
(the ``SkylakeX`` ones NumPy's wheels pick there) ran each of a float32 LSTM step's shapes
faster on one core, between 1.06 and 1.98 times MKL's rate.
OpenBLAS's own thread pool cannot run them, though: its idle threads spin for about 0.1 s
after each product, and the native step loop that comes next (on MKL's OpenMP threads)
then shares its cores with them (a two-thread LSTM step took 1.26 times as long that way).
So each product is cut into one block of rows (or of columns) per thread of MKL's pool, and
every thread runs its block through OpenBLAS on one thread of its own
(``openblas_set_num_threads_local(1)``): one pool does all the work, as with MKL alone.

Wide float32 products (input projections, and weight gradients, whose left operand is
transposed) run on seqgraph's panel kernel instead, shared out the same way, where that
kernel runs the step products (:func:`by_panels`).

Which library a CPU gets (:func:`choice`) is a table of what was measured: OpenBLAS on AMD
CPUs, MKL elsewhere (on Intel MKL's own kernels are its fastest). ``SEQGRAPH_BATCHED_PRODUCTS``
(``mkl`` or ``openblas``) overrides it; OpenBLAS is used only where NumPy was built with
the ILP64 OpenBLAS of its wheels (``scipy-openblas64``) and native loops build.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache
from pathlib import Path

import numpy

from . import native

CHOICES = ("mkl", "openblas")
# The fewest multiply-adds of a product worth a thread of its own: below it, waking a
# thread costs more than it saves.
SHARE_WORK = 1 << 20
# The least rows and columns of a float32 product worth copying its right operand into
# panels for (see :func:`by_panels`): with a left operand read by rows, and transposed.
PANEL_ROWS, PANEL_COLUMNS = 64, 128
GRADIENT_ROWS, GRADIENT_COLUMNS = 256, 64
NO_TRANSPOSE, TRANSPOSE = 111, 112  # CBLAS's CblasNoTrans and CblasTrans, as matrix_layout gives them

SOURCE = r"""
#include <stdint.h>
typedef int (*sg_local_fn)(int);
typedef void (*sg_sgemm_fn)(int, int, int, int64_t, int64_t, int64_t, float, const float*, int64_t,
                            const float*, int64_t, float, float*, int64_t);
typedef void (*sg_dgemm_fn)(int, int, int, int64_t, int64_t, int64_t, double, const double*, int64_t,
                            const double*, int64_t, double, double*, int64_t);
typedef void (*sg_compute_fn)(int, int, int, int, int, int, const float*, int, const void*, int, float,
                              float*, int);

/* c = a @ b, row-major c (m, n); a and b (possibly transposed: 112) with leading
   dimensions lda and ldb; one share a block of c's rows (by_rows) or of its columns.
   packed: b is float32 panels and gemm seqgraph's panel kernel (arguments of MKL's
   cblas_sgemm_compute), and shares are blocks of rows */
typedef struct { const void* gemm; sg_local_fn local; int double_precision, ta, tb, by_rows, packed;
                 long m, n, k, lda, ldb, ldc, parts; const char* a; const char* b; char* c; } sg_product;

static void sg_product_share(void* data, long part) {
    const sg_product* p = (const sg_product*)data;
    const long item = p->double_precision ? 8 : 4, whole = p->by_rows ? p->m : p->n;
    const long first = sg_share_start(whole, p->parts, part), count = sg_share_start(whole, p->parts, part + 1) - first;
    const char* a = p->a;
    const char* b = p->b;
    char* c = p->c;
    long m = p->m, n = p->n;
    if (p->by_rows) {
        a += item * first * (p->ta == 111 ? p->lda : 1);
        c += item * first * p->ldc;
        m = count;
    } else {
        b += item * first * (p->tb == 111 ? 1 : p->ldb);
        c += item * first;
        n = count;
    }
    if (p->packed) {
        ((sg_compute_fn)p->gemm)(101, p->ta, 0, (int)m, (int)n, (int)p->k, (const float*)a, (int)p->lda, b, 0, 0.0f,
                                 (float*)c, (int)p->ldc);
        return;
    }
    const int was = p->local(1);  /* this thread's product on this thread alone */
    if (p->double_precision)
        ((sg_dgemm_fn)p->gemm)(101, p->ta, p->tb, m, n, p->k, 1.0, (const double*)a, p->lda,
                               (const double*)b, p->ldb, 0.0, (double*)c, p->ldc);
    else
        ((sg_sgemm_fn)p->gemm)(101, p->ta, p->tb, m, n, p->k, 1.0f, (const float*)a, p->lda,
                               (const float*)b, p->ldb, 0.0f, (float*)c, p->ldc);
    p->local(was);
}

void sg_shared_product(const sg_product* p, void* const* threading) {
    sg_share_out(sg_product_share, (void*)p, p->parts, threading);
}
"""


class _Product(ctypes.Structure):
    """``sg_product`` of :data:`SOURCE`."""
    _fields_ = [("gemm", ctypes.c_void_p), ("local", ctypes.c_void_p), ("double_precision", ctypes.c_int),
                ("ta", ctypes.c_int), ("tb", ctypes.c_int), ("by_rows", ctypes.c_int), ("packed", ctypes.c_int),
                *((name, ctypes.c_long) for name in ("m", "n", "k", "lda", "ldb", "ldc", "parts")),
                ("a", ctypes.c_void_p), ("b", ctypes.c_void_p), ("c", ctypes.c_void_p)]


def numpy_library_path(maps=None):
    """The file of the OpenBLAS this process's NumPy loaded (its wheel's, in ``numpy.libs``
    beside the package), or None (another BLAS, or not Linux). SciPy's wheels bring an
    OpenBLAS of their own, which may be loaded too. ``maps``: the text of
    ``/proc/self/maps``, read when None."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return None
    folder = str(Path(numpy.__file__).resolve().parent.parent / "numpy.libs")
    paths = (line.split()[-1] for line in maps.splitlines() if line.strip())
    return next((path for path in paths if "openblas" in path and ".so" in path and path.startswith(folder)), None)


@lru_cache(maxsize=None)
def routines():
    """``(sgemm, dgemm, set_num_threads_local)`` addresses in NumPy's ILP64 OpenBLAS, or None
    where NumPy has no such library."""
    path = numpy_library_path()
    if path is None:
        return None
    library = ctypes.CDLL(path)
    names = ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", "openblas_set_num_threads_local")
    if not all(hasattr(library, name) for name in names):
        return None
    return tuple(ctypes.cast(getattr(library, name), ctypes.c_void_p).value for name in names)


@lru_cache(maxsize=None)
def _entry():
    """The native ``sg_shared_product``, or None where native loops do not build."""
    library = native.op_loops(SOURCE)
    if library is None:
        return None
    function = library.sg_shared_product
    function.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    function.restype = None
    return function


def usable() -> bool:
    """Whether products can run here through OpenBLAS (NumPy's ILP64 library and a C compiler)."""
    return routines() is not None and _entry() is not None


def table_choice(identity: dict) -> str:
    """The measured table: OpenBLAS on AMD CPUs, MKL elsewhere."""
    return "openblas" if identity.get("vendor") == "AuthenticAMD" else "mkl"


def choice() -> str:
    """Who runs the products batched over time: ``SEQGRAPH_BATCHED_PRODUCTS`` (``mkl`` or
    ``openblas``) where set, else :func:`table_choice`; ``mkl`` wherever OpenBLAS is not
    :func:`usable`."""
    # usable looked up when asked, not bound here
    return native.chosen_library("SEQGRAPH_BATCHED_PRODUCTS", CHOICES, table_choice, lambda: usable())


def product(a, a_layout: tuple, b, b_layout: tuple, out, shares) -> None:
    """``a @ b`` into ``out`` (row-major rows of unit steps) by OpenBLAS, shared out among
    threads: ``a_layout``/``b_layout`` are ``(transpose flag, leading dimension)``
    (:func:`seqgraph.backends.mkl.matrix_layout`); ``shares(parts_wanted)`` gives
    ``(parts, threading)`` of the pool to run on."""
    sgemm, dgemm, local = routines()
    double = a.dtype == numpy.float64
    _share_out(dgemm if double else sgemm, local, double, a, a_layout, b.ctypes.data, b_layout, b.shape[1],
               out, shares, packed=False)


def by_panels(rows: int, cols: int, a_layout: tuple) -> bool:
    """Whether a float32 product ``(rows, k) @ (k, cols)`` with a left operand laid out as
    ``a_layout`` runs faster through seqgraph's panel kernel (:mod:`seqgraph.backends.panels`)
    than through OpenBLAS, where both are at hand. On one core of a 2-core AMD EPYC (Zen 4)
    the kernel ran (2048, 65) @ (65, 1024), an input projection with its bias column, at 94
    GFLOP/s against OpenBLAS's 69, and every other shape of 2048 rows and 128 columns or
    more at 1.04-1.17 times OpenBLAS's rate; with 65 columns (an output layer) at 0.9 times.
    A transposed left operand is a weight gradient, ``g.T @ x`` summed over batch and time:
    (2048, 4H).T @ (2048, 65) ran at 1.14-1.18 times OpenBLAS's rate for H 128-512, and
    (2048, 4H).T @ (2048, H) at 1.10-1.23 (the copy of x into panels included); an LSTM
    training step took 0.92-0.94 of its time at hidden 128 and 256, with 1 thread and with 2
    (1.00 at 512), timed alternately in one process. Below 256 rows (an output layer's
    gradient, 65 rows) OpenBLAS stays."""
    if a_layout[0] == TRANSPOSE:
        return rows >= GRADIENT_ROWS and cols >= GRADIENT_COLUMNS
    return rows >= PANEL_ROWS and cols >= PANEL_COLUMNS


def panel_product(a, a_layout: tuple, panels, out, shares) -> None:
    """``a @ weight`` into ``out`` for a float32 ``weight`` copied into ``panels``
    (:class:`seqgraph.backends.panels.Panels`), shared out among threads by blocks of rows
    as :func:`product` shares."""
    _share_out(panels.routine, 0, False, a, a_layout, panels.address, (NO_TRANSPOSE, 0), panels.cols,
               out, shares, packed=True)


def _share_out(gemm: int, local: int, double: bool, a, a_layout: tuple, b_address: int, b_layout: tuple,
               cols: int, out, shares, packed: bool) -> None:
    rows, inner = a.shape
    by_rows = packed or rows >= cols
    parts, threading = shares(max(1, min(rows if by_rows else cols, rows * inner * cols // SHARE_WORK)))
    job = _Product(gemm, local, int(double), a_layout[0], b_layout[0], int(by_rows), int(packed), rows, cols,
                   inner, a_layout[1], b_layout[1], out.strides[0] // out.itemsize, parts, a.ctypes.data,
                   b_address, out.ctypes.data)
    _entry()(ctypes.byref(job), threading)
