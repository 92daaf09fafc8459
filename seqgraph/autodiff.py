"""Reverse-mode differentiation: the gradient graph of an acyclic (unrolled) graph.

For every node ``n`` that lies between a seeded output and a requested input, the gradient
graph holds

- ``grad:n`` — the total cotangent of ``n``: the **sum** of one contribution per use of ``n``
  (a weight used at every step of an unrolled graph gets one contribution per step); this is
  where fan-out in the forward graph becomes a sum in the backward graph, and
- ``vjp:n`` — ``n``'s own local rule applied to ``grad:n``, giving one contribution to each
  of its inputs (``add`` distributes, ``max`` routes, ``mul`` switches); only where some
  contribution reaches ``n`` (none reaches a value that only a loss's target reads).

Only what the requested gradients need is built. :func:`accumulate` (and its in-place form
:func:`accumulate_into`) is the one place in seqgraph where cotangents are added together,
apart from the add instructions of a compiled scan's backward step loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import networkx as nx

from .backends import ops_for
from .ir import PREV, Node, node_of, set_node
from .ops import REGISTRY


def accumulate(total, contribution):
    """``total + contribution``, where ``total`` may still be nothing (``None``)."""
    if contribution is None:
        return total
    if total is None:
        return contribution
    return total + contribution


def accumulate_into(total, contribution) -> None:
    """Add ``contribution`` into the array ``total`` in place: the same sum as
    :func:`accumulate`, for a caller that owns ``total`` (a view of a gradient buffer that
    the slices of one value share)."""
    total += contribution


def differentiable(graph: nx.DiGraph, node, port: int) -> bool:
    """Whether input ``port`` of ``node`` receives a gradient."""
    data = node_of(graph, node)
    source = data.args[port]
    if node_of(graph, source).dtype != "float":
        return False
    op = data.op
    if op == PREV:
        return True
    return op in REGISTRY and port not in REGISTRY[op].nondiff


def local_vjp(xp, data: Node, g, out, inputs) -> tuple:
    """One node's gradient rule: the contribution to each input from cotangent ``g``."""
    op = data.op
    if op == PREV:
        return (g,)
    return ops_for(xp)[op].vjp(xp, g, out, *inputs, **data.attrs)


@dataclass(frozen=True)
class BackwardNode:
    """A node of the gradient graph. ``grad:n`` (``kind`` ``"grad"``) is the cotangent of the
    forward node ``of``: the sum of the contributions ``parts``, ``(vjp node, port)`` pairs
    (or ``("seed", n)``). ``vjp:n`` (``"vjp"``) applies the rule of ``of``'s op to it (see
    ``Node.rule``), giving a contribution to each of its inputs ``ports``."""

    kind: str  # grad | vjp
    of: str
    parts: tuple = ()
    ports: tuple = ()


def gradient_graph(graph: nx.DiGraph, seeds: Iterable, wrt: Iterable) -> nx.DiGraph:
    """The reverse-mode graph of acyclic ``graph`` from ``seeds`` back to ``wrt``.

    Each node holds a :class:`BackwardNode` (read it with ``node_of(backward, gnode)``).
    """
    seeds, wrt = list(seeds), list(wrt)
    order = list(nx.topological_sort(graph))
    upstream = reaching(graph, seeds)
    downstream = set(wrt).union(*(nx.descendants(graph, w) for w in wrt))
    relevant = {n for n in upstream & downstream if node_of(graph, n).dtype == "float"}
    backward = nx.DiGraph(seeds=seeds, wrt=wrt)
    for node in reversed(order):
        if node not in relevant:
            continue
        parts = [("seed", node)] if node in seeds else []
        for consumer in graph.successors(node):
            if consumer not in relevant:
                continue
            for port in graph.edges[node, consumer]["ports"]:
                if f"vjp:{consumer}" in backward and differentiable(graph, consumer, port):
                    parts.append((f"vjp:{consumer}", port))
        grad_id = f"grad:{node}"
        set_node(backward, grad_id, BackwardNode("grad", node, parts=tuple(parts)))
        for source, _ in parts:
            if source != "seed":
                backward.add_edge(source, grad_id)
        ports = [p for p, arg in enumerate(node_of(graph, node).args)
                 if arg in relevant and differentiable(graph, node, p)]
        if ports and parts:  # no cotangent reaches a value only a loss's target reads
            set_node(backward, f"vjp:{node}", BackwardNode("vjp", node, ports=tuple(ports)))
            backward.add_edge(grad_id, f"vjp:{node}")
    return backward


def reaching(graph: nx.DiGraph, seeds) -> set:
    """The nodes a gradient can flow into from ``seeds``: the seeds, and every node feeding a
    differentiable input of one of them (not a target fed only to a loss's target port)."""
    reached, todo = set(seeds), list(seeds)
    while todo:
        node = todo.pop()
        for port, arg in enumerate(node_of(graph, node).args):
            if arg not in reached and differentiable(graph, node, port):
                reached.add(arg)
                todo.append(arg)
    return reached


def held_constant(graph: nx.DiGraph, seeds) -> set:
    """The nodes whose values reach ``seeds`` through an input an op holds constant (a loss's
    target, see Op.held: a distillation teacher's through kl_div's), with everything they
    depend on: their gradients, where they have one through other paths, leave that out."""
    reached = reaching(graph, seeds)
    blocked = {arg for node in reached for port, arg in enumerate(node_of(graph, node).args)
               if port in getattr(REGISTRY.get(node_of(graph, node).op), "held", ())}
    return blocked.union(*(nx.ancestors(graph, node) for node in blocked))


def run_gradient_graph(xp, backward: nx.DiGraph, graph: nx.DiGraph, values: dict, seeds: dict) -> dict:
    """Evaluate ``backward`` node by node; returns the cotangent of every forward node in it."""
    grads: dict = {}
    contributions: dict = {}
    for gnode in nx.topological_sort(backward):
        step = node_of(backward, gnode)
        node = step.of
        if step.kind == "grad":
            total = None
            for source, port in step.parts:
                part = seeds[node] if source == "seed" else contributions[source][port]
                total = accumulate(total, part)
            grads[node] = total
        else:
            fdata = node_of(graph, node)
            inputs = [values[a] for a in fdata.args]
            contributions[gnode] = local_vjp(xp, fdata, grads[node], values[node], inputs)
    return grads
