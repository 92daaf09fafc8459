"""Algebraic rewrites that move work out of the recurrent core and into big products.

Each pass is a pure function: it returns a new folded graph and leaves its argument alone.
A rewritten node keeps its id, so every name the rest of seqgraph knows (outputs, states,
``Network.value``) still means the same value.
"""

from __future__ import annotations

import networkx as nx

from .rewrite import add_node, core_nodes, fresh, is_static, set_args


def split_concat_products(graph: nx.DiGraph) -> nx.DiGraph:
    """``W @ concat(x, h) = W[:, :X] @ x + W[:, X:] @ h``.

    A cell that multiplies one weight by ``concat(x, h[t-1])`` puts the input half of the
    product inside the recurrence; split, ``W_x @ x`` no longer depends on the previous step,
    so it leaves the core and runs once over all steps as one large product. The weight
    slices are static (computed once per run); their gradients flow back into ``W``.
    """
    graph = graph.copy()
    for node in list(graph.nodes):
        data = graph.nodes[node]
        if data["op"] != "matmul":
            continue
        weight, operand = data["args"]
        joined = graph.nodes[operand]
        if not (is_static(graph, weight) and joined["op"] == "concat" and len(joined["shape"]) == 1
                and joined["attrs"].get("axis", -1) == -1):
            continue
        terms, start = [], 0
        for index, part in enumerate(joined["args"]):
            stop = start + graph.nodes[part]["shape"][-1]
            rows = graph.nodes[weight]["shape"][0]
            piece = fresh(graph, f"{weight}[{start}:{stop}]")
            add_node(graph, piece, "slice", [weight],
                     graph.nodes[weight]["type"].with_shape((rows, stop - start)), weight,
                     {"start": start, "stop": stop, "axis": -1})
            term = fresh(graph, f"{node}/part{index}")
            add_node(graph, term, "matmul", [piece, part],
                     graph.nodes[part]["type"].with_shape((rows,)), node)
            terms.append(term)
            start = stop
        _sum_into(graph, node, terms)
    return graph


def _sum_into(graph: nx.DiGraph, node, terms: list) -> None:
    """Make ``node`` the sum of ``terms`` (a left fold; inner sums get fresh ids)."""
    total = terms[0]
    for index, term in enumerate(terms[1:], start=1):
        target = node if index == len(terms) - 1 else fresh(graph, f"{node}/sum{index}")
        if target == node:
            graph.nodes[node]["op"] = "add"
            graph.nodes[node]["attrs"] = {}
            set_args(graph, node, [total, term])
        else:
            add_node(graph, target, "add", [total, term], graph.nodes[node]["type"], node)
        total = target


def hoist_time_parallel_terms(graph: nx.DiGraph) -> nx.DiGraph:
    """``(P + C) + R = C + (P + R)`` where ``C`` is recurrent and ``P``, ``R`` are not.

    An LSTM's pre-activation ``W_ih x + b_ih + W_hh h[t-1] + b_hh`` adds its bias inside
    the recurrence; regrouped, ``P + R`` (input projection plus bias) runs once over all
    steps and the core keeps one add per step. Applied until nothing changes, so a longer
    chain of time-parallel terms collapses into one.
    """
    graph = graph.copy()
    changed = True
    while changed:
        changed = False
        core = core_nodes(graph)
        for node in list(graph.nodes):
            found = _hoistable(graph, node, core)
            if found is None:
                continue
            inner, recurrent, parallel, rest = found
            grouped = fresh(graph, f"{node}/hoisted")
            shape = graph.nodes[parallel]["type"]
            if graph.nodes[rest]["type"].time is not None:
                shape = graph.nodes[rest]["type"]
            add_node(graph, grouped, "add", [parallel, rest],
                     shape.with_shape(graph.nodes[inner]["shape"]), inner)
            set_args(graph, node, [recurrent, grouped])
            graph.remove_node(inner)
            changed = True
            break
    return graph


def _hoistable(graph: nx.DiGraph, node, core: set):
    """``(inner, C, P, R)`` when ``node = inner + R`` and ``inner = P + C`` (either order)."""
    data = graph.nodes[node]
    if data["op"] != "add" or node not in core:
        return None
    for inner, rest in (data["args"], data["args"][::-1]):
        idata = graph.nodes[inner]
        if (rest in core or inner not in core or idata["op"] != "add" or inner == rest
                or list(graph.successors(inner)) != [node] or idata["shape"] != data["shape"]):
            continue
        a, b = idata["args"]
        if a in core and b not in core:
            return inner, a, b, rest
        if b in core and a not in core:
            return inner, b, a, rest
    return None


def merge_shared_products(graph: nx.DiGraph) -> nx.DiGraph:
    """``W_1 @ z, ..., W_k @ z`` become one ``[W_1; ...; W_k] @ z`` and slices of it.

    Separate gate weights that multiply the same operand (a cell written gate by gate) cost
    ``k`` small products per step; stacked, they are one product with ``k`` times the rows,
    which runs near the machine's matrix-product peak. Each old product keeps its id as a
    slice (a view) of the merged one.
    """
    graph = graph.copy()
    groups: dict = {}
    for node, data in graph.nodes(data=True):
        if data["op"] == "matmul" and is_static(graph, data["args"][0]):
            groups.setdefault(data["args"][1], []).append(node)
    for operand, products in groups.items():
        if len(products) < 2:
            continue
        products.sort(key=str)
        weights = [graph.nodes[p]["args"][0] for p in products]
        rows = [graph.nodes[w]["shape"][0] for w in weights]
        first = products[0]
        stacked = fresh(graph, f"{first}/stacked_weight")
        add_node(graph, stacked, "concat", weights, graph.nodes[weights[0]]["type"].with_shape(
            (sum(rows), graph.nodes[weights[0]]["shape"][1])), weights[0], {"axis": -2})
        merged = fresh(graph, f"{first}/merged")
        add_node(graph, merged, "matmul", [stacked, operand],
                 graph.nodes[first]["type"].with_shape((sum(rows),)), first)
        start = 0
        for product, count in zip(products, rows):
            graph.nodes[product]["op"] = "slice"
            graph.nodes[product]["attrs"] = {"start": start, "stop": start + count, "axis": -1}
            graph.nodes[product]["rule"] = "g placed in zeros"
            set_args(graph, product, [merged])
            start += count
    return graph
