"""Array backends: one array namespace ``xp`` (NumPy or CuPy), host transfers, what each can
do and its faster pieces of some ops, behind one small protocol (:mod:`.protocol`).

Nothing above this package imports NumPy or CuPy for computation, nor asks a namespace what
it has: it asks the backend's capabilities. CuPy is imported only when the ``cupy`` backend
is asked for.
"""

from __future__ import annotations

import weakref
from bisect import bisect_left, bisect_right

from ..errors import SeqgraphError, did_you_mean
from .protocol import Backend, Capabilities, Override

BACKENDS = ("numpy", "cupy")  # the names get_backend knows, for command-line choices
DEFAULT_BACKEND = "numpy"

# Backends by the identity of their namespace, so that the compiler, handed a namespace, asks
# the backend that made it. A backend holds its namespace, so no id is reused while it is
# here: those get_backend gave are held as long as their users hold them, those made for a
# bare namespace (NumPy's module) for good.
_GIVEN: "weakref.WeakValueDictionary" = weakref.WeakValueDictionary()
_MADE: dict = {}


def get_backend(name) -> Backend:
    """The backend called ``name``: ``numpy`` or ``cupy``. A :class:`Backend` object is
    returned as it is, so a caller may bring its own."""
    if isinstance(name, str):
        name = _made(name)
    _GIVEN[id(name.xp)] = name
    return name


def _made(name: str) -> Backend:
    if name == "numpy":
        from .numpy_backend import NumpyBackend
        return NumpyBackend()
    if name == "cupy":
        from .cupy_backend import CupyBackend
        return CupyBackend()
    raise SeqgraphError(f"unknown backend '{name}'", hint=did_you_mean(name, BACKENDS))


def backend_of(xp) -> Backend:
    """The backend whose array namespace is ``xp``: the one :func:`get_backend` gave for it,
    else the built-in backend over such a namespace (NumPy's, MKL's products, CuPy's), else a
    plain :class:`Backend` with no capabilities and no overrides."""
    known = _GIVEN.get(id(xp)) or _MADE.get(id(xp))
    if known is not None:
        return known
    from .cupy_backend import CupyBackend
    from .numpy_backend import NumpyBackend
    for kind in (NumpyBackend, CupyBackend):
        backend = kind.over(xp)
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
        data = value.data
        start = data.ptr if hasattr(data, "ptr") else value.__array_interface__["data"][0]
        reach = [stride * (count - 1) for stride, count in zip(value.strides, value.shape)]
        return (start + sum(r for r in reach if r < 0),
                start + sum(r for r in reach if r > 0) + value.itemsize)
