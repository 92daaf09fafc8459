"""Fused elementwise chains as CUDA kernels: one forward and one backward kernel per
:class:`~seqgraph.passes.fusion.Chain`, generated from the chain's formulas.

A chain's formulas are written in the formula language of :mod:`seqgraph.ops.formula`, over
``x{k}`` (input ``k``) and ``g{k}`` (the cotangent of output ``k``). Each direction's
formulas become the body of one kernel (:func:`generate_kernel`): every output is computed
before any is stored, so an output may share its buffer with an input. :data:`PREAMBLE`
defines the ``sg_max`` and ``sg_min`` the generated C calls.

:class:`ChainKernel` runs one chain with either: CuPy ``ElementwiseKernel`` objects on the
GPU, native loops on NumPy where a C compiler is at hand, or the formulas evaluated with the
namespace's ufuncs (:func:`seqgraph.ops.formula.evaluate_all`) on any other. Inputs broadcast
like NumPy (a bias of shape ``(H,)`` against a ``(B, H)`` value); every output has the
broadcast shape.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy

from ..ops.formula import cuda_statements, evaluate_all, parse_formula
from . import native

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


class ChainKernel:
    """One fused chain, runnable: ``forward(*inputs)`` returns one array per chain output,
    ``backward(*inputs, *cotangents)`` one per target of a backward formula (in
    ``backward_targets`` order), each at the inputs' broadcast shape.

    With CuPy each direction is one generated ``ElementwiseKernel`` launch; with any other
    namespace the same formulas are evaluated with its ufuncs. Either way every result is
    computed before any is stored, so an output buffer may be one of the inputs."""

    def __init__(self, chain, xp):
        self.chain = chain
        self.xp = xp
        self.backward_targets = list(chain.backward)
        self.sources = {d: generate_kernel(chain, d) for d in ("forward", "backward")}
        self._trees = {"forward": tuple(parse_formula(text) for text in chain.forward.values()),
                       "backward": tuple(parse_formula(chain.backward[a]) for a in self.backward_targets)}
        self._kernels, self._native = {}, {}
        if _is_cupy(xp):
            self._kernels = {d: xp.ElementwiseKernel(s.in_params, s.out_params, s.body, s.name,
                                                     preamble=PREAMBLE)
                             for d, s in self.sources.items() if s.outputs}
        elif native.usable(xp):
            self._native = native.chain_kernels(chain)

    def forward(self, *inputs, out=None) -> tuple:
        """The chain's outputs (written into ``out``, a sequence of arrays, when given)."""
        return self._run("forward", inputs, out)

    def backward(self, *inputs_and_cotangents, out=None) -> tuple:
        """The cotangents of the targets in ``backward_targets``."""
        return self._run("backward", inputs_and_cotangents, out)

    def native_rows(self, direction: str, dtype):
        """The address of ``direction``'s native ``_rows`` loop for ``dtype`` (see
        :func:`native.c_function`), or None where it has none."""
        kernel = self._native.get(direction)
        return kernel.rows.get(numpy.dtype(dtype)) if kernel is not None else None

    def _run(self, direction: str, arrays: tuple, out) -> tuple:
        source = self.sources[direction]
        if len(arrays) != len(source.inputs):
            raise TypeError(f"{source.name} takes {len(source.inputs)} arrays, got {len(arrays)}")
        if not source.outputs:
            return ()
        if direction in self._native and self._native[direction].run(arrays, out):
            return tuple(out)
        if direction in self._kernels:
            if out is None:
                shape, dtype = _broadcast_shape(arrays), self.xp.result_type(*arrays)
                out = [self.xp.empty(shape, dtype=dtype) for _ in source.outputs]
            self._kernels[direction](*arrays, *out)
            return tuple(out)
        values = dict(zip(source.inputs, arrays))
        shape = _broadcast_shape(arrays)
        # a formula that is one variable hands back that input itself, which a store into an
        # output buffer sharing its memory would change
        results = [self.xp.broadcast_to(self.xp.copy(value) if tree.kind == "var" else value, shape)
                   for tree, value in zip(self._trees[direction],
                                          evaluate_all(self._trees[direction], values, self.xp))]
        if out is None:
            return tuple(results)
        for buffer, value in zip(out, results):
            self.xp.copyto(buffer, value)
        return tuple(out)


def _broadcast_shape(arrays) -> tuple:
    return numpy.broadcast_shapes(*(numpy.shape(a) for a in arrays))


def _is_cupy(xp) -> bool:
    return getattr(xp, "__name__", "") == "cupy"
