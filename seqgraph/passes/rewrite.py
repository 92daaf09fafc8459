"""Small graph edits the passes share: make a node, change a node's op, give a node new
arguments, move uses.

Every edit keeps the folded graph's invariants: a node's ``args`` and the edges (with
``ports`` and ``delay``) agree, and every node holds a full :class:`~seqgraph.ir.Node` (a new
node takes its time axis, layer and source span from the node it stands in for, so errors
still point at the user's line).
"""

from __future__ import annotations

from dataclasses import replace

import networkx as nx

from ..ir import PREV, Node, node_of, set_node


def core_nodes(graph: nx.DiGraph) -> set:
    """The recurrent core: nodes on a cycle (through a delay edge)."""
    return {n for c in nx.strongly_connected_components(graph) if len(c) > 1 for n in c}


def is_static(graph: nx.DiGraph, node) -> bool:
    """Whether ``node`` holds one value for the whole run (a parameter or a function of them)."""
    vtype = node_of(graph, node).type
    return not vtype.batched and not vtype.timed and vtype.time is None


def add_node(graph: nx.DiGraph, node, op: str, args, vtype, like, attrs=None) -> None:
    """Add (or overwrite) ``node = op(*args)`` of type ``vtype``, placed where ``like`` is."""
    source = node_of(graph, like)
    time = vtype.time if vtype.time else source.time if vtype.timed else None
    set_node(graph, node, Node(op, args, vtype, time, source.span, attrs or {}, source.layer))
    set_args(graph, node, args)


def change_op(graph: nx.DiGraph, node, op: str, args, attrs=None) -> None:
    """Make ``node`` compute ``op(*args)`` instead, keeping its id, type and source span."""
    set_node(graph, node, replace(node_of(graph, node), op=op, attrs=attrs or {}))
    set_args(graph, node, args)


def set_args(graph: nx.DiGraph, node, args) -> None:
    """Make ``node`` read ``args`` (in order), rewiring its incoming edges."""
    graph.remove_edges_from(list(graph.in_edges(node)))
    record = replace(node_of(graph, node), args=args)
    set_node(graph, node, record)
    for port, arg in enumerate(record.args):
        delay = 1 if record.op == PREV and port == 0 else 0
        if graph.has_edge(arg, node):
            graph.edges[arg, node]["ports"].append(port)
        else:
            graph.add_edge(arg, node, ports=[port], delay=delay)


def replace_uses(graph: nx.DiGraph, old, new) -> None:
    """Every reader of ``old`` reads ``new`` instead."""
    for consumer in list(graph.successors(old)):
        args = [new if a == old else a for a in node_of(graph, consumer).args]
        set_args(graph, consumer, args)


def fresh(graph: nx.DiGraph, stem: str) -> str:
    """A node id starting with ``stem`` that the graph does not use yet."""
    if stem not in graph:
        return stem
    count = 1
    while f"{stem}.{count}" in graph:
        count += 1
    return f"{stem}.{count}"
