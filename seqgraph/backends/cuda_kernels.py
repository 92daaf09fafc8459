"""Fused elementwise chains as CUDA kernels: one forward and one backward kernel per
:class:`~seqgraph.passes.fusion.Chain`, generated from the chain's formulas.

A chain's formulas are written in the formula language of :mod:`seqgraph.ops.formula`, over
``x{k}`` (input ``k``) and ``g{k}`` (the cotangent of output ``k``). Each direction's
formulas become the body of one kernel (:func:`generate_kernel`): every output is computed
before any is stored, so an output may share its buffer with an input. :data:`PREAMBLE`
defines the ``sg_max`` and ``sg_min`` the generated C calls.

:class:`seqgraph.backends.chains.ChainKernel` runs one chain from these sources.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy

from ..ops.formula import cuda_statements, parse_formula

# The helpers the generated code calls for ``max`` and ``min``: NaN if either side is NaN,
# as numpy.maximum and numpy.minimum (CUDA's fmax and fmin would return the other side).
PREAMBLE = """
template <typename V> __device__ __forceinline__ V sg_max(V a, V b) {
    return (a > b || a != a) ? a : b;
}
template <typename V> __device__ __forceinline__ V sg_min(V a, V b) {
    return (a < b || a != a) ? a : b;
}
"""


@dataclass(frozen=True)
class KernelSource:
    """What one ``cupy.ElementwiseKernel`` is made of (also compiled alone by the tests)."""
    name: str
    inputs: tuple
    outputs: tuple
    body: str

    @property
    def in_params(self) -> str:
        """CuPy's parameter list of the inputs (all of type ``T``)."""
        return ", ".join(f"T {n}" for n in self.inputs)

    @property
    def out_params(self) -> str:
        """CuPy's parameter list of the outputs (all of type ``T``)."""
        return ", ".join(f"T {n}" for n in self.outputs)

    def standalone(self, dtype: str) -> str:
        """A complete CUDA translation unit running the body once per element of flat arrays
        of ``dtype`` (``float32`` or ``float64``), as an ElementwiseKernel does, for checking
        the generated code with ``nvcc`` where CuPy is absent."""
        ctype = {"float32": "float", "float64": "double"}[dtype]
        params = [f"const T* in_{n}" for n in self.inputs] + [f"T* out_{n}" for n in self.outputs]
        loads = [f"        const T {n} = in_{n}[i];" for n in self.inputs]
        refs = [f"        T& {n} = out_{n}[i];" for n in self.outputs]
        body = ["        " + line for line in self.body.splitlines()]
        return "\n".join([
            f"typedef {ctype} T;", PREAMBLE,
            f'extern "C" __global__ void {self.name}({", ".join(params)}, long long n) {{',
            "    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;",
            "         i += (long long)blockDim.x * gridDim.x) {",
            *loads, *refs, *body, "    }", "}", ""])


def generate_kernel(chain, direction: str, functions: dict = None) -> KernelSource:
    """The kernel source of ``chain`` for ``direction`` (``forward`` or ``backward``);
    ``functions`` renames functions in the body (see :func:`cuda_expression`).

    Forward reads the inputs ``x0..`` and writes one output ``y{k}`` per chain output;
    backward reads the inputs and the outputs' cotangents ``g0..`` and writes ``d{k}``, the
    cotangent of the ``k``-th target of ``chain.backward`` (an input, or a node of the chain)."""
    if direction == "forward":
        inputs = tuple(f"x{k}" for k in range(len(chain.inputs)))
        targets = [(f"y{k}", text) for k, text in enumerate(chain.forward.values())]
    else:
        inputs = tuple(f"x{k}" for k in range(len(chain.inputs))) + \
            tuple(f"g{k}" for k in range(len(chain.outputs)))
        targets = [(f"d{k}", text) for k, text in enumerate(chain.backward.values())]
    assignments = [(target, parse_formula(text)) for target, text in targets]
    body = "\n".join(cuda_statements(assignments, functions))
    digest = hashlib.sha1(f"{inputs}{targets}".encode()).hexdigest()[:12]
    name = f"sg_chain_{direction}_{digest}"
    return KernelSource(name, inputs, tuple(t for t, _ in targets), body)


def broadcast_shape(arrays) -> tuple:
    """The NumPy broadcast of the arrays' shapes."""
    return numpy.broadcast_shapes(*(numpy.shape(a) for a in arrays))
