"""Algebraic rewrites that move work out of the recurrent core and into big products.

Each pass is a pure function: it returns a new folded graph and leaves its argument alone.
A rewritten node keeps its id, so every name the rest of seqgraph knows (outputs, states,
``Network.value``) still means the same value.
"""

from __future__ import annotations

import networkx as nx

from ..ir import Node, node_of, nodes_of
from ..ops.elementwise import broadcast_shapes
from ..ops.kernels import KERNELS as ELEMENTWISE
from .rewrite import add_node, change_op, core_nodes, fresh, is_static, set_args


def split_concat_products(graph: nx.DiGraph) -> nx.DiGraph:
    """``W @ concat(x, h) = W[:, :X] @ x + W[:, X:] @ h``.

    A cell that multiplies one weight by ``concat(x, h[t-1])`` puts the input half of the
    product inside the recurrence; split, ``W_x @ x`` no longer depends on the previous step,
    so it leaves the core and runs once over all steps as one large product. The weight
    slices are static (computed once per run); their gradients flow back into ``W``.
    """
    graph = graph.copy()
    for node in list(graph.nodes):
        data = node_of(graph, node)
        if data.op != "matmul":
            continue
        weight, operand = data.args
        joined = node_of(graph, operand)
        if not (is_static(graph, weight) and joined.op == "concat" and len(joined.shape) == 1
                and joined.attrs.get("axis", -1) == -1):
            continue
        terms, start = [], 0
        for index, part in enumerate(joined.args):
            stop = start + node_of(graph, part).shape[-1]
            rows = node_of(graph, weight).shape[0]
            piece = fresh(graph, f"{weight}[{start}:{stop}]")
            add_node(graph, piece, "slice", [weight],
                     node_of(graph, weight).type.with_shape((rows, stop - start)), weight,
                     {"start": start, "stop": stop, "axis": -1})
            term = fresh(graph, f"{node}/part{index}")
            add_node(graph, term, "matmul", [piece, part],
                     node_of(graph, part).type.with_shape((rows,)), node)
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
            change_op(graph, node, "add", [total, term])
        else:
            add_node(graph, target, "add", [total, term], node_of(graph, node).type, node)
        total = target


def hoist_time_parallel_terms(graph: nx.DiGraph) -> nx.DiGraph:
    """``(A + B) + R = A + (B + R)`` when ``B`` and ``R`` both vary less than ``A``.

    Values vary over three ranks: static (parameters), time-parallel, recurrent. An LSTM's
    pre-activation ``W_ih x + b_ih + W_hh h[t-1] + b_hh`` adds one bias inside the
    recurrence and one over all steps; regrouped as ``W_hh h[t-1] + (W_ih x + (b_ih + b_hh))``
    the two biases add once (static), the input projection and bias once over all steps,
    and the core keeps one add per step. Applied until nothing changes.
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
            inner, varying, steady, rest = found
            grouped = fresh(graph, f"{node}/grouped")
            like = steady if node_of(graph, steady).type.time is not None else rest
            shape = broadcast_shapes(node_of(graph, steady).shape, node_of(graph, rest).shape)
            add_node(graph, grouped, "add", [steady, rest],
                     node_of(graph, like).type.with_shape(shape), inner)
            set_args(graph, node, [varying, grouped])
            graph.remove_node(inner)
            changed = True
            break
    return graph


def _rank(graph: nx.DiGraph, node, core: set) -> int:
    """0 for a static value, 1 for a time-parallel one, 2 for a recurrent one."""
    return 0 if is_static(graph, node) else 2 if node in core else 1


def _hoistable(graph: nx.DiGraph, node, core: set):
    """``(inner, A, B, R)`` when ``node = inner + R``, ``inner = A + B`` (in either order),
    ``inner`` is used only here and ``B`` and ``R`` both rank below ``A``."""
    data = node_of(graph, node)
    if data.op != "add":
        return None
    for inner, rest in (data.args, data.args[::-1]):
        idata = node_of(graph, inner)
        if (idata.op != "add" or inner == rest or list(graph.successors(inner)) != [node]
                or idata.shape != data.shape):
            continue
        for varying, steady in (idata.args, idata.args[::-1]):
            top = _rank(graph, varying, core)
            if _rank(graph, steady, core) < top and _rank(graph, rest, core) < top:
                return inner, varying, steady, rest
    return None


def fold_biases_into_products(graph: nx.DiGraph) -> nx.DiGraph:
    """``W @ x + b`` outside the recurrent core becomes one ``affine(W, b, x)``.

    After hoisting, an LSTM's input projection is a product over all steps plus the summed
    biases: a second pass over a ``(T, B, 4H)`` array to add them, and a third in the
    backward pass to sum the bias gradient. As one op the bias rides in the product (see
    ``affine`` in :mod:`seqgraph.ops.linalg`), and its gradient in the weight gradient's.
    """
    graph = graph.copy()
    core = core_nodes(graph)
    # planned on the graph as given, then applied: a fold removes its product, which the
    # walk would otherwise still visit (W @ concat(b, x), split in two by split_concat_products,
    # is a product of x plus a static product that is a bias). A product is read by its add
    # alone, so no fold changes what another one finds.
    folds = [(node, found) for node in graph if (found := _affine_parts(graph, node, core)) is not None]
    for node, (product, bias) in folds:
        weight, operand = node_of(graph, product).args
        change_op(graph, node, "affine", [weight, bias, operand])
        graph.remove_node(product)
    return graph


def _affine_parts(graph: nx.DiGraph, node, core: set):
    """``(product, bias)`` when ``node = product + bias`` outside the core, ``product`` is a
    static weight times a value used only here, and ``bias`` a static vector of its rows."""
    data = node_of(graph, node)
    if data.op != "add" or node in core:
        return None
    for product, bias in (data.args, data.args[::-1]):
        pdata = node_of(graph, product)
        if pdata.op != "matmul" or product == bias or list(graph.successors(product)) != [node]:
            continue
        weight = pdata.args[0]
        if (is_static(graph, weight) and is_static(graph, bias) and tuple(pdata.shape) == tuple(data.shape)
                and tuple(node_of(graph, bias).shape) == (node_of(graph, weight).shape[0],)):
            return product, bias
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
    for node, data in nodes_of(graph):
        if data.op == "matmul" and is_static(graph, data.args[0]):
            groups.setdefault(data.args[1], []).append(node)
    position = {node: k for k, node in enumerate(graph.nodes)}
    for operand, products in groups.items():
        if len(products) < 2:
            continue
        products.sort(key=position.get)
        weights = [node_of(graph, p).args[0] for p in products]
        rows = [node_of(graph, w).shape[0] for w in weights]
        first = products[0]
        stacked = fresh(graph, f"{first}/stacked_weight")
        add_node(graph, stacked, "concat", weights, node_of(graph, weights[0]).type.with_shape(
            (sum(rows), node_of(graph, weights[0]).shape[1])), weights[0], {"axis": -2})
        merged = fresh(graph, f"{first}/merged")
        add_node(graph, merged, "matmul", [stacked, operand],
                 node_of(graph, first).type.with_shape((sum(rows),)), first)
        start = 0
        for product, count in zip(products, rows):
            change_op(graph, product, "slice", [merged], {"start": start, "stop": start + count, "axis": -1})
            start += count
    return graph


def widen_sibling_slices(graph: nx.DiGraph) -> nx.DiGraph:
    """``op(x[a:b]), op(x[b:c])`` become slices of one ``op(x[a:c])``.

    The gates of a cell are slices of one pre-activation; the same elementwise op on
    neighbouring slices (an LSTM's input and forget gates, both sigmoids; a GRU's ``r`` and
    ``z`` pre-activations, both sums of slices of the same two products) is one call on a
    wider slice, which halves the calls per step. Each old node keeps its id as a slice of
    the widened one. Binary ops widen when every input is sliced alike or is a static value
    of the sibling's own size (gate biases, joined into one static vector).
    """
    graph = graph.copy()
    while _widen_once(graph):
        pass  # a widened op makes its consumers siblings in turn
    return graph


def _widen_once(graph: nx.DiGraph) -> bool:
    groups: dict = {}
    for node, data in nodes_of(graph):
        key = _sibling_key(graph, data)
        if key is not None:
            groups.setdefault(key, []).append(node)
    changed = False
    for members in groups.values():
        members.sort(key=lambda n: _extent(graph, _sliced(graph, n)))
        run = [members[0]]
        for node in members[1:] + [None]:
            if node is not None and _extent(graph, _sliced(graph, node))[0] == \
                    _extent(graph, _sliced(graph, run[-1]))[1]:
                run.append(node)
                continue
            if len(run) > 1:
                _widen(graph, run)
                changed = True
            run = [node]
    return changed


def _extent(graph: nx.DiGraph, node) -> tuple:
    attrs = node_of(graph, node).attrs
    return attrs["start"], attrs["stop"]


def _sibling_key(graph: nx.DiGraph, data: Node):
    """Nodes with equal keys apply one op to slices of the same inputs (or None)."""
    if data.op not in ELEMENTWISE or len(data.shape) != 1:
        return None
    parents, extents = [], set()
    for arg in data.args:
        source = node_of(graph, arg)
        if _is_slice(source):
            parents.append(source.args[0])
            extents.add((source.attrs["start"], source.attrs["stop"]))
        elif is_static(graph, arg) and tuple(source.shape) == tuple(data.shape):
            parents.append(STATIC)
        else:
            return None
    if len(extents) != 1:
        return None
    return data.op, tuple(parents), repr(sorted(data.attrs.items()))


STATIC = "<static>"  # a port fed a different static value (a bias) in each sibling


def _is_slice(data: Node) -> bool:
    return data.op == "slice" and data.attrs.get("axis", -1) == -1 and len(data.shape) == 1


def _sliced(graph: nx.DiGraph, node):
    """A sliced input of ``node`` (siblings are ordered and joined by its extent)."""
    return next(a for a in node_of(graph, node).args if _is_slice(node_of(graph, a)))


def _widen(graph: nx.DiGraph, run: list) -> None:
    first = node_of(graph, run[0])
    start = _extent(graph, _sliced(graph, run[0]))[0]
    stop = _extent(graph, _sliced(graph, run[-1]))[1]
    wide_args = []
    for port, arg in enumerate(first.args):
        vtype = node_of(graph, arg).type.with_shape((stop - start,))
        if _is_slice(node_of(graph, arg)):
            parent = node_of(graph, arg).args[0]
            wide = fresh(graph, f"{parent}[{start}:{stop}]")
            add_node(graph, wide, "slice", [parent], vtype, arg, {"start": start, "stop": stop, "axis": -1})
        else:
            wide = fresh(graph, f"{arg}/joined")
            add_node(graph, wide, "concat", [node_of(graph, n).args[port] for n in run], vtype, arg,
                     {"axis": -1})
        wide_args.append(wide)
    widened = fresh(graph, f"{run[0]}/wide")
    add_node(graph, widened, first.op, wide_args, first.type.with_shape((stop - start,)),
             run[0], first.attrs)
    for node in run:
        begin, end = _extent(graph, _sliced(graph, node))
        change_op(graph, node, "slice", [widened], {"start": begin - start, "stop": end - start, "axis": -1})
