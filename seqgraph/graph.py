"""Checked model → folded graph; folded graph → unrolled graph.

The **folded graph** has one node per value of the checked model. Each node holds one
:class:`~seqgraph.ir.Node` record (read it with :func:`~seqgraph.ir.node_of`): ``op``,
``args`` (input node ids in order), ``type`` (a :class:`~seqgraph.ir.VType`, with ``shape``,
``dtype`` and ``timed``: evaluated once per time step, inside a recurrence), ``time`` (its
time axis), ``layer``, ``span``, ``attrs``, ``name``, ``key`` and ``init``; its ``rule`` (the
gradient rule) comes from the op registry. Edges carry ``ports`` (which argument positions
they feed) and ``delay``: 1 on the edge from a state's value into the ``prev`` node that
reads it at ``t-1``, else 0. Cycles exist only through delay edges.

The **unrolled graph** for ``T`` steps copies every timed node once per step (ids
``node@t``; the records' ``base`` and ``step`` say which node and step); every other node
appears once. A ``prev``
node at step ``t`` reads its state at ``t-1``, or the state's initial value at ``t = 0``. A
``stack`` node gathers all ``T`` copies of its input. The result is acyclic and its size
grows linearly in ``T``; parameters appear once and fan out to every step.
"""

from __future__ import annotations

from dataclasses import replace

import networkx as nx

from .ir import PREV, CheckedModel, Node, nodes_of, set_node


def build_graph(checked: CheckedModel) -> nx.DiGraph:
    """The folded graph of a checked model."""
    graph = nx.DiGraph(name=checked.name)
    for value in checked.values.values():
        set_node(graph, value.id, Node(value.op, value.args, value.type, value.type.time, value.span,
                                       value.attrs, value.layer, value.name, value.key, value.init))
    for value in checked.values.values():
        for port, arg in enumerate(value.args):
            delay = 1 if value.op == PREV and port == 0 else 0
            _add_use(graph, arg, value.id, port, delay=delay)
    return graph


def _add_use(graph: nx.DiGraph, source, target, port: int, **attrs) -> None:
    if graph.has_edge(source, target):
        graph.edges[source, target]["ports"].append(port)
    else:
        graph.add_edge(source, target, ports=[port], **attrs)


def delay_edges(graph: nx.DiGraph) -> list:
    """The edges that carry a value to the next time step."""
    return [(u, v) for u, v, d in graph.edges(data=True) if d.get("delay")]


def step_id(node, step: int) -> str:
    """The id of a timed node's copy at ``step``."""
    return f"{node}@{step}"


def steps_per_axis(graph: nx.DiGraph, steps) -> dict:
    """``steps`` as a dict per time axis: one int serves every axis."""
    axes = {node.time for _, node in nodes_of(graph) if node.time is not None}
    if not isinstance(steps, dict):
        steps = {axis: steps for axis in axes}
    for axis in axes:
        count = steps.get(axis)
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"steps for time axis '{axis}' must be a positive integer, got {count!r}")
    return steps


def unroll(graph: nx.DiGraph, steps) -> nx.DiGraph:
    """The acyclic graph of ``steps`` time steps (see the module docstring). ``steps`` is an
    int, or a dict giving each time axis its own number of steps."""
    steps = steps_per_axis(graph, steps)
    unrolled = nx.DiGraph(name=graph.graph.get("name"), steps=steps)
    timed = {n for n, record in nodes_of(graph) if record.timed}

    def copy_of(node, step):
        return step_id(node, step) if node in timed else node

    for node, record in nodes_of(graph):
        count = steps[record.time] if node in timed else None
        for step in (range(count) if node in timed else [None]):
            new_id = node if step is None else step_id(node, step)
            args = _unrolled_args(record, step, steps, timed, copy_of)
            attrs = {**record.attrs, "t": step} if record.op == "step" else record.attrs
            set_node(unrolled, new_id, replace(record, args=args, attrs=attrs, base=node, step=step))
    for node, record in nodes_of(unrolled):
        for port, arg in enumerate(record.args):
            _add_use(unrolled, arg, node, port)
    return unrolled


def _unrolled_args(record: Node, step, steps, timed, copy_of) -> list:
    op, args = record.op, record.args
    if op == PREV:
        state, initial = args
        return [copy_of(state, step - 1)] if step > 0 else [initial]
    if op == "stack":
        return [copy_of(args[0], t) for t in range(steps[record.time])]
    return [copy_of(arg, step) for arg in args]
