"""Matrix products through Intel MKL, where the optional ``mkl`` package is installed.

A recurrent step multiplies a ``(B, H)`` state by the same ``(H, 4H)`` weight at every step.
OpenBLAS (NumPy's library) repacks that weight into its kernel's layout on every call; MKL
can pack it once (``cblas_?gemm_pack``) and run only the compute kernel at each step
(``cblas_?gemm_compute``), the way PyTorch's fused CPU LSTM does. Measured on a 2-core AVX-512
machine, that step product runs about twice as fast as NumPy's ``matmul``. The compiled
program knows which operand stays fixed through a loop, so it packs each such weight once
per pass (:meth:`Products.pack`).

With MKL loaded, the other 2-D float products (input projections, weight gradients) run
through MKL too, so that one thread pool does every product: two pools on the same cores,
each spinning for a while after its work, slow each other down.

``pip install 'seqgraph[mkl]'`` installs MKL; ``SEQGRAPH_MKL=0`` turns it off. Without it
every product is NumPy's.
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
from functools import lru_cache, partial

import numpy

from . import cores


_BUFFER_START = ctypes.c_char.from_buffer
_ROW_MAJOR, _NO_TRANS, _TRANS, _PACKED, _B_MATRIX = 101, 111, 112, 151, 162
_INT, _FLOAT, _DOUBLE, _POINTER, _SIZE = (ctypes.c_int, ctypes.c_float, ctypes.c_double,
                                          ctypes.c_void_p, ctypes.c_size_t)
_ALIGN = 64


def wanted() -> bool:
    """Whether the environment allows MKL (``SEQGRAPH_MKL`` unset, or not 0/off/no/false)."""
    return os.environ.get("SEQGRAPH_MKL", "1").strip().lower() not in ("0", "off", "no", "false")


@lru_cache(maxsize=None)
def library():
    """MKL's single dynamic library from the installed ``mkl`` package, or None. The thread
    policy (:mod:`seqgraph.backends.cores`) is applied first: MKL reads it as it loads."""
    cores.apply()
    for file in _package_files("mkl"):
        if file.name.startswith("libmkl_rt.so") or (file.name.startswith("mkl_rt") and file.suffix == ".dll"):
            try:
                return ctypes.CDLL(str(file.locate()))
            except OSError:
                return None
    return None


def limit_threads(threads: int) -> None:
    """Let MKL's products use at most ``threads`` threads: through ``MKL_NUM_THREADS``, which
    MKL reads at its first call, and for an MKL already loaded through ``MKL_Set_Num_Threads``
    (not loading it here, which would settle its threading layer early)."""
    os.environ["MKL_NUM_THREADS"] = str(threads)
    if library.cache_info().currsize and library() is not None:
        _bind(library(), "MKL_Set_Num_Threads", [_INT])(threads)


def _package_files(package: str) -> list:
    try:
        return sorted(importlib.metadata.files(package) or [], key=str)
    except importlib.metadata.PackageNotFoundError:
        return []


# MKL's OpenMP threading layers and the runtime each one takes its threads from. MKL picks
# one at its first call: GNU's where libgomp is already loaded (PyTorch loads it), else Intel's.
_THREADING_LAYERS = {"libmkl_intel_thread": "libiomp5.so", "libmkl_gnu_thread": "libgomp.so.1"}


@lru_cache(maxsize=None)
def _openmp_runtime():
    """The OpenMP runtime MKL's threads come from (already loaded), or None (MKL
    sequential, on TBB, or not found)."""
    for file in _package_files("mkl"):
        for layer, runtime in _THREADING_LAYERS.items():
            if file.name.startswith(layer) and _already_loaded(file.name) is not None:
                return _already_loaded(runtime)
    return None


def _already_loaded(name: str):
    try:
        return ctypes.CDLL(name, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except (OSError, AttributeError):  # not loaded; no RTLD_NOLOAD off POSIX
        return None


def products(enabled=None):
    """The MKL products namespace, or None: ``enabled`` None means when installed and
    :func:`wanted`; False never; True when installed."""
    if enabled is False or (enabled is None and not wanted()):
        return None
    lib = library()
    return Products(lib) if lib is not None else None


class _Routines:
    """One precision's GEMM entry points (``s`` for float32, ``d`` for float64)."""

    def __init__(self, lib, letter: str, scalar):
        self.gemm = _bind(lib, f"cblas_{letter}gemm", [_INT] * 6 + [scalar, _POINTER, _INT, _POINTER, _INT,
                                                                    scalar, _POINTER, _INT])
        self.pack_size = _bind(lib, f"cblas_{letter}gemm_pack_get_size", [_INT] * 4, _SIZE)
        self.pack = _bind(lib, f"cblas_{letter}gemm_pack", [_INT] * 6 + [scalar, _POINTER, _INT, _POINTER])
        self.compute = _bind(lib, f"cblas_{letter}gemm_compute",
                             [_INT] * 6 + [_POINTER, _INT, _POINTER, _INT, scalar, _POINTER, _INT])


def function_address(function) -> int:
    """Where a function loaded through ctypes starts, for native code to call it."""
    return ctypes.cast(function, _POINTER).value


def _bind(lib, name: str, argtypes: list, restype=None):
    function = getattr(lib, name)
    function.argtypes = argtypes
    function.restype = restype
    return function


class Products:
    """NumPy's namespace with ``matmul`` and ``dot`` run by MKL where they can be, and
    :meth:`pack` for a weight many products share. Every other name is NumPy's."""

    def __init__(self, lib):
        self._routines = {numpy.dtype(numpy.float32): _Routines(lib, "s", _FLOAT),
                          numpy.dtype(numpy.float64): _Routines(lib, "d", _DOUBLE)}
        self._max_threads = _bind(lib, "MKL_Get_Max_Threads", [], _INT)
        self._local_threads = function_address(_bind(lib, "MKL_Set_Num_Threads_Local", [_INT], _INT))
        self._threading = None  # the threading entry points as an array native code reads, once asked
        self._step_products = None  # who runs a step's float32 product, once asked
        self._batched_products = None  # who runs the other products, once asked

    def __getattr__(self, name):
        value = getattr(numpy, name)
        setattr(self, name, value)  # looked up once, then a plain attribute
        return value

    def matmul(self, a, b, out=None):
        """``a @ b`` (into ``out``): MKL for 2-D float matrices (a weight gradient ``g.T @ x``
        with a narrow ``x`` in the order MKL runs faster), NumPy otherwise."""
        if isinstance(b, PackedWeight):
            return b.product(a, out)
        done = self._gemm(a, b, out)
        return done if done is not None else numpy.matmul(a, b, out=out)

    def dot(self, a, b, out=None):
        """``numpy.dot`` with the products of :meth:`matmul`."""
        if isinstance(b, PackedWeight):
            return b.product(a, out)
        done = self._gemm(a, b, out)
        return done if done is not None else numpy.dot(a, b, out=out)

    def pack(self, weight, rows: int, reuse=None):
        """``weight`` (k, n), packed for many products ``(rows, k) @ weight``; a plain
        contiguous copy where MKL cannot take it. ``reuse``: the ``buffer`` of an earlier
        packing its caller no longer uses, packed into when large enough (a new buffer is
        touched page by page, which costs more than the packing itself)."""
        routines = self._routines.get(weight.dtype)
        layout = matrix_layout(weight) if weight.ndim == 2 else None
        if routines is None or layout is None or rows < 1 or 0 in weight.shape:
            return numpy.ascontiguousarray(weight)
        if weight.dtype == numpy.float32 and self.step_products() == "avx512":
            from .panels import Panels
            return Panels(weight, rows, reuse)
        return Packed(routines, weight, layout, rows, reuse)

    def step_products(self) -> str:
        """Who multiplies by a packed float32 weight: ``mkl``, or ``avx512`` (seqgraph's
        own kernel, on CPUs where MKL's is slow: see :mod:`seqgraph.backends.panels`)."""
        if self._step_products is None:
            from .panels import choice
            self._step_products = choice()
        return self._step_products

    def batched_products(self) -> str:
        """Who runs the products without a packed weight (those batched over time): ``mkl``,
        or ``openblas`` (NumPy's, shared out on MKL's threads, on CPUs where MKL's kernels
        are slow: see :mod:`seqgraph.backends.openblas`)."""
        if self._batched_products is None:
            from . import openblas
            pooled = self.threads() == 1 or self.threading_addresses() is not None
            self._batched_products = openblas.choice() if pooled else "mkl"  # no pool to share on
        return self._batched_products

    def routine_addresses(self, dtype) -> tuple:
        """The addresses of the routine that multiplies by a weight :meth:`pack` packed
        for ``dtype`` (MKL's ``cblas_?gemm_compute`` or seqgraph's own, with its arguments)
        and of MKL's ``cblas_?gemm``, for native code to call."""
        routines = self._routines[numpy.dtype(dtype)]
        compute = routines.compute
        if numpy.dtype(dtype) == numpy.float32 and self.step_products() == "avx512":
            from .panels import kernel
            compute = kernel()
        return function_address(compute), function_address(routines.gemm)

    def threads(self) -> int:
        """How many threads MKL's products use (``MKL_NUM_THREADS``, else the cores)."""
        return self._max_threads()

    def threading_addresses(self):
        """``(GOMP_parallel, omp_get_thread_num, omp_get_num_threads, MKL_Set_Num_Threads_Local)``:
        native code forks its own parallel work onto the pool of threads MKL's products use
        (another pool would spin on the same cores) and keeps MKL to one thread inside each
        share. None where MKL does not run on an OpenMP runtime."""
        self._max_threads()  # MKL settles its threading layer at its first call
        runtime = _openmp_runtime()
        if runtime is None:
            return None
        try:
            entries = [runtime.GOMP_parallel, runtime.omp_get_thread_num, runtime.omp_get_num_threads]
        except AttributeError:
            return None
        return tuple(map(function_address, entries)) + (self._local_threads,)

    def shares(self, rows: int, least: int) -> tuple:
        """``(parts, threading)`` for native work over ``rows`` independent rows: one part a
        thread MKL would use, each of at least ``least`` rows, and the address of the entry
        points (:meth:`threading_addresses`) native code forks them with (``sg_share_out``
        in :mod:`seqgraph.backends.native`); ``(1, 0)`` where nothing is shared."""
        if self._threading is None:
            entries = self.threading_addresses()
            self._threading = False if entries is None else numpy.array(entries, dtype=numpy.int64)
        parts = min(self.threads(), rows // least) if self._threading is not False else 1
        return (parts, self._threading.ctypes.data) if parts > 1 else (1, 0)

    def _gemm(self, a, b, out):
        """``a @ b`` into ``out`` (made when None) by MKL, or None when MKL cannot take them."""
        if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype or a.shape[1] != b.shape[0]:
            return None
        routines = self._routines.get(a.dtype)
        if routines is None or 0 in a.shape or 0 in b.shape:
            return None
        left, right = matrix_layout(a), matrix_layout(b)
        if left is None or right is None:
            return None
        rows, inner, cols = a.shape[0], a.shape[1], b.shape[1]
        if out is None:
            out = numpy.empty((rows, cols), dtype=a.dtype)
        elif not _writable_rows(out, (rows, cols), a.dtype) or numpy.may_share_memory(out, a) \
                or numpy.may_share_memory(out, b):
            return None
        if self.batched_products() == "openblas":
            self._shared_product(a, left, b, right, out)
            return out
        if left[0] == _TRANS and right[0] == _NO_TRANS and 4 * cols < rows:
            # a weight gradient g.T @ x with x much narrower than g: MKL runs its transpose,
            # x.T @ g, markedly faster (about 25% for (2048, 65) by (2048, 512)), copy included
            turned = numpy.empty((cols, rows), dtype=a.dtype)
            routines.gemm(_ROW_MAJOR, _TRANS, _NO_TRANS, cols, rows, inner, 1.0, address(b), right[1],
                          address(a), left[1], 0.0, address(turned), rows)
            numpy.copyto(out, turned.T)
            return out
        routines.gemm(_ROW_MAJOR, left[0], right[0], rows, cols, inner, 1.0, address(a), left[1],
                      address(b), right[1], 0.0, address(out), out.strides[0] // out.itemsize)
        return out

    def _shared_product(self, a, left: tuple, b, right: tuple, out) -> None:
        """``a @ b`` into ``out`` on NumPy's OpenBLAS, or on seqgraph's panel kernel where
        that is faster (:func:`seqgraph.backends.openblas.by_panels`), shared out on MKL's threads."""
        from . import openblas
        shares = partial(self.shares, least=1)
        if a.dtype == numpy.float32 and self.step_products() == "avx512" \
                and openblas.by_panels(a.shape[0], b.shape[1], left):
            from .panels import Panels
            openblas.panel_product(a, left, Panels(b, a.shape[0]), out, shares)
        else:
            openblas.product(a, left, b, right, out, shares)


class PackedWeight:
    """A right operand prepared once for many products ``(rows, k) @ (k, n)``: its copy
    starts at ``address``, and ``routine`` (with the arguments of ``cblas_?gemm_compute``)
    multiplies by it. :class:`Packed` is MKL's packing; ``seqgraph.backends.panels.Panels``
    seqgraph's own."""

    __slots__ = ("_routine", "rows", "inner", "cols", "dtype", "buffer", "_pointer")

    def __init__(self, routine, rows: int, inner: int, cols: int, dtype, buffer, pointer: int):
        self._routine = routine
        self.rows, self.inner, self.cols, self.dtype = rows, inner, cols, dtype
        self.buffer, self._pointer = buffer, pointer

    @property
    def shape(self) -> tuple:
        """The shape of the weight that was packed."""
        return (self.inner, self.cols)

    @property
    def address(self) -> int:
        """Where the packed weight starts, for native code to hand its routine."""
        return self._pointer

    @property
    def routine(self) -> int:
        """The address of the routine that multiplies by it, for native code to call."""
        return function_address(self._routine)

    def product(self, a, out=None):
        """``a @ weight`` into ``out`` (made when None)."""
        if a.shape != (self.rows, self.inner) or a.dtype != self.dtype:
            raise ValueError(f"packed for ({self.rows}, {self.inner}) {self.dtype} operands, "
                             f"got {a.shape} {a.dtype}")
        layout = matrix_layout(a)
        if layout is None:
            a, layout = numpy.ascontiguousarray(a), (_NO_TRANS, self.inner)
        if out is None:
            out = numpy.empty((self.rows, self.cols), dtype=self.dtype)
        elif not _writable_rows(out, (self.rows, self.cols), self.dtype) or numpy.may_share_memory(out, a):
            raise ValueError(f"cannot write a ({self.rows}, {self.cols}) {self.dtype} product "
                             f"into {out.shape} {out.dtype} with strides {out.strides}")
        self._routine(_ROW_MAJOR, layout[0], _PACKED, self.rows, self.cols, self.inner,
                      address(a), layout[1], self._pointer, self.cols, 0.0, address(out),
                      out.strides[0] // out.itemsize)
        return out


class Packed(PackedWeight):
    """A right operand packed by MKL (``cblas_?gemm_pack``)."""

    __slots__ = ()

    def __init__(self, routines: _Routines, weight, layout, rows: int, reuse=None):
        inner, cols = weight.shape
        size = routines.pack_size(_B_MATRIX, rows, cols, inner) + _ALIGN
        buffer = reuse if reuse is not None and reuse.size >= size else numpy.empty(size, dtype=numpy.uint8)
        pointer = -(-buffer.ctypes.data // _ALIGN) * _ALIGN  # MKL's kernels want 64-byte rows
        routines.pack(_ROW_MAJOR, _B_MATRIX, layout[0], rows, cols, inner, 1.0,
                      address(weight), layout[1], pointer)
        super().__init__(routines.compute, rows, inner, cols, weight.dtype, buffer, pointer)


def matrix_layout(matrix):
    """``(transpose flag, leading dimension)`` of a row-major view of ``matrix``, or None when
    its strides are not those of a (possibly transposed) matrix with unit steps along a row."""
    item = matrix.itemsize
    rows, cols = matrix.shape
    row_step, col_step = matrix.strides
    if (col_step == item or cols == 1) and row_step % item == 0 and row_step >= cols * item:
        return _NO_TRANS, max(row_step // item, cols, 1)
    if (row_step == item or rows == 1) and col_step % item == 0 and col_step >= rows * item:
        return _TRANS, max(col_step // item, rows, 1)
    return None


def _writable_rows(out, shape: tuple, dtype) -> bool:
    return (out.shape == shape and out.dtype == dtype and out.flags.writeable
            and (out.strides[1] == out.itemsize or shape[1] == 1)
            and out.strides[0] % out.itemsize == 0 and out.strides[0] >= shape[1] * out.itemsize)




def address(array) -> int:
    """The address of ``array``'s first element (a contiguous writable array's is read far
    more cheaply through the buffer protocol than through ``array.ctypes``)."""
    flags = array.flags
    if flags.c_contiguous and flags.writeable:
        return ctypes.addressof(_BUFFER_START(array))
    return array.ctypes.data
