"""The NumPy backend: arrays live in host memory."""

from __future__ import annotations

import numpy

from ..errors import SeqgraphError
from . import native
from .mkl import Products, products
from .native_ops import OVERRIDES
from .protocol import Backend, Capabilities


class NumpyBackend(Backend):
    """Computation with NumPy on the CPU. ``mkl``: run the matrix products through Intel MKL
    (:mod:`seqgraph.backends.mkl`); None means when it is installed and not turned off.
    Native C loops (:mod:`seqgraph.backends.native`) run fused chains, whole step loops
    (with MKL) and the ops of :data:`~seqgraph.backends.native_ops.OVERRIDES` where a C
    compiler is at hand."""

    name = "numpy"
    overrides = OVERRIDES

    def __init__(self, mkl=None):
        faster = products(mkl)
        if mkl and faster is None:
            raise SeqgraphError("MKL products were asked for, but MKL is not installed",
                                hint="pip install 'seqgraph[mkl]' (x86-64 only)")
        self._use(faster if faster is not None else numpy)

    @classmethod
    def over(cls, xp):
        """The NumPy backend over namespace ``xp`` (NumPy itself, or MKL's products), or
        None for any other namespace."""
        if xp is not numpy and not isinstance(xp, Products):
            return None
        backend = cls.__new__(cls)
        backend._use(xp)
        return backend

    def _use(self, xp) -> None:
        self.xp = xp
        self.products = "MKL" if isinstance(xp, Products) else "NumPy"

    def capabilities(self) -> Capabilities:
        """Chains run as native loops where a C compiler builds them; with MKL, products by
        packed weights, rows shared among MKL's threads and whole step loops natively."""
        mkl = isinstance(self.xp, Products)
        compiled = native.usable(self.xp)
        return Capabilities(chain_kernels=compiled, native_loops=mkl and compiled, packed_products=mkl,
                            row_sharing=mkl, memory_bounds=True, float_errors=True)

    def first_byte(self, array) -> int:
        """The address of ``array``'s first element."""
        return array.__array_interface__["data"][0]

    def asarray(self, array, dtype=None):
        """A backend array from a host array (no copy when already right)."""
        return numpy.asarray(array, dtype=dtype)

    def to_host(self, array):
        """A NumPy array holding the same values."""
        return numpy.asarray(array)
