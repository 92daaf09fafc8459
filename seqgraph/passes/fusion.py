"""Fusing elementwise chains: each maximal group of connected elementwise ops in a recurrent
core becomes one :class:`Chain`, described as data.

A chain holds its inputs, its outputs (values read outside it), and a formula per output
(forward) and per input (backward, from the outputs' cotangents), so a GPU backend can
generate one elementwise kernel per chain. On the CPU the compiler runs a chain as straight
in-place ufunc calls into preallocated buffers, one op after another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from ..autodiff import differentiable
from ..ops.kernels import KERNELS


@dataclass
class Chain:
    """A fused elementwise chain. Formulas name input ``k`` ``x{k}`` and the cotangent of
    output ``k`` ``g{k}``; ``backward`` formulas recompute inner values from the inputs.
    ``values`` holds the formula of every node of the chain (a kernel may write inner
    values too, where a backward pass keeps them)."""
    nodes: list
    inputs: list
    outputs: list
    forward: dict = field(default_factory=dict)
    backward: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)


def fuse_elementwise(graph: nx.DiGraph, order: list) -> list:
    """The chains of one recurrent core whose nodes, in step order, are ``order``."""
    members = set(order)
    step = graph.subgraph(members).copy()
    step.remove_edges_from([(u, v) for u, v, d in step.edges(data=True) if d.get("delay")])
    fusible = {n for n in order if graph.nodes[n]["op"] in KERNELS}
    groups = nx.weakly_connected_components(step.subgraph(fusible))
    chains = []
    for group in groups:
        pieces = [group] if _convex(step, group) else [{n} for n in group]
        for piece in pieces:
            chains.append(describe_chain(graph, [n for n in order if n in piece]))
    chains.sort(key=lambda c: order.index(c.nodes[0]))
    return chains


def _convex(step: nx.DiGraph, group: set) -> bool:
    """No path leaves the group and comes back into it (so it can run as one kernel)."""
    outside_after = set().union(*(nx.descendants(step, n) for n in group)) - group
    return not any(nx.descendants(step, n) & group for n in outside_after)


def describe_chain(graph: nx.DiGraph, nodes: list) -> Chain:
    """The :class:`Chain` of ``nodes`` (given in dependency order)."""
    inside = set(nodes)
    inputs = []
    for node in nodes:
        for arg in graph.nodes[node]["args"]:
            if arg not in inside and arg not in inputs:
                inputs.append(arg)
    outputs = [n for n in nodes if any(s not in inside for s in graph.successors(n))
               or not any(True for _ in graph.successors(n))]
    formula = {arg: f"x{k}" for k, arg in enumerate(inputs)}
    for node in nodes:
        data = graph.nodes[node]
        formula[node] = KERNELS[data["op"]].formula.format(*(f"({formula[a]})" for a in data["args"]))
    chain = Chain(nodes, inputs, outputs, {out: formula[out] for out in outputs},
                  values={node: formula[node] for node in nodes})
    chain.backward = _backward_formulas(graph, chain, formula)
    return chain


def _backward_formulas(graph: nx.DiGraph, chain: Chain, formula: dict) -> dict:
    cotangent = {out: [f"g{k}"] for k, out in enumerate(chain.outputs)}
    for node in reversed(chain.nodes):
        data = graph.nodes[node]
        terms = cotangent.get(node)
        if not terms:
            continue
        g = "(" + " + ".join(terms) + ")"
        for port, arg in enumerate(data["args"]):
            if not differentiable(graph, node, port):
                continue
            rule = KERNELS[data["op"]].gradient_formulas[port]
            values = [f"({formula[a]})" for a in data["args"]]
            cotangent.setdefault(arg, []).append(
                "(" + rule.format(*values, g=g, out=f"({formula[node]})") + ")")
    return {arg: " + ".join(cotangent[arg]) for arg in chain.inputs if cotangent.get(arg)}
