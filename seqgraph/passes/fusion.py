"""Fusing elementwise chains: each maximal group of connected elementwise ops in a recurrent
core becomes one :class:`Chain`, described as data.

A chain holds its inputs, its outputs (values read outside it), and a formula per output
(forward) and per input (backward, from the outputs' cotangents), so a GPU backend can
generate one elementwise kernel per chain. On the CPU the compiler runs a chain as straight
in-place ufunc calls into preallocated buffers, one op after another.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import networkx as nx

from ..autodiff import differentiable
from ..ir import node_of
from ..ops.formula import parse_formula, variables
from ..ops.kernels import KERNELS, node_kernel


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
    fusible = {n for n in order if node_of(graph, n).op in KERNELS}
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
        for arg in node_of(graph, node).args:
            if arg not in inside and arg not in inputs:
                inputs.append(arg)
    outputs = [n for n in nodes if any(s not in inside for s in graph.successors(n))
               or not any(True for _ in graph.successors(n))]
    formula = _node_formulas(graph, nodes, {arg: f"x{k}" for k, arg in enumerate(inputs)})
    chain = Chain(nodes, inputs, outputs, {out: formula[out] for out in outputs},
                  values={node: formula[node] for node in nodes})
    chain.backward = _backward_formulas(graph, chain, formula)
    return chain


def _node_formulas(graph: nx.DiGraph, nodes: list, formula: dict) -> dict:
    """``formula`` completed with the formula of every node of ``nodes`` it lacks."""
    for node in nodes:
        if node not in formula:
            data = node_of(graph, node)
            formula[node] = node_kernel(data).formula.format(*(f"({formula[a]})" for a in data.args))
    return formula


def backward_chain(graph: nx.DiGraph, chain: Chain, outputs: list, targets: list, stored: set):
    """``chain`` as one backward pass runs it, or None where its formulas would need a value
    that is not stored.

    ``g{k}`` is the cotangent that ``outputs[k]`` gets from outside the chain; ``backward``
    holds the whole cotangent of each of ``targets`` (inputs, or nodes of the chain) that has
    one, in ``targets`` order. Its formulas read only values in ``stored``: its ``inputs``
    are those they read, inputs of the chain or nodes of it (any other inner value they
    need is recomputed from these)."""
    readable = [n for n in chain.inputs + chain.nodes if n in stored]
    missing = f"x{len(readable)}"  # names every value not at hand
    texts = _backward_texts(graph, chain, outputs, targets, dict(zip(readable, range(len(readable)))), missing)
    read = set().union(*(variables(parse_formula(text)) for text in texts.values()))
    if missing in read:
        return None
    used = [n for k, n in enumerate(readable) if f"x{k}" in read]
    # composed again with the values read numbered from 0 (those not read appear nowhere)
    texts = _backward_texts(graph, chain, outputs, targets, {n: j for j, n in enumerate(used)}, missing,
                            unread=[n for n in readable if n not in used])
    return replace(chain, inputs=used, outputs=list(outputs), forward={}, backward=texts)


def _backward_texts(graph, chain, outputs, targets, numbered: dict, missing: str, unread=()) -> dict:
    """The backward formula of each of ``targets`` that has a cotangent, with value ``n``
    read as ``x{numbered[n]}`` and every other input of the chain (and ``unread``) as
    ``missing``."""
    formula = {n: f"x{k}" for n, k in numbered.items()}
    formula |= {n: missing for n in list(chain.inputs) + list(unread) if n not in formula}
    cotangent = _cotangents(graph, chain.nodes, outputs, _node_formulas(graph, chain.nodes, formula))
    return {t: " + ".join(cotangent[t]) for t in targets if cotangent.get(t)}


def _backward_formulas(graph: nx.DiGraph, chain: Chain, formula: dict) -> dict:
    cotangent = _cotangents(graph, chain.nodes, chain.outputs, formula)
    return {arg: " + ".join(cotangent[arg]) for arg in chain.inputs if cotangent.get(arg)}


def _cotangents(graph: nx.DiGraph, nodes: list, outputs: list, formula: dict) -> dict:
    """The terms of the cotangent of every node and input of a chain, given ``g{k}`` at
    ``outputs[k]``."""
    cotangent = {out: [f"g{k}"] for k, out in enumerate(outputs)}
    for node in reversed(nodes):
        data = node_of(graph, node)
        terms = cotangent.get(node)
        if not terms:
            continue
        g = "(" + " + ".join(terms) + ")"
        for port, arg in enumerate(data.args):
            if not differentiable(graph, node, port):
                continue
            rule = node_kernel(data).gradient_formulas[port]
            values = [f"({formula[a]})" for a in data.args]
            cotangent.setdefault(arg, []).append(
                "(" + rule.format(*values, g=g, out=f"({formula[node]})") + ")")
    return cotangent
