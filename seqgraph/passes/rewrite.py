"""Small graph edits the passes share: make a node, give a node new arguments, move uses.

Every edit keeps the folded graph's invariants: ``args`` and the edges (with ``ports`` and
``delay``) agree, and every node carries the full set of attributes (a new node takes its
layer and source span from the node it stands in for, so errors still point at the user's
line).
"""

from __future__ import annotations

import networkx as nx

from ..graph import gradient_rule
from ..ir import PREV


def core_nodes(graph: nx.DiGraph) -> set:
    """The recurrent core: nodes on a cycle (through a delay edge)."""
    return {n for c in nx.strongly_connected_components(graph) if len(c) > 1 for n in c}


def is_static(graph: nx.DiGraph, node) -> bool:
    """Whether ``node`` holds one value for the whole run (a parameter or a function of them)."""
    vtype = graph.nodes[node]["type"]
    return not vtype.batched and not vtype.timed and vtype.time is None


def add_node(graph: nx.DiGraph, node, op: str, args, vtype, like, attrs=None) -> None:
    """Add (or overwrite) ``node = op(*args)`` of type ``vtype``, placed where ``like`` is."""
    source = graph.nodes[like]
    graph.add_node(node, op=op, args=tuple(args), type=vtype, shape=tuple(vtype.shape),
                   dtype=vtype.dtype, timed=vtype.timed, time=vtype.time if vtype.time else
                   source["time"] if vtype.timed else None, layer=source["layer"],
                   span=source["span"], rule=gradient_rule(op), attrs=dict(attrs or {}),
                   name=None, key=None, init=None)
    set_args(graph, node, args)


def set_args(graph: nx.DiGraph, node, args) -> None:
    """Make ``node`` read ``args`` (in order), rewiring its incoming edges."""
    graph.remove_edges_from(list(graph.in_edges(node)))
    graph.nodes[node]["args"] = tuple(args)
    for port, arg in enumerate(args):
        delay = 1 if graph.nodes[node]["op"] == PREV and port == 0 else 0
        if graph.has_edge(arg, node):
            graph.edges[arg, node]["ports"].append(port)
        else:
            graph.add_edge(arg, node, ports=[port], delay=delay)


def replace_uses(graph: nx.DiGraph, old, new) -> None:
    """Every reader of ``old`` reads ``new`` instead."""
    for consumer in list(graph.successors(old)):
        args = [new if a == old else a for a in graph.nodes[consumer]["args"]]
        set_args(graph, consumer, args)


def fresh(graph: nx.DiGraph, stem: str) -> str:
    """A node id starting with ``stem`` that the graph does not use yet."""
    if stem not in graph:
        return stem
    count = 1
    while f"{stem}.{count}" in graph:
        count += 1
    return f"{stem}.{count}"
