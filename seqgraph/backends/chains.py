"""Fused elementwise chains, runnable: one chain's generated kernels on whichever backend.

:class:`ChainKernel` runs one chain with either: CuPy ``ElementwiseKernel`` objects built
from :func:`~seqgraph.backends.cuda_kernels.generate_kernel` on the GPU, native C loops
(:mod:`seqgraph.backends.native`) on NumPy where a C compiler builds them, or
:func:`~seqgraph.ops.formula.evaluate_all` on any other namespace. Inputs broadcast
like NumPy (a bias of shape ``(H,)`` against a ``(B, H)`` value); every output has the
broadcast shape.
"""

from __future__ import annotations

import numpy

from ..ops.formula import evaluate_all, parse_formula
from . import native
from .cuda_kernels import PREAMBLE, broadcast_shape, generate_kernel
from .cupy_backend import CupyBackend


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
        if CupyBackend.over(xp) is not None:
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
        :func:`seqgraph.backends.native.c_function`), or None where it has none."""
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
                shape, dtype = broadcast_shape(arrays), self.xp.result_type(*arrays)
                out = [self.xp.empty(shape, dtype=dtype) for _ in source.outputs]
            self._kernels[direction](*arrays, *out)
            return tuple(out)
        values = dict(zip(source.inputs, arrays))
        shape = broadcast_shape(arrays)
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
