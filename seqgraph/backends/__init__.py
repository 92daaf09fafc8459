"""Array backends: one array namespace ``xp`` (NumPy or CuPy) and host transfers.

Nothing above this package imports NumPy or CuPy for computation; CuPy is imported only when
the ``cupy`` backend is asked for.
"""

from __future__ import annotations

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
