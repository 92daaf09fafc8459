"""Array backends: one array namespace ``xp`` (NumPy or CuPy) and host transfers.

Nothing above this package imports NumPy or CuPy for computation; CuPy is imported only when
the ``cupy`` backend is asked for.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right

from ..errors import SeqgraphError, did_you_mean

BACKENDS = ("numpy", "cupy")


def get_backend(name):
    """The backend called ``name``: ``numpy`` or ``cupy`` (a backend object is returned as it
    is, so a caller may bring its own: one with ``name``, ``xp``, ``asarray``, ``to_host``)."""
    if not isinstance(name, str):
        return name
    if name == "numpy":
        from .numpy_backend import NumpyBackend
        return NumpyBackend()
    if name == "cupy":
        from .cupy_backend import CupyBackend
        return CupyBackend()
    raise SeqgraphError(f"unknown backend '{name}'", hint=did_you_mean(name, BACKENDS))


def shares_memory(xp, value, arrays) -> bool:
    """Whether ``value`` may overlap any of ``arrays`` in memory: the namespace's bounds
    check (NumPy's and CuPy's ``may_share_memory``), else whether it is one of them."""
    overlap = getattr(xp, "may_share_memory", None)
    if overlap is None:
        return any(value is a for a in arrays)
    return any(overlap(value, a) for a in arrays)


class Footprint:
    """The memory a growing set of arrays spans, as sorted disjoint byte ranges, so that
    whether one more array may overlap any of them is a binary search: the same answer as
    :func:`shares_memory` (a bounds check), in O(log n) instead of one check per array. An
    object whose bytes cannot be located (not an array of ``xp``) is matched by identity."""

    def __init__(self, xp, arrays=()):
        self.xp = xp
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
        if not isinstance(value, self.xp.ndarray) or getattr(self.xp, "may_share_memory", None) is None:
            return None
        if value.size == 0:
            return None
        data = value.data
        start = data.ptr if hasattr(data, "ptr") else value.__array_interface__["data"][0]
        reach = [stride * (count - 1) for stride, count in zip(value.strides, value.shape)]
        return (start + sum(r for r in reach if r < 0),
                start + sum(r for r in reach if r > 0) + value.itemsize)
