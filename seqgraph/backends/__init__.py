"""Array backends: one array namespace ``xp`` (NumPy or CuPy), host transfers, what each can
do and its faster pieces of some ops, behind one small protocol (:mod:`.protocol`).

Nothing above this package imports NumPy or CuPy for computation, nor asks a namespace what
it has: it asks the backend's capabilities. CuPy is imported only when the ``cupy`` backend
is asked for.
"""

from __future__ import annotations

import importlib
import weakref
from bisect import bisect_left, bisect_right

from ..errors import SeqgraphError, did_you_mean
from .protocol import Backend, Capabilities, Override

# every backend by name: the module and the class, imported only when asked for (so CuPy
# is not imported until its backend is); the order is that in which bare namespaces are tried
_KINDS = {"numpy": ("numpy_backend", "NumpyBackend"), "cupy": ("cupy_backend", "CupyBackend")}
BACKENDS = tuple(_KINDS)  # the names get_backend knows, for command-line choices
DEFAULT_BACKEND = "numpy"
GPU_BACKEND = "cupy"  # what a cross-check compares the default backend with

# Backends by the identity of their namespace, so that the compiler, handed a namespace, asks
# the backend that made it. A backend holds its namespace, so no id is reused while it is
# here: those get_backend gave are held as long as their users hold them, those made for a
# bare namespace (NumPy's module) for good.
_GIVEN: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()
_MADE: dict = {}


def get_backend(name) -> Backend:
    """The backend called ``name``: ``numpy`` or ``cupy``. A :class:`Backend` object is
    returned as it is, so a caller may bring its own; so may any object with ``name``,
    ``xp``, ``asarray`` and ``to_host``, taken with no capabilities and no overrides."""
    if isinstance(name, str):
        backend = backend_kind(name)()
    else:
        backend = name if isinstance(name, Backend) else _Adopted(name)
    _GIVEN[id(backend.xp)] = backend
    return backend


def backend_kind(name: str) -> type:
    """The class of the backend called ``name`` (none is made, so CuPy is not imported)."""
    if name not in _KINDS:
        raise SeqgraphError(f"unknown backend '{name}'", hint=did_you_mean(name, BACKENDS))
    module, kind = _KINDS[name]
    return getattr(importlib.import_module(f".{module}", __name__), kind)


def backend_of(xp) -> Backend:
    """The backend whose array namespace is ``xp``: the one :func:`get_backend` gave for it,
    else the built-in backend over such a namespace (NumPy's, MKL's products, CuPy's), else a
    plain :class:`Backend` with no capabilities and no overrides."""
    known = _GIVEN.get(id(xp)) or _MADE.get(id(xp))
    if known is not None:
        return known
    for name in BACKENDS:
        backend = backend_kind(name).over(xp)
        if backend is not None:
            break
    else:
        backend = _Plain(xp)
    _MADE[id(xp)] = backend
    return backend


class _Plain(Backend):
    """Any other array namespace, taken as it is."""

    name = "plain"

    def __init__(self, xp):
        self.xp = xp


class _Adopted(Backend):
    """A caller's object with ``name``, ``xp``, ``asarray`` and ``to_host`` as a backend."""

    def __init__(self, given):
        self.given = given
        self.name, self.xp = given.name, given.xp

    def asarray(self, array, dtype=None):
        """The given object's ``asarray``."""
        return self.given.asarray(array, dtype=dtype)

    def to_host(self, array):
        """The given object's ``to_host``."""
        return self.given.to_host(array)


def capabilities(xp) -> Capabilities:
    """What the backend of namespace ``xp`` can do now (see :class:`Capabilities`)."""
    return backend_of(xp).capabilities()


def ops_for(xp):
    """The op registry as the backend of namespace ``xp`` runs it: its overrides in front."""
    return backend_of(xp).ops


def shares_memory(xp, value, arrays) -> bool:
    """Whether ``value`` may overlap any of ``arrays`` in memory: the namespace's bounds
    check where it has one (``may_share_memory``), else whether it is one of them."""
    if not capabilities(xp).memory_bounds:
        return any(value is a for a in arrays)
    return any(xp.may_share_memory(value, a) for a in arrays)


def same_place(xp, a, b) -> bool:
    """Whether arrays ``a`` and ``b`` of namespace ``xp`` are the same elements of the same
    memory (never, where its backend cannot locate arrays' bytes)."""
    if not (capabilities(xp).memory_bounds and isinstance(a, xp.ndarray) and isinstance(b, xp.ndarray)):
        return False
    backend = backend_of(xp)
    return backend.first_byte(a) == backend.first_byte(b) and a.shape == b.shape and a.strides == b.strides


class Footprint:
    """The memory a growing set of arrays spans, as sorted disjoint byte ranges, so that
    whether one more array may overlap any of them is a binary search: the same answer as
    :func:`shares_memory` (a bounds check), in O(log n) instead of one check per array. An
    object whose bytes cannot be located (not an array of ``xp``) is matched by identity."""

    def __init__(self, xp, arrays=()):
        self.xp = xp
        self._located = capabilities(xp).memory_bounds
        self._starts: list = []
        self._stops: list = []
        self._ids: set = set()
        for array in arrays:
            self.add(array)

    def overlaps(self, value) -> bool:
        """Whether ``value``'s bytes may overlap those of an array added so far."""
        extent = self._extent(value)
        if extent is None:
            return id(value) in self._ids
        low, high = extent
        before = bisect_right(self._starts, low)
        return (before > 0 and self._stops[before - 1] > low) or \
            (before < len(self._starts) and self._starts[before] < high)

    def add(self, value) -> None:
        """Count ``value``'s bytes in (its range joins those it touches)."""
        self._ids.add(id(value))  # the caller holds every value it adds, so no id is reused
        extent = self._extent(value)
        if extent is None:
            return
        low, high = extent
        first = bisect_left(self._stops, low)
        last = bisect_right(self._starts, high)
        if first < last:
            low, high = min(low, self._starts[first]), max(high, self._stops[last - 1])
        self._starts[first:last] = [low]
        self._stops[first:last] = [high]

    def _extent(self, value):
        """``(first byte, one past the last)`` of ``value``'s elements; None where it has none
        or they cannot be located."""
        if not isinstance(value, self.xp.ndarray) or not self._located:
            return None
        if value.size == 0:
            return None
        start = backend_of(self.xp).first_byte(value)
        reach = [stride * (count - 1) for stride, count in zip(value.strides, value.shape)]
        return (start + sum(r for r in reach if r < 0),
                start + sum(r for r in reach if r > 0) + value.itemsize)
