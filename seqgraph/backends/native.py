"""Fused elementwise chains as native CPU loops, compiled from the chains' formulas.

On NumPy each elementwise op of a step is its own call and its own pass over memory. A
chain of them (the LSTM's cell update: five ops, five outputs) runs two to three times as
fast as one C loop that takes each element through the whole chain in registers. The C is
generated from the same formulas as the CUDA kernels (:func:`cuda_kernels.generate_kernel`,
with C's function names), compiled once by the system's C compiler into a shared library
cached on disk, and called through ctypes. ``exp``, ``log`` and ``tanh`` are glibc's vector
versions (libmvec), so the loop is vectorised as NumPy's own loops are.

Used on Linux x86-64 when a C compiler (``$CC``, else ``cc``) builds and loads a test
kernel; ``SEQGRAPH_NATIVE=0`` turns it off. Without it a chain runs as NumPy calls. The
cache is ``$SEQGRAPH_CACHE`` (default ``~/.cache/seqgraph``), one library per chain, named
by a hash of its source, the compiler and the CPU's identity (vendor, family, model and
feature flags: a library built with ``-march=native`` runs only on such a CPU). A cache in
a home directory shared between hosts of a cluster so keeps one library per kind of CPU,
and a library is loaded only where the identity written into it is this CPU's.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

import numpy

from . import cuda_kernels
from .mkl import Products, function_address

FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-fopenmp-simd", "-shared", "-fPIC")
LIBRARIES = ("-lmvec", "-lm")
C_TYPES = {"float32": "float", "float64": "double"}
TYPE_INDEX = {"float32": 0, "float64": 1}
C_FUNCTIONS = {"float32": {"exp": "expf", "log": "logf", "tanh": "tanhf", "max": "sg_max_f", "min": "sg_min_f",
                           "log1p": "log1pf", "sqrt": "sqrtf", "abs": "fabsf", "erf": "erff", "pow": "powf"},
               "float64": {"exp": "exp", "log": "log", "tanh": "tanh", "max": "sg_max_d", "min": "sg_min_d",
                           "log1p": "log1p", "sqrt": "sqrt", "abs": "fabs", "erf": "erf", "pow": "pow"}}

# libmvec has vector versions of these; declaring them ``simd`` lets the compiler call them
# on whole registers without -ffast-math (which would also drop NaN and inf semantics)
PREAMBLE = """#include <math.h>
#pragma omp declare simd notinbranch
float expf(float);
#pragma omp declare simd notinbranch
float logf(float);
#pragma omp declare simd notinbranch
float tanhf(float);
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
double log(double);
#pragma omp declare simd notinbranch
double tanh(double);
/* NaN if either side is NaN, as numpy.maximum and numpy.minimum */
static inline float sg_max_f(float a, float b) { return (a > b || a != a) ? a : b; }
static inline double sg_max_d(double a, double b) { return (a > b || a != a) ? a : b; }
static inline float sg_min_f(float a, float b) { return (a < b || a != a) ? a : b; }
static inline double sg_min_d(double a, double b) { return (a < b || a != a) ? a : b; }

/* Work over independent rows shared out among threads: share(job, part) for each part, on
   the threads of the OpenMP runtime MKL runs on. threading: that runtime's GOMP_parallel,
   omp_get_thread_num and omp_get_num_threads, then MKL_Set_Num_Threads_Local (see
   seqgraph.backends.mkl.Products.shares); NULL runs every part here, one after another. */
typedef void (*sg_share_fn)(void*, long);
typedef void (*sg_fork_fn)(void (*)(void*), void*, unsigned, unsigned);
typedef int (*sg_count_fn)(void);
typedef struct { sg_share_fn share; void* job; long parts; void* const* threading; } sg_shares;

static void sg_run_shares(void* data) {
    const sg_shares* s = (const sg_shares*)data;
    const long threads = ((sg_count_fn)s->threading[2])();
    for (long part = ((sg_count_fn)s->threading[1])(); part < s->parts; part += threads)
        s->share(s->job, part);
}

static inline void sg_share_out(sg_share_fn share, void* job, long parts, void* const* threading) {
    if (parts > 1 && threading) {
        sg_shares s = {share, job, parts, threading};
        ((sg_fork_fn)threading[0])(sg_run_shares, &s, (unsigned)parts, 0);
    } else {
        for (long part = 0; part < parts; part++) share(job, part);
    }
}

/* the first of ``rows`` rows in share ``part`` of ``parts`` */
static inline long sg_share_start(long rows, long parts, long part) { return part * rows / parts; }

/* A NumPy array object as CPython and NumPy lay it out (PyObject_HEAD, then the start of
   PyArrayObject_fields), read in place: far cheaper than asking for each pointer from
   Python. The library checks this layout against real arrays before it is used. */
typedef struct { long refcount; const void* type; char* data; int nd; const long* dims;
                 const long* strides; const void* base; const void* descr; int flags; } sg_array;
static const void* sg_ndarray;           /* numpy.ndarray */
static const void* sg_descr[2];          /* the float32 and float64 dtypes */
void sg_set_types(const void* ndarray, const void* f32, const void* f64) {
    sg_ndarray = ndarray; sg_descr[0] = f32; sg_descr[1] = f64;
}
#define SG_WRITEABLE 0x0400

/* an input: (rows, cols), or one row (1, cols) or (cols,) read for every row; 2 for a
   single value (), which the caller spreads over a row of its own */
static int sg_input(const sg_array* a, long rows, long cols, int type, const char** data, long* step) {
    const long item = type ? 8 : 4;
    if (a->type != sg_ndarray || a->descr != sg_descr[type]) return 0;
    *data = a->data;
    *step = 0;
    if (a->nd == 0) return 2;
    if (a->nd == 2) {
        if (a->dims[1] != cols || (a->dims[0] != rows && a->dims[0] != 1)) return 0;
        if ((cols > 1 && a->strides[1] != item) || a->strides[0] % item) return 0;
        *step = a->dims[0] == 1 ? 0 : a->strides[0] / item;
    } else if (a->nd != 1 || a->dims[0] != cols || (cols > 1 && a->strides[0] != item)) {
        return 0;
    }
    return 1;
}

/* an output: exactly (rows, cols), writable, rows of unit steps */
static int sg_output(const sg_array* a, long rows, long cols, int type, char** data, long* step) {
    const long item = type ? 8 : 4;
    if (a->type != sg_ndarray || a->descr != sg_descr[type] || a->nd != 2) return 0;
    if (a->dims[0] != rows || a->dims[1] != cols || !(a->flags & SG_WRITEABLE)) return 0;
    if ((cols > 1 && a->strides[1] != item) || a->strides[0] % item) return 0;
    *step = a->strides[0] / item;
    *data = a->data;
    return 1;
}

/* what this library reads of an array, for the layout check */
long sg_probe(const sg_array* a, int what) {
    switch (what) {
        case 0: return (long)a->data;
        case 1: return a->nd;
        case 2: return a->dims[a->nd - 1];
        case 3: return a->strides[0];
        case 4: return (long)a->descr;
        case 5: return (long)a->type;
        default: return (a->flags & SG_WRITEABLE) != 0;
    }
}
"""


# The fewest rows of an op's native loop (a loss's rows, a weight's row dots) worth a
# thread of their own: below that, waking a thread costs more than it saves.
SHARE_ROWS = 256


def shares(xp, rows: int, least: int) -> tuple:
    """``(parts, threading)`` for native work over ``rows`` independent rows on namespace
    ``xp``: MKL's threads share it out (:meth:`~seqgraph.backends.mkl.Products.shares`),
    anything else runs it in one part, ``(1, 0)``."""
    return xp.shares(rows, least) if isinstance(xp, Products) else (1, 0)


def wanted() -> bool:
    """Whether the environment allows native kernels (``SEQGRAPH_NATIVE`` unset, or not 0)."""
    return os.environ.get("SEQGRAPH_NATIVE", "1").strip().lower() not in ("0", "off", "no", "false")


def usable(xp) -> bool:
    """Whether chains on namespace ``xp`` (NumPy itself, or NumPy with MKL products) can run
    natively; any other namespace's own functions are used."""
    return (xp is numpy or isinstance(xp, Products)) and wanted() and compiler() is not None


@lru_cache(maxsize=None)
def compiler():
    """The C compiler's path, when there is one that builds and loads a test kernel here."""
    if platform.system() != "Linux" or platform.machine() != "x86_64":
        return None
    path = shutil.which(os.environ.get("CC", "cc"))
    if path is None:
        return None
    if platform.python_implementation() != "CPython" or sysconfig.get_config_var("Py_GIL_DISABLED"):
        return None  # the object layout the loops read is that of CPython's default build
    try:
        library = _load(_build(PREAMBLE, path))
    except (OSError, subprocess.SubprocessError):
        return None
    return path if _layout_holds(library) else None


def _layout_holds(library) -> bool:
    """Whether the library reads arrays' fields where they are (see ``sg_array``)."""
    library.sg_probe.argtypes = [ctypes.py_object, ctypes.c_int]
    library.sg_probe.restype = ctypes.c_long
    array = numpy.zeros((3, 5), dtype=numpy.float64)[:, 1:4]
    expected = [array.ctypes.data, 2, 3, array.strides[0], id(array.dtype), id(numpy.ndarray), 1]
    return [library.sg_probe(array, what) for what in range(7)] == expected


def chain_kernels(chain) -> dict:
    """``{direction: NativeKernel}`` for ``chain``'s directions that write anything."""
    sources = {}
    for direction in ("forward", "backward"):
        per_type = {dtype: cuda_kernels.generate_kernel(chain, direction, C_FUNCTIONS[dtype]) for dtype in C_TYPES}
        if per_type["float32"].outputs:
            sources[direction] = per_type
    if not sources:
        return {}
    text = PREAMBLE + "".join(c_function(source, dtype)
                              for per_type in sources.values() for dtype, source in per_type.items())
    library = _library(text)
    if library is None:
        return {}
    return {direction: NativeKernel({numpy.dtype(dtype): _bind(library, source, dtype)
                                     for dtype, source in per_type.items()},
                                    {numpy.dtype(dtype): _address(library, f"{source.name}_{dtype}_rows")
                                     for dtype, source in per_type.items()})
            for direction, per_type in sources.items()}


def c_function(source, dtype: str) -> str:
    """Two C functions running ``source``'s body over every element of the arrays they are
    handed. ``<name>_<dtype>`` takes NumPy array objects, read in place (see ``sg_array`` in
    the preamble), and returns 0, having written nothing, when they are not laid out as its
    loop reads them. ``<name>_<dtype>_rows`` takes what that one finds: the rows and columns,
    each array's first element and its step between rows in elements (0: one row read for
    every row), inputs then outputs; a native step loop calls it directly."""
    ctype = C_TYPES[dtype]
    names = list(source.inputs) + list(source.outputs)
    checks = [f"    const {ctype}* p_{n}; long s_{n};\n"
              f"    const int k_{n} = sg_input({n}, rows, cols, {TYPE_INDEX[dtype]}, (const char**)&p_{n}, &s_{n});\n"
              f"    if (!k_{n}) return 0;\n"
              f"    {ctype} row_{n}[k_{n} == 2 ? cols : 1];\n"
              f"    if (k_{n} == 2) {{ for (long j = 0; j < cols; j++) row_{n}[j] = *p_{n}; p_{n} = row_{n}; }}"
              for n in source.inputs]
    checks += [f"    {ctype}* p_{n}; long s_{n};\n"
               f"    if (!sg_output({n}, rows, cols, {TYPE_INDEX[dtype]}, (char**)&p_{n}, &s_{n})) return 0;"
               for n in source.outputs]
    first = source.outputs[0]
    unpack = [f"    {'const ' if k < len(source.inputs) else ''}T* p_{n} = ({'const ' if k < len(source.inputs) else ''}T*)data[{k}];"
              f" const long s_{n} = step[{k}];" for k, n in enumerate(names)]
    loads = [f"            const T {n} = p_{n}[r * s_{n} + j];" for n in source.inputs]
    declares = [f"            T {n};" for n in source.outputs]
    stores = [f"            p_{n}[r * s_{n} + j] = {n};" for n in source.outputs]
    body = ["            " + line for line in source.body.splitlines()]
    name = f"{source.name}_{dtype}"
    return "\n".join([
        f"int {name}_rows(long rows, long cols, char* const* data, const long* step) {{",
        f"    typedef {ctype} T;",
        *unpack,
        "    for (long r = 0; r < rows; r++) {",
        "        #pragma omp simd",
        "        for (long j = 0; j < cols; j++) {",
        *loads, *declares, *body, *stores, "        }", "    }", "    return 1;", "}", "",
        f"int {name}({', '.join(f'const sg_array* {n}' for n in names)}) {{",
        f"    if ({first}->nd != 2) return 0;",
        f"    const long rows = {first}->dims[0], cols = {first}->dims[1];",
        *checks,
        f"    char* const data[] = {{{', '.join(f'(char*)p_{n}' for n in names)}}};",
        f"    const long step[] = {{{', '.join(f's_{n}' for n in names)}}};",
        f"    return {name}_rows(rows, cols, data, step);",
        "}", ""])


class NativeKernel:
    """One direction of a chain as native loops, one per float type: ``functions`` take
    array objects, ``rows`` holds the address of each one's ``_rows`` entry (see
    :func:`c_function`), for native step loops to call."""

    def __init__(self, functions: dict, rows: dict):
        self.functions = functions
        self.rows = rows

    def run(self, arrays, out) -> bool:
        """Compute into ``out``; False (nothing written) when the arrays are not laid out as
        the loops read them (then the caller computes the chain another way)."""
        function = self.functions.get(getattr(out[0], "dtype", None)) if out else None
        return function is not None and function(*arrays, *out) == 1


def _bind(library, source, dtype: str):
    function = getattr(library, f"{source.name}_{dtype}")
    function.argtypes = [ctypes.py_object] * (len(source.inputs) + len(source.outputs))
    function.restype = ctypes.c_int
    return function


def _address(library, name: str) -> int:
    """The address of C function ``name`` in ``library``."""
    return function_address(getattr(library, name))


def _build(text: str, cc: str) -> Path:
    """The shared library of C source ``text``: built once, then found in the cache (one
    built for another CPU under the same name is built again, never loaded)."""
    key = hashlib.sha256("\n".join([text, cc, *FLAGS, *LIBRARIES, _identity_line()]).encode()).hexdigest()[:24]
    folder = _cache_folder()
    library = folder / f"sg_{key}.so"
    if library.exists() and built_for(library) == cpu_key():
        return library
    with tempfile.TemporaryDirectory(dir=folder) as work:
        source = Path(work) / "kernel.c"
        source.write_text(f'{text}\nconst char sg_built_for[] = "{_BUILT_FOR}{cpu_key()}";\n')
        built = Path(work) / "kernel.so"
        subprocess.run([cc, *FLAGS, str(source), "-o", str(built), *LIBRARIES], check=True,
                       capture_output=True, timeout=120)
        os.replace(built, library)  # atomic: a reader never sees half a library
    return library


def _load(path: Path):
    return ctypes.CDLL(str(path))


@lru_cache(maxsize=None)
def op_loops(text: str):
    """The loaded library of an op's own native loops, C source ``text`` (compiled after the
    preamble); None where native loops are not usable. Made once per process."""
    if not wanted() or compiler() is None:
        return None
    return _library(PREAMBLE + text)


def _library(text: str):
    """The loaded library of kernel source ``text``, told NumPy's array and dtype objects;
    None (with a warning) if it does not build or load, and then NumPy does the work."""
    try:
        library = _load(_build(text, compiler()))
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        first = detail.decode(errors="replace").strip().splitlines()[:1]
        warnings.warn(f"seqgraph: a native loop did not build ({first[0] if first else error}); "
                      "NumPy runs it instead", RuntimeWarning, stacklevel=2)
        return None
    library.sg_set_types.argtypes = [ctypes.c_void_p] * 3
    library.sg_set_types(id(numpy.ndarray), id(numpy.dtype(numpy.float32)), id(numpy.dtype(numpy.float64)))
    return library


@lru_cache(maxsize=None)
def _cache_folder() -> Path:
    base = os.environ.get("SEQGRAPH_CACHE") or Path.home() / ".cache" / "seqgraph"
    folder = Path(base) / "native"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        folder = Path(tempfile.mkdtemp(prefix="seqgraph-native-"))
    return folder


_BUILT_FOR = "seqgraph native library for CPU "
_IDENTITY_FIELDS = {"vendor_id": "vendor", "cpu family": "family", "model": "model",
                    "model name": "name", "flags": "flags"}


def chosen_library(variable: str, choices: tuple, table, usable) -> str:
    """A library chosen per CPU: the one the environment ``variable`` names (one of
    ``choices``), else the one ``table(cpu_identity())`` gives; the first of ``choices``
    (the fallback) where that one is not ``usable()`` here."""
    asked = os.environ.get(variable, "").strip().lower()
    wanted = asked if asked in choices else table(cpu_identity())
    return wanted if wanted == choices[0] or usable() else choices[0]


@lru_cache(maxsize=None)
def cpu_identity() -> dict:
    """This CPU's ``vendor`` (``GenuineIntel``, ``AuthenticAMD``), ``family``, ``model``,
    ``name`` and feature ``flags``, from the first processor of /proc/cpuinfo (what is not
    there is empty; off Linux the machine and processor names stand in)."""
    identity = dict.fromkeys(_IDENTITY_FIELDS.values(), "")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {**identity, "vendor": platform.machine(), "name": platform.processor()}
    for line in text.split("\n\n", 1)[0].splitlines():
        field, _, value = line.partition(":")
        if field.strip() in _IDENTITY_FIELDS:
            identity[_IDENTITY_FIELDS[field.strip()]] = value.strip()
    return identity


def _identity_line() -> str:
    identity = cpu_identity()
    return "|".join(identity[name] for name in _IDENTITY_FIELDS.values())


def cpu_key() -> str:
    """A short hash of :func:`cpu_identity`: which CPUs a native library may be loaded on."""
    return hashlib.sha256(_identity_line().encode()).hexdigest()[:16]


def built_for(library: Path) -> str:
    """The :func:`cpu_key` written into a native library when it was built ('' if none)."""
    data = library.read_bytes()
    at = data.find(_BUILT_FOR.encode())
    return data[at + len(_BUILT_FOR):at + len(_BUILT_FOR) + 16].decode(errors="replace") if at >= 0 else ""
