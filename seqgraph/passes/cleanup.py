"""Clean-up passes: common subexpressions and dead nodes."""

from __future__ import annotations

import networkx as nx

from ..ir import PREV, Node, node_of, nodes_of
from ..ops import REGISTRY
from .rewrite import replace_uses


def _signature(data: Node):
    """What makes two nodes compute the same value, or None if they never may be merged."""
    op = data.op
    if op != PREV and (op not in REGISTRY or REGISTRY[op].random or op == "const"):
        return None
    return op, data.args, repr(sorted(data.attrs.items())), data.type


def eliminate_common_subexpressions(graph: nx.DiGraph, keep=()) -> nx.DiGraph:
    """Nodes applying the same op to the same arguments become one node.

    Repeated until nothing changes, so equal chains collapse link by link. A node in ``keep``
    (an output or final state) is never the one removed, nor is a state's value: the scan
    carries each state from a node of its own, so two states that compute the same value
    (``a = h[t-1]; b = h[t-1]``) stay two nodes.
    """
    graph = graph.copy()
    keep = set(keep) | {data.args[0] for _, data in nodes_of(graph) if data.op == PREV}
    changed = True
    while changed:
        changed = False
        seen: dict = {}
        for node in sorted(graph.nodes, key=lambda n: (n in keep, str(n)), reverse=True):
            signature = _signature(node_of(graph, node))
            if signature is None:
                continue
            if signature not in seen:
                seen[signature] = node
                continue
            if node in keep:
                continue
            replace_uses(graph, node, seen[signature])
            graph.remove_node(node)
            changed = True
    return graph


def eliminate_dead_nodes(graph: nx.DiGraph, wanted) -> nx.DiGraph:
    """Only what ``wanted`` (outputs and final states) depends on, plus every leaf (the
    parameters and inputs a caller may name even where they do not matter)."""
    wanted = set(wanted)
    live = wanted.union(*(nx.ancestors(graph, n) for n in wanted)) if wanted else set()
    live |= {n for n, d in nodes_of(graph) if not d.args}
    return graph.subgraph(live).copy()


def eliminate_whole_slices(graph: nx.DiGraph, keep=()) -> nx.DiGraph:
    """``x[0:n]`` of an ``x`` with ``n`` entries on that axis is ``x`` itself: its readers read
    ``x`` (widening makes such slices when every gate is widened into one)."""
    graph = graph.copy()
    for node in list(graph.nodes):
        data = node_of(graph, node)
        if data.op != "slice" or node in keep:
            continue
        (source,) = data.args
        axis = data.attrs.get("axis", -1)
        if data.attrs["start"] == 0 and data.attrs["stop"] == node_of(graph, source).shape[axis]:
            replace_uses(graph, node, source)
            graph.remove_node(node)
    return graph
