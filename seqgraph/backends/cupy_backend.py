"""The CuPy backend: arrays live on an NVIDIA GPU. Imported only when asked for."""

from __future__ import annotations

import numpy

from ..errors import SeqgraphError


def _import_cupy():
    try:
        import cupy
    except ImportError:
        raise SeqgraphError("the cupy backend needs CuPy, which is not installed",
                            hint="pip install 'seqgraph[gpu]' (CUDA 12) or 'seqgraph[gpu-cuda11]'") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CuPy raises its own runtime errors when no driver is present
        raise SeqgraphError(f"the cupy backend found no usable CUDA GPU ({error})",
                            hint="use --backend numpy on this machine") from None
    if count == 0:
        raise SeqgraphError("the cupy backend found no CUDA GPU", hint="use --backend numpy on this machine")
    return cupy


class CupyBackend:
    """Computation with CuPy on the current CUDA device."""

    name = "cupy"

    def __init__(self):
        self.xp = _import_cupy()

    def asarray(self, array, dtype=None):
        """A device array from a host (or device) array."""
        return self.xp.asarray(array, dtype=dtype)

    def to_host(self, array):
        """A NumPy array with the same values, copied from the device."""
        if isinstance(array, numpy.ndarray):
            return array
        return self.xp.asnumpy(array)

    def synchronize(self) -> None:
        """Wait for the device to finish queued work."""
        self.xp.cuda.get_current_stream().synchronize()
