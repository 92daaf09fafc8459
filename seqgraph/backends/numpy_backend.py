"""The NumPy backend: arrays live in host memory."""

from __future__ import annotations

import numpy


class NumpyBackend:
    """Computation with NumPy on the CPU."""

    name = "numpy"
    xp = numpy

    def asarray(self, array, dtype=None):
        """A backend array from a host array (no copy when already right)."""
        return numpy.asarray(array, dtype=dtype)

    def to_host(self, array):
        """A NumPy array holding the same values."""
        return numpy.asarray(array)

    def synchronize(self) -> None:
        """Wait for queued work (nothing to wait for on the CPU)."""
