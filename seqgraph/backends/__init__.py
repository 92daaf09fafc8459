"""Array backends: one array namespace ``xp`` (NumPy or CuPy) and host transfers.

Nothing above this package imports NumPy or CuPy for computation; CuPy is imported only when
the ``cupy`` backend is asked for.
"""

from __future__ import annotations

from ..errors import SeqgraphError, did_you_mean

BACKENDS = ("numpy", "cupy")


def get_backend(name: str):
    """The backend called ``name``: ``numpy`` or ``cupy``."""
    if name == "numpy":
        from .numpy_backend import NumpyBackend
        return NumpyBackend()
    if name == "cupy":
        from .cupy_backend import CupyBackend
        return CupyBackend()
    raise SeqgraphError(f"unknown backend '{name}'", hint=did_you_mean(name, BACKENDS))
