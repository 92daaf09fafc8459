"""The CuPy backend: arrays live on an NVIDIA GPU. Imported only when asked for.

Parameters, activations, gradients and optimiser state stay on the device for a whole
training run; each batch is copied in once, and only scalars (the loss, a finiteness flag)
and checkpoints (:meth:`CupyBackend.to_host`) come back. Two things make it fast, both built
from the compiled program rather than written per layer: each fused elementwise chain runs
as one generated kernel (:mod:`.cuda_kernels`, chosen by the compiler from the backend's
capabilities), and a training step is recorded once as a CUDA graph and
replayed (:mod:`.capture`).
"""

from __future__ import annotations

import sys

import numpy

from ..errors import SeqgraphError
from ..ops.formula import provide
from .protocol import Backend, Capabilities

INSTALL_HINT = ("pip install 'seqgraph[gpu]' for CUDA 12, 'seqgraph[gpu-cuda11]' for CUDA 11, "
                "'seqgraph[gpu-cuda13]' for CUDA 13 (nvidia-smi shows the CUDA version)")


def _erf():
    from cupyx.scipy.special import erf
    return erf


def _import_cupy():
    try:
        import cupy
    except ImportError:
        raise SeqgraphError("the cupy backend needs CuPy, which is not installed", hint=INSTALL_HINT) from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as error:  # CuPy raises its own runtime errors when no driver is present
        reason = " ".join(str(error).split())
        raise SeqgraphError(f"the cupy backend found no usable CUDA GPU ({reason})",
                            hint="use --backend numpy on this machine") from None
    if count == 0:
        raise SeqgraphError("the cupy backend found no CUDA GPU", hint="use --backend numpy on this machine")
    provide(cupy, "erf", _erf)
    return cupy


class CupyBackend(Backend):
    """Computation with CuPy on the current CUDA device."""

    name = "cupy"
    products = "CuPy (cuBLAS)"

    def __init__(self):
        self.xp = _import_cupy()

    @classmethod
    def over(cls, xp):
        """The CuPy backend over namespace ``xp`` when it is CuPy (already imported), else None."""
        if xp is not sys.modules.get("cupy"):
            return None
        provide(xp, "erf", _erf)
        backend = cls.__new__(cls)
        backend.xp = xp
        return backend

    def capabilities(self) -> Capabilities:
        """Each fused chain is one generated ``ElementwiseKernel``; CuPy's arrays say where
        their bytes lie."""
        return Capabilities(chain_kernels=True, memory_bounds=True, step_capture=True, cuda_arrays=True)

    @classmethod
    def use_device_of_rank(cls, local_rank: int, local_size: int) -> str:
        """Make GPU ``local_rank`` (modulo the GPUs there are) this process's device; says which."""
        cupy = _import_cupy()
        count = cupy.cuda.runtime.getDeviceCount()
        cupy.cuda.Device(local_rank % count).use()
        shared = f" (shared: {local_size} ranks on {count} GPUs)" if local_size > count else ""
        return f"GPU {local_rank % count}{shared}"

    def recorder(self):
        """Records a step into a CUDA graph on a stream of its own."""
        from .capture import CudaGraphRecorder
        return CudaGraphRecorder(self.xp)

    def free_memory(self) -> int:
        """Free bytes on the current device."""
        free, _ = self.xp.cuda.runtime.memGetInfo()
        return int(free)

    def first_byte(self, array) -> int:
        """The device address of ``array``'s first element."""
        return array.data.ptr

    def asarray(self, array, dtype=None):
        """A device array from a host (or device) array."""
        return self.xp.asarray(array, dtype=dtype)

    def to_host(self, array):
        """A NumPy array with the same values, copied from the device."""
        if isinstance(array, (numpy.ndarray, numpy.generic, int, float)):
            return numpy.asarray(array)
        return self.xp.asnumpy(array)

    def synchronize(self) -> None:
        """Wait for the device to finish queued work."""
        self.xp.cuda.get_current_stream().synchronize()

    def device_name(self) -> str:
        """The GPU's name, as the driver reports it."""
        properties = self.xp.cuda.runtime.getDeviceProperties(self.xp.cuda.Device().id)
        name = properties["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
