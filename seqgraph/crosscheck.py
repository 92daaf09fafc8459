"""Cross-checking two backends: the same compiled program, parameters and inputs run on both,
and the first value that differs named by node and time step.

It is the quickest way to find a GPU or fusion bug: a wrong kernel shows up as the first node
(in the order the program computes) whose value leaves the tolerance, at the first step
where it does. :func:`crosscheck` compares every forward value the program keeps first; only
when they all agree does it run backward and compare the gradients, in the order backward
computes them (so the latest time step first). Values compare as NumPy's ``isclose`` does:
``|a - b| <= atol + rtol * |b|``, with NaN equal to NaN.

Either side may be any backend object (``name``, ``xp``, ``asarray``, ``to_host``), which is
how the tests check this module without a GPU: against NumPy with one function broken.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy

from .backends import DEFAULT_BACKEND, GPU_BACKEND
from .compiler import Scan
from .errors import Span, printable
from .gradcheck import random_inputs
from .ir import base_of, node_of
from .runtime import Network


@dataclass
class Difference:
    """The first place two backends disagree: a node's ``value`` or the ``gradient`` flowing
    into it, at ``step`` (None for a value without a time axis)."""
    phase: str
    node: str
    op: str
    layer: Optional[str]
    span: Optional[Span]
    step: Optional[int]
    first: float
    second: float
    backends: tuple

    def __str__(self) -> str:
        what = "the value of" if self.phase == "value" else "the gradient into"
        text = f"{what} {self.node} ({self.op}" + (f" in layer {self.layer}" if self.layer else "") + ")"
        if self.step is not None:
            text += f" at time step {self.step}"
        text += (f": {self.backends[0]} {self.first:.9g}, {self.backends[1]} {self.second:.9g} "
                 f"(difference {abs(self.first - self.second):.3g})")
        if self.span is not None:
            text += f"\n  from {self.span}: {printable(self.span.source.line(self.span.line).strip())}"
        return text


@dataclass
class CrossCheck:
    """The outcome: how many values and gradients agreed, the largest difference seen, and
    the first :class:`Difference` (None when everything agreed)."""
    backends: tuple
    values: int
    gradients: int
    largest: float
    difference: Optional[Difference] = None

    def __str__(self) -> str:
        names = " vs ".join(self.backends)
        if self.difference is not None:
            return f"crosscheck {names}: differs at {self.difference}"
        return (f"crosscheck {names}: {self.values} values and {self.gradients} gradients agree "
                f"(largest difference {self.largest:.3g})")


def crosscheck(model, first=DEFAULT_BACKEND, second=GPU_BACKEND, dtype: str = "float64", seed: int = 0,
               batch: int = 2, steps: int = 4, rtol: float = 1e-6, atol: float = 1e-9) -> CrossCheck:
    """Run ``model`` compiled on backend ``first`` and on ``second`` (names or backend objects)
    with the same parameters and random inputs, and compare as the module docstring says."""
    nets = [Network(model, backend=b, dtype=dtype, seed=seed) for b in (first, second)]
    nets[1].params = {k: nets[1].backend.asarray(nets[0].backend.to_host(v)) for k, v in nets[0].params.items()}
    inputs, lengths = random_inputs(model, batch=batch, steps=steps, seed=seed, ragged=True)
    for net in nets:
        net.forward(inputs, lengths)
    compare = _Comparison(nets[0].program.graph, nets, rtol, atol)
    result = CrossCheck(tuple(net.backend.name for net in nets), 0, 0, 0.0)
    result.difference = compare.values(nets[0].program.schedule, result)
    if result.difference is None:
        grads = [net.program.backward(net.backend.xp, net._run, _seeds(net)) for net in nets]
        result.difference = compare.gradients(nets[0].program.schedule, grads, result)
    return result


def _seeds(net) -> dict:
    """The loss's cotangent 1, or (for a model without a loss) ones for every float output."""
    outputs = net.model.outputs
    if "loss" in outputs:
        return {outputs[n]: v for n, v in net.seeds(None).items()}
    xp = net.backend.xp
    graph = net.program.graph
    return {node: xp.ones(net._run.env[node].shape, dtype=net.dtype) for node in outputs.values()
            if node_of(graph, node).dtype == "float"}


class _Comparison:
    """Walks the schedule of one program and compares two runs' arrays node by node."""

    def __init__(self, graph, nets: list, rtol: float, atol: float):
        self.graph, self.nets, self.rtol, self.atol = graph, nets, rtol, atol

    def values(self, schedule: list, result: CrossCheck) -> Optional[Difference]:
        """The first forward value that differs, in schedule order (a scan: step by step)."""
        envs = [net._run.env for net in self.nets]
        for item in schedule:
            nodes = item.code.order if isinstance(item, Scan) else [item.node]
            found = []
            for rank, node in enumerate(nodes):
                if node not in envs[0] or node not in envs[1]:
                    continue
                result.values += 1
                bad = self._bad_steps(node, envs[0][node], envs[1][node], result)
                if bad is not None:
                    found.append((bad[0], rank, node, bad[1]))
            if found:
                step, _, node, pair = min(found, key=lambda f: (-1 if f[0] is None else f[0], f[1]))
                return self._difference("value", node, step, pair)
        return None

    def gradients(self, schedule: list, grads: list, result: CrossCheck) -> Optional[Difference]:
        """The first gradient that differs, in the order backward computes them."""
        for item in reversed(schedule):
            nodes = [] if isinstance(item, Scan) else [item.node]
            for node in nodes:
                if grads[0].get(node) is None or grads[1].get(node) is None:
                    continue
                result.gradients += 1
                bad = self._bad_steps(node, grads[0][node], grads[1][node], result, latest=True)
                if bad is not None:
                    return self._difference("gradient", node, bad[0], bad[1])
        return None

    def _bad_steps(self, node, a, b, result: CrossCheck, latest: bool = False):
        """``(step, (a, b))`` of the first element out of tolerance (its step None when the
        node has no time axis; the latest step when ``latest``), or None."""
        a = numpy.asarray(self.nets[0].backend.to_host(a), dtype=numpy.float64)
        b = numpy.asarray(self.nets[1].backend.to_host(b), dtype=numpy.float64)
        if a.shape != b.shape:
            return None, (float("nan"), float("nan"))
        both_nan = numpy.isnan(a) & numpy.isnan(b)
        gap = numpy.where(both_nan, 0.0, numpy.abs(a - b))
        if gap.size:
            result.largest = max(result.largest, float(numpy.where(numpy.isnan(gap), numpy.inf, gap).max()))
        bad = ~(numpy.isclose(a, b, rtol=self.rtol, atol=self.atol) | both_nan)
        if not bad.any():
            return None
        data = node_of(self.graph, node)
        if (data.timed or data.type.is_seq) and a.ndim:
            per_step = bad.reshape(a.shape[0], -1).any(axis=1)
            step = int(numpy.flatnonzero(per_step)[-1 if latest else 0])
            where = numpy.flatnonzero(bad[step].ravel())[0]
            return step, (float(a[step].ravel()[where]), float(b[step].ravel()[where]))
        where = numpy.flatnonzero(bad.ravel())[0]
        return None, (float(a.ravel()[where]), float(b.ravel()[where]))

    def _difference(self, phase: str, node, step, pair) -> Difference:
        data = node_of(self.graph, node)
        return Difference(phase, str(base_of(self.graph, node)), data.op, data.layer, data.span,
                          step, pair[0], pair[1], tuple(net.backend.name for net in self.nets))
