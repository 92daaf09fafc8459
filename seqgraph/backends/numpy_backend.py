"""The NumPy backend: arrays live in host memory."""

from __future__ import annotations

import numpy

from ..errors import SeqgraphError
from .mkl import products


class NumpyBackend:
    """Computation with NumPy on the CPU. ``mkl``: run the matrix products through Intel MKL
    (:mod:`seqgraph.backends.mkl`); None means when it is installed and not turned off."""

    name = "numpy"

    def __init__(self, mkl=None):
        faster = products(mkl)
        if mkl and faster is None:
            raise SeqgraphError("MKL products were asked for, but MKL is not installed",
                                hint="pip install 'seqgraph[mkl]' (x86-64 only)")
        self.xp = faster if faster is not None else numpy
        self.products = "MKL" if faster is not None else "NumPy"

    def asarray(self, array, dtype=None):
        """A backend array from a host array (no copy when already right)."""
        return numpy.asarray(array, dtype=dtype)

    def to_host(self, array):
        """A NumPy array holding the same values."""
        return numpy.asarray(array)

    def synchronize(self) -> None:
        """Wait for queued work (nothing to wait for on the CPU)."""
