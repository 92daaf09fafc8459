"""Folded graph → a compiled program: a flat schedule of kernel calls that loops over time.

Every per-step (``timed``) node of the folded graph is one of two kinds:

- the **recurrent core**: nodes on a cycle through a delay edge. Each strongly connected
  group of them becomes a :class:`Scan`: a forward loop over ``t`` that writes each node's
  value into a ``(T, B, ...)`` buffer, and a backward loop in reverse;
- **time-parallel**: every other per-step node. It runs once over all steps at once, on
  whole ``(T, B, ...)`` arrays (ops act on any leading axes), e.g. an LSTM's input
  projection or an output layer.

Nodes that are not per-step run once, as they are. The schedule is made once from the
folded graph, so compiling does not grow with the number of steps, and running never walks
networkx. Conceptually (for one scan)::

    for t in range(T):                      # forward
        for node in core:                   # in dependency order
            buffer[node][t] = op(inputs at t; a prev node reads buffer[state][t-1])
    for t in reversed(range(T)):            # backward
        for node in reversed(core):
            contributions = vjp(node, cotangent[node][t]) → inputs at t, states at t-1
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx

from .autodiff import accumulate, local_vjp
from .ir import PREV
from .ops import REGISTRY

FEED_OPS = ("input", "lengths", "state_init")


@dataclass
class Step:
    """One node run once: a leaf, a static op, or a time-parallel op over all steps."""
    node: str
    data: dict
    kind: str  # leaf | op | identity | shift


@dataclass
class Scan:
    """A recurrent core: ``order`` runs at every step; ``fetch`` says where each input comes from."""
    time: str
    order: list
    data: dict
    fetch: dict = field(default_factory=dict)
    outer_prev: list = field(default_factory=list)


@dataclass
class Run:
    """What one forward pass leaves for the backward pass."""
    env: dict
    feed: object
    params: dict
    dtype: str


class Program:
    """The compiled schedule of a model."""

    def __init__(self, schedule: list, graph: nx.DiGraph, wanted: set):
        self.schedule = schedule
        self.graph = graph
        self.wanted = wanted

    def stats(self) -> dict:
        """Counts that show what running costs: kernel calls in the schedule, scans, buffers."""
        scans = [item for item in self.schedule if isinstance(item, Scan)]
        kernels = sum(len(s.order) for s in scans) + sum(
            1 for item in self.schedule if isinstance(item, Step) and item.kind != "leaf")
        return {"kernel_calls": kernels, "scans": len(scans),
                "step_buffers": sum(len(s.order) for s in scans), "schedule_items": len(self.schedule)}

    # forward
    def forward(self, xp, feed, params: dict, dtype: str) -> Run:
        """Run the schedule; every value stays in ``run.env`` for the backward pass."""
        env: dict = {}
        for item in self.schedule:
            if isinstance(item, Scan):
                self._scan_forward(xp, item, env, feed)
            else:
                env[item.node] = self._step_forward(xp, item, env, feed, params, dtype)
        return Run(env, feed, params, dtype)

    def _step_forward(self, xp, item: Step, env, feed, params, dtype):
        data = item.data
        op = data["op"]
        if item.kind == "leaf":
            if op in FEED_OPS:
                return feed.arrays[item.node]
            if op == "param":
                return params[data["key"]]
            if op == "const":
                return REGISTRY["const"].forward(xp, dtype=dtype, **data["attrs"])
            return feed.masks[item.node]
        if item.kind == "identity":
            return env[data["args"][0]]
        if item.kind == "shift":
            state, initial = (env[a] for a in data["args"])
            return _shift(xp, state, initial)
        return REGISTRY[op].forward(xp, *[env[a] for a in data["args"]], **data["attrs"])

    def _scan_forward(self, xp, scan: Scan, env, feed):
        steps = feed.steps[scan.time]
        buffers = {}
        for node in scan.order:
            buffers[node] = None
        for t in range(steps):
            for node in scan.order:
                data = scan.data[node]
                inputs = [_fetch(source, t, env, buffers) for source in scan.fetch[node]]
                if data["op"] == PREV:
                    value = inputs[0]
                elif data["op"] == "dropout_mask":
                    value = feed.masks[node][t]
                else:
                    value = REGISTRY[data["op"]].forward(xp, *inputs, **data["attrs"])
                if buffers[node] is None:
                    buffers[node] = xp.empty((steps,) + value.shape, dtype=value.dtype)
                buffers[node][t] = value
        env.update(buffers)
        for node in scan.outer_prev:
            state, initial = scan.data[node]["args"]
            env[node] = _shift(xp, env[state], env[initial])

    # backward
    def backward(self, xp, run: Run, seeds: dict) -> dict:
        """Cotangents of every node on a path from the seeds, by node id."""
        grads = {node: value for node, value in seeds.items()}
        for item in reversed(self.schedule):
            if isinstance(item, Scan):
                self._scan_backward(xp, item, run, grads)
            elif item.kind != "leaf" and grads.get(item.node) is not None:
                self._step_backward(xp, item, run, grads)
        return grads

    def _step_backward(self, xp, item: Step, run: Run, grads: dict):
        data, env = item.data, run.env
        g = grads[item.node]
        args = data["args"]
        if item.kind == "identity":
            contributions = (g,)
        elif item.kind == "shift":
            contributions = (_unshift(xp, g), g[0])
        else:
            contributions = local_vjp(xp, data, g, env[item.node], [env[a] for a in args])
        self._route(args, contributions, grads, data)

    def _route(self, args, contributions, grads: dict, data):
        for port, (arg, part) in enumerate(zip(args, contributions)):
            if part is not None and self.graph.nodes[arg]["dtype"] == "float":
                grads[arg] = accumulate(grads.get(arg), part)

    def _scan_backward(self, xp, scan: Scan, run: Run, grads: dict):
        env = run.env
        steps = run.feed.steps[scan.time]
        cot = {}
        for node in scan.order:
            outside = grads.pop(node, None)
            cot[node] = xp.zeros_like(env[node]) if outside is None else outside.copy()
        for node in scan.outer_prev:
            outside = grads.pop(node, None)
            if outside is not None:
                state, initial = scan.data[node]["args"]
                cot[state][:-1] += outside[1:]
                grads[initial] = accumulate(grads.get(initial), outside[0])
        outer = {}
        for t in reversed(range(steps)):
            for node in reversed(scan.order):
                data = scan.data[node]
                g = cot[node][t]
                sources = scan.fetch[node]
                if data["op"] == PREV:
                    contributions = (g,)
                else:
                    inputs = [_fetch(source, t, env, env) for source in sources]
                    contributions = local_vjp(xp, data, g, env[node][t], inputs)
                for source, part in zip(sources, contributions):
                    if part is not None:
                        self._route_step(xp, source, part, t, cot, outer, grads, env)
        for node, value in outer.items():
            grads[node] = accumulate(grads.get(node), value)

    def _route_step(self, xp, source, part, t, cot, outer, grads, env):
        kind, node = source[0], source[1]
        if self.graph.nodes[node]["dtype"] != "float":
            return
        if kind == "core":
            cot[node][t] += part
        elif kind == "prev":
            state, initial = source[1], source[2]
            if t > 0:
                cot[state][t - 1] += part
            else:
                grads[initial] = accumulate(grads.get(initial), part)
        elif kind == "seq":
            if node not in outer:
                outer[node] = xp.zeros_like(env[node])
            outer[node][t] += part
        else:
            grads[node] = accumulate(grads.get(node), part)


def _fetch(source, t, env, buffers):
    kind = source[0]
    if kind == "core":
        return buffers[source[1]][t]
    if kind == "prev":
        _, state, initial = source
        return env[initial] if t == 0 else buffers[state][t - 1]
    if kind == "seq":
        return env[source[1]][t]
    return env[source[1]]


def _shift(xp, sequence, initial):
    """``out[0] = initial``, ``out[t] = sequence[t-1]``: a state read at t-1, for all t at once."""
    return xp.concatenate([xp.broadcast_to(initial, sequence.shape[1:])[None], sequence[:-1]])


def _unshift(xp, g):
    """The gradient of :func:`_shift` with respect to the sequence."""
    return xp.concatenate([g[1:], xp.zeros_like(g[:1])])


def compile_program(graph: nx.DiGraph, checked) -> Program:
    """Schedule the folded ``graph``: leaves, static and time-parallel ops, and scans."""
    wanted = set(checked.outputs.values()) | set(checked.final_states.values())
    needed = set(wanted).union(*(nx.ancestors(graph, n) for n in wanted)) if wanted else set()
    components = list(nx.strongly_connected_components(graph))
    core_of = {}
    for index, component in enumerate(components):
        if len(component) > 1:
            for node in component:
                core_of[node] = index
    condensed = nx.condensation(graph, components)
    schedule = []
    for group in nx.topological_sort(condensed):
        members = condensed.nodes[group]["members"] & needed
        if not members:
            continue
        if len(condensed.nodes[group]["members"]) > 1:
            schedule.append(_make_scan(graph, members, core_of))
        else:
            (node,) = members
            schedule.append(_make_step(graph, node))
    return Program(schedule, graph, wanted)


def _make_step(graph: nx.DiGraph, node) -> Step:
    data = graph.nodes[node]
    op = data["op"]
    if op in FEED_OPS or op in ("param", "const", "dropout_mask"):
        return Step(node, data, "leaf")
    if op in ("step", "stack") and (op == "stack" or data["timed"]):
        return Step(node, data, "identity")
    if op == PREV:
        return Step(node, data, "shift")
    return Step(node, data, "op")


def _make_scan(graph: nx.DiGraph, members: set, core_of: dict) -> Scan:
    inner = graph.subgraph(members).copy()
    inner.remove_edges_from([(u, v) for u, v, d in inner.edges(data=True) if d.get("delay")])
    order = list(nx.topological_sort(inner))
    time = graph.nodes[order[0]]["time"]
    scan = Scan(time, order, {n: graph.nodes[n] for n in order})
    for node in order:
        scan.fetch[node] = [_source(graph, arg, members) for arg in graph.nodes[node]["args"]]
        if graph.nodes[node]["op"] == PREV:
            state, initial = graph.nodes[node]["args"]
            scan.fetch[node] = [("prev", state, initial)]
    scan.outer_prev = [n for n in order if graph.nodes[n]["op"] == PREV and
                       any(s not in members for s in graph.successors(n))]
    return scan


def _source(graph: nx.DiGraph, arg, members: set) -> tuple:
    """Where a core node's input comes from at step t."""
    data = graph.nodes[arg]
    if arg in members:
        if data["op"] == PREV:
            return ("core", arg)
        return ("core", arg)
    if data["timed"]:
        return ("seq", arg)
    return ("static", arg)
