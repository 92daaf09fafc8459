"""A recurrent step's float32 product by seqgraph's own AVX-512 kernel, where MKL's is slow.

MKL takes its generic code path on CPUs that are not Intel's: on a 2-core AMD EPYC (Zen 4,
AVX-512) its packed GEMM ran a step's ``(16, H) @ (H, 4H)`` at 49-76 GFLOP/s on one core,
where PyTorch's oneDNN kernels reach about 100 (see docs/compiler.md for the measurements,
and for OpenBLAS, BLIS and oneDNN from the registry). The product a step cannot batch over
time is small and always the same shape, so one plain kernel does it well: the weight is
copied once per pass into **panels** of 16 columns, each ``(k, 16)`` block contiguous
(:class:`Panels`), and every 16 rows of the state run through a panel at a time with one
AVX-512 register of 16 sums per row (``sg_panels_sgemm`` below). Its arguments are those of
MKL's ``cblas_sgemm_compute``, so a native step loop calls either the same way.

Where it runs the step products, the same kernel runs the wide products batched over time
(input projections, and weight gradients ``g.T @ x``, whose transposed left operand it reads
where it lies): see :func:`seqgraph.backends.openblas.by_panels`.

Which kernel a CPU gets (:func:`choice`) is a table of what was measured: MKL on Intel CPUs
(where its packed GEMM ran faster than PyTorch's), this kernel on other x86-64 CPUs with
AVX-512, MKL everywhere else. ``SEQGRAPH_STEP_PRODUCTS=mkl`` or ``=avx512`` overrides it.
"""

from __future__ import annotations

import ctypes
from functools import lru_cache

import numpy

from . import native
from .mkl import PackedWeight

CHOICES = ("mkl", "avx512")
_PANEL = 16  # columns per panel: one AVX-512 register of float32
_ALIGN = 64

SOURCE = r"""
#ifdef __AVX512F__
#include <immintrin.h>
#define SG_DEPTH 256  /* rows of a panel taken at a time: 16 KiB of it and of the state in L1 */
#define SG_AHEAD 16   /* rows of a transposed a fetched ahead of their use */
#define SG_THIN 4     /* the most columns of a last panel run as columns (sg_columns) */

/* the product of ``mr`` (a constant once inlined) rows of a, row r's element k at
   a[k * step + r] (the rows copied to a block: step 16; a transposed a read where it lies:
   its leading dimension, each row fetched ``ahead`` rows before its use), by one panel,
   into ``c`` (or added to it when ``keep``); ``mask``: the panel's columns that exist */
static inline __attribute__((always_inline)) void sg_tile(const int mr, long depth, const float* a, long step,
        const long ahead, const float* panel, int keep, float* c, long ldc, __mmask16 mask) {
    __m512 sum[16];
    #pragma GCC unroll 16
    for (int r = 0; r < mr; r++) sum[r] = keep ? _mm512_maskz_loadu_ps(mask, c + r * ldc) : _mm512_setzero_ps();
    for (long k = 0; k < depth; k++) {
        const __m512 b = _mm512_load_ps(panel + k * 16);
        if (ahead) _mm_prefetch((const char*)(a + (k + ahead) * step), _MM_HINT_T0);
        #pragma GCC unroll 16
        for (int r = 0; r < mr; r++) sum[r] = _mm512_fmadd_ps(_mm512_set1_ps(a[k * step + r]), b, sum[r]);
    }
    #pragma GCC unroll 16
    for (int r = 0; r < mr; r++) _mm512_mask_storeu_ps(c + r * ldc, mask, sum[r]);
}
#define SG_TILE(R, A, STEP, AHEAD) case R: sg_tile(R, depth, A, STEP, AHEAD, panel, keep, cr, ldc, mask); break;
#define SG_TILES(A, STEP, AHEAD) switch (mr) { \
    SG_TILE(1, A, STEP, AHEAD) SG_TILE(2, A, STEP, AHEAD) SG_TILE(3, A, STEP, AHEAD) SG_TILE(4, A, STEP, AHEAD) \
    SG_TILE(5, A, STEP, AHEAD) SG_TILE(6, A, STEP, AHEAD) SG_TILE(7, A, STEP, AHEAD) SG_TILE(8, A, STEP, AHEAD) \
    SG_TILE(9, A, STEP, AHEAD) SG_TILE(10, A, STEP, AHEAD) SG_TILE(11, A, STEP, AHEAD) SG_TILE(12, A, STEP, AHEAD) \
    SG_TILE(13, A, STEP, AHEAD) SG_TILE(14, A, STEP, AHEAD) SG_TILE(15, A, STEP, AHEAD) SG_TILE(16, A, STEP, AHEAD) }

/* the last panel's first ``nr`` (at most SG_THIN) columns by ``mr`` rows of a (laid out as
   for sg_tile), one register of the rows per column: a full tile would spend 16 columns'
   work on them (an input projection's bias column is one) */
static void sg_columns(int mr, int nr, long depth, const float* a, long step, const float* panel, int keep,
                       float* c, long ldc) {
    const __mmask16 rows = mr >= 16 ? 0xFFFF : (__mmask16)((1u << mr) - 1);
    __m512 sum[SG_THIN];
    for (int j = 0; j < nr; j++) sum[j] = _mm512_setzero_ps();
    for (long k = 0; k < depth; k++) {
        const __m512 column = _mm512_maskz_loadu_ps(rows, a + k * step);
        for (int j = 0; j < nr; j++) sum[j] = _mm512_fmadd_ps(column, _mm512_set1_ps(panel[k * 16 + j]), sum[j]);
    }
    float out[16] __attribute__((aligned(64)));
    for (int j = 0; j < nr; j++) {
        _mm512_store_ps(out, sum[j]);
        for (int r = 0; r < mr; r++) c[r * ldc + j] = keep ? c[r * ldc + j] + out[r] : out[r];
    }
}
#endif

/* c = a @ b + beta * c (beta 0 or 1) for a (m, k) and b (k, n) in panels; the arguments of
   MKL's cblas_sgemm_compute (layout, transb and ldb are not read). A row-major a has each
   16 rows copied column by column first: rows a whole number of pages apart would fall in
   one set of the L1 cache, and its ways would not hold them. A transposed a (transa 112:
   stored (k, m), a weight gradient's g) already lies that way and is read in place. */
void sg_panels_sgemm(int layout, int transa, int transb, int m, int n, int k, const float* a, int lda,
                     const void* b, int ldb, float beta, float* c, int ldc) {
#ifdef __AVX512F__
    const float* panels = (const float*)b;
    const int transposed = transa == 112;
    float block[SG_DEPTH * 16] __attribute__((aligned(64)));
    for (long k0 = 0; k0 < k; k0 += SG_DEPTH) {
        const long depth = k - k0 < SG_DEPTH ? k - k0 : SG_DEPTH;
        const int keep = k0 > 0 || beta != 0;
        for (long r0 = 0; r0 < m; r0 += 16) {
            const int mr = m - r0 < 16 ? m - r0 : 16;
            const float* rows = a + k0 * (long)lda + r0;  /* of a transposed a */
            if (!transposed)
                for (int r = 0; r < mr; r++)
                    for (long j = 0; j < depth; j++) block[j * 16 + r] = a[(r0 + r) * (long)lda + k0 + j];
            for (long p = 0; p * 16 < n; p++) {
                const long left = n - p * 16;
                const __mmask16 mask = left >= 16 ? 0xFFFF : (__mmask16)((1u << left) - 1);
                const float* panel = panels + (p * (long)k + k0) * 16;
                float* cr = c + r0 * ldc + p * 16;
                if (left <= SG_THIN)
                    sg_columns(mr, (int)left, depth, transposed ? rows : block, transposed ? lda : 16, panel, keep,
                               cr, ldc);
                else if (transposed)
                    SG_TILES(rows, lda, SG_AHEAD)
                else
                    SG_TILES(block, 16, 0)
            }
        }
    }
#endif
}

/* weight (k, n), element (i, j) at w[i * rs + j * cs], copied into the panels of
   sg_panels_sgemm (the last one padded with zeros): row by row where rows are contiguous,
   else column by column (a transposed view), reading memory in order either way */
void sg_panels_pack(const float* w, long rs, long cs, long k, long n, float* panels) {
    const long count = (n + 15) / 16;
    if (cs == 1) {
        for (long i = 0; i < k; i++)
            for (long p = 0; p < count; p++)
                for (long j = 0; j < 16; j++)
                    panels[(p * k + i) * 16 + j] = p * 16 + j < n ? w[i * rs + p * 16 + j] : 0;
        return;
    }
    for (long p = 0; p < count; p++)
        for (long j = 0; j < 16; j++) {
            const float* column = w + (p * 16 + j) * cs;
            for (long i = 0; i < k; i++) panels[(p * k + i) * 16 + j] = p * 16 + j < n ? column[i * rs] : 0;
        }
}

/* whether this build has the kernel (the compiler targets a CPU with AVX-512) */
int sg_panels_built(void) {
#ifdef __AVX512F__
    return 1;
#else
    return 0;
#endif
}
"""


@lru_cache(maxsize=None)
def _packer():
    """``sg_panels_pack`` from the kernel's native library (built wherever :func:`kernel` is)."""
    function = native.op_loops(SOURCE).sg_panels_pack
    function.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_long, ctypes.c_void_p]
    function.restype = None
    return function


@lru_cache(maxsize=None)
def kernel():
    """``sg_panels_sgemm`` from its native library, or None where it is not built (no C
    compiler, native loops off, a CPU without AVX-512)."""
    library = native.op_loops(SOURCE)
    if library is None or not library.sg_panels_built():
        return None
    function = library.sg_panels_sgemm
    function.argtypes = [ctypes.c_int] * 6 + [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int,
                                              ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
    function.restype = None
    return function


def table_choice(identity: dict) -> str:
    """The measured table: MKL on Intel CPUs, this kernel on other x86-64 CPUs with AVX-512,
    MKL elsewhere."""
    if identity.get("vendor") == "GenuineIntel" or "avx512f" not in identity.get("flags", "").split():
        return "mkl"
    return "avx512"


def choice() -> str:
    """Who runs a step's float32 product here: ``SEQGRAPH_STEP_PRODUCTS`` (``mkl`` or
    ``avx512``) where set, else :func:`table_choice`; ``mkl`` wherever the kernel is not built."""
    return native.chosen_library("SEQGRAPH_STEP_PRODUCTS", CHOICES, table_choice, lambda: kernel() is not None)


class Panels(PackedWeight):
    """A float32 right operand ``(k, n)`` copied into panels of 16 columns for
    ``sg_panels_sgemm``: panel ``p`` holds columns ``16p .. 16p + 15`` of every row, row
    after row (the last one padded with zeros)."""

    __slots__ = ()

    def __init__(self, weight, rows: int, reuse=None):
        inner, cols = weight.shape
        count = -(-cols // _PANEL)
        size = count * inner * _PANEL * 4 + _ALIGN
        buffer = reuse if reuse is not None and reuse.size >= size else numpy.empty(size, dtype=numpy.uint8)
        pointer = -(-buffer.ctypes.data // _ALIGN) * _ALIGN  # aligned loads of whole panels
        row_step, column_step = (stride // weight.itemsize for stride in weight.strides)
        # in C: NumPy's copy of a transposed view into panels took 3-4 times as long
        _packer()(weight.ctypes.data, row_step, column_step, inner, cols, pointer)
        super().__init__(kernel(), rows, inner, cols, weight.dtype, buffer, pointer)
