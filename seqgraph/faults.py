"""Where a run first produced NaN or inf: the node, its op, its layer, its source line and
the time step.

The compiled program runs whole sequences at once and fuses chains of ops, so it cannot say
which op at which step went wrong. The reference executor can: :func:`first_nonfinite`
replays the last forward run of a :class:`~seqgraph.runtime.Network` on the unrolled graph,
step by step, and stops at the first value that is not finite. When every value is finite
it runs the reference backward pass and names the first gradient (in the order backward
computes them) that is not. It costs one reference run, and is only called after something
went wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import networkx as nx

from .autodiff import differentiable
from .errors import Span, printable
from .ir import base_of, node_of


@dataclass
class Fault:
    """One non-finite value: of a node (``phase`` ``"value"``), of the gradient flowing
    into it (``"gradient"``), or of a parameter after an update (``"update"``)."""

    node: str
    op: str
    layer: Optional[str]
    span: Optional[Span]
    step: Optional[int]
    phase: str = "value"
    into: Optional[str] = None  # for a gradient: the input of ``node`` it flows into

    def __str__(self) -> str:
        what = {"value": "the value of", "gradient": "the gradient through", "update": "parameter"}[self.phase]
        text = f"{what} {self.node} ({self.op}" + (f" in layer {self.layer}" if self.layer else "") + ")"
        if self.step is not None:
            text += f" at time step {self.step}"
        if self.into is not None and self.into != self.node:
            text += f" into {self.into}"
        if self.span is not None:
            text += f", from {self.span}: {printable(self.span.source.line(self.span.line).strip())}"
        return text


def first_nonfinite(network) -> Optional[Fault]:
    """The first non-finite value of ``network``'s last forward run, else the first
    non-finite gradient of its loss; None when everything is finite (or nothing ran)."""
    run = network._run
    if run is None:
        return None
    xp = network.backend.xp
    reference = network.reference()
    graph = network.model.unroll(run.feed.steps or 1)

    def earlier_steps_first(node):
        step = node_of(graph, node).step
        return (-1 if step is None else step, node)

    values = {}
    for node in nx.lexicographical_topological_sort(graph, key=earlier_steps_first):
        data = node_of(graph, node)
        values[node] = reference.evaluate(xp, node, data, [values[a] for a in data.args], run.feed)
        if data.dtype == "float" and not _finite(xp, values[node]):
            return _fault(xp, graph, node, values[node], "value")
    if "loss" not in network.model.outputs:
        return None
    reference.graph, reference.values = graph, values
    reference.backward()
    for node in reversed(list(nx.topological_sort(graph))):
        grad = reference.grads.get(node)
        if grad is not None and not _finite(xp, grad):
            # Every consumer's gradient is finite, so the vjp of one of them made this one
            # non-finite: name the consumer, the op whose backward rule overflowed.
            users = [user for user in graph.successors(node) if reference.grads.get(user) is not None
                     and any(differentiable(graph, user, port) for port in graph.edges[node, user]["ports"])]
            fault = _fault(xp, graph, users[0] if len(users) == 1 else node, grad, "gradient")
            fault.into = base_of(graph, node)
            return fault
    return None


def nonfinite_parameter(network) -> Optional[Fault]:
    """The first parameter of ``network`` holding NaN or inf (after an update), or None."""
    xp = network.backend.xp
    nodes = network.model.checked.params
    for key, value in network.params.items():
        if not _finite(xp, value):
            return _fault(xp, network.model.graph, nodes[key], value, "update", name=key)
    return None


def _finite(xp, value) -> bool:
    return bool(xp.isfinite(value).all())


def _fault(xp, graph, node, value, phase: str, name: Optional[str] = None) -> Fault:
    data = node_of(graph, node)
    step = data.step
    if step is None and data.type.is_seq and value.ndim:
        # a time-parallel value holds every step at once: name the first bad one
        bad = xp.logical_not(xp.isfinite(value)).reshape(value.shape[0], -1).any(axis=1)
        step = int(xp.argmax(bad))
    return Fault(name or base_of(graph, node), data.op, data.layer, data.span, step, phase)
