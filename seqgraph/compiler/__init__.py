"""Folded graph → a compiled program: optimisation passes, then a schedule that loops over time.

:func:`compile_program` runs the graph passes of :mod:`seqgraph.passes`, then sorts every
node of the optimised folded graph into one of two kinds:

- the **recurrent core**: nodes on a cycle through a delay edge. Each strongly connected
  group of them becomes a :class:`Scan`, compiled by :class:`~.scan.ScanCode` to its step
  program (:mod:`.step_program`): forward and backward step loops over preallocated buffers,
  which each backend lowers its own way;
- **time-parallel**: every other node. It runs once over all steps at once, on whole
  ``(T, B, ...)`` arrays (ops act on any leading axes): an LSTM's input projection, an
  output layer, a loss, each is one large operation.

The schedule is made once from the folded graph, so compiling does not grow with the number
of steps, and running never walks networkx.
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass, field

import networkx as nx

from ..autodiff import accumulate, accumulate_into, differentiable
from ..ir import FEED_OPS, LEAF_OPS, PREV, Node, identifier, node_of, nodes_of
from ..ops import REGISTRY
from ..ops.elementwise import broadcast_shapes
from ..ops.linalg import index_along
from ..ops.registry import ShapeError
from .. import passes
from ..backends import capabilities, native_loop, ops_for, same_place, shares_memory
from ..ops.kernels import namespace as ufunc_namespace, needs
from .scan import ScanCode


@dataclass
class Step:
    """One node run once: a leaf, a static op, or a time-parallel op over all steps."""
    node: str
    data: Node
    kind: str  # leaf | op | identity | shift
    wanted: tuple = ()
    overwrites: object = None  # an input whose array this op may write its result into


@dataclass
class ScanCache:
    """What a scan keeps from pass to pass: per direction, the reusable buffers of the latest
    shape signature (``(signature, {name: array})``); the loaded loops by key; each packed
    weight's last packing buffer, packed into again."""
    buffers: dict = field(default_factory=dict)
    loops: dict = field(default_factory=dict)
    packing: dict = field(default_factory=dict)


@dataclass
class Scan:
    """A recurrent core, its generated step loops and what it keeps between passes."""
    time: str
    code: ScanCode
    cache: ScanCache = field(default_factory=ScanCache)


@dataclass
class Loaded:
    """A scan loop ready to run: the generated Python ``function``, the ``scratch`` buffers
    and callables it is handed, and its ``native`` loop (None where there is none)."""
    function: object
    scratch: dict
    native: object = None


@dataclass
class Run:
    """What one forward pass leaves for the backward pass."""
    env: dict
    feed: object
    params: dict
    dtype: str
    consumed: dict = field(default_factory=dict)  # arrays a scan wrote over (no longer values)


class Program:
    """The compiled schedule of a model (``graph`` is the optimised folded graph)."""

    def __init__(self, schedule: list, graph: nx.DiGraph, wanted: set, needs_grad: set):
        self.schedule = schedule
        self.graph = graph
        self.wanted = wanted
        self.needs_grad = frozenset(needs_grad)
        self._needs = {}
        self.spent = _spent_after_forward(graph, wanted)
        # found once, so that a pass never walks the graph: the leaves, and per scan the
        # spent values it reads through slices (by the loop names of those slices)
        self.leaves = frozenset(n for n in graph if not node_of(graph, n).args)
        self.spent_inputs = {id(scan): _spent_inputs(graph, scan.code, self.spent)
                             for scan in schedule if isinstance(scan, Scan)}
        # run fused chains as generated kernels: None means where they can be compiled (CuPy,
        # or native loops on NumPy with a C compiler); elsewhere the in-place ufunc lines
        self.fuse_chains = None
        # run a scan's whole loop as one native call where every line of it can be
        # (:mod:`seqgraph.backends.native_loop`); False keeps the Python loops
        self.native_loops = True

    def stats(self) -> dict:
        """Counts that show what running costs: kernel calls in the schedule (a scan's
        counted once per step), scans, scratch buffers, schedule items."""
        scans = [item for item in self.schedule if isinstance(item, Scan)]
        steps = sum(1 for item in self.schedule if isinstance(item, Step) and item.kind != "leaf")
        per_scan = [s.code.stats() for s in scans]
        return {"kernel_calls": steps + sum(s["forward_calls_per_step"] for s in per_scan),
                "scans": len(scans), "step_buffers": sum(s["scratch_buffers"] for s in per_scan),
                "kept_sequences": sum(s["kept"] for s in per_scan),
                "chains": sum(s["chains"] for s in per_scan), "schedule_items": len(self.schedule)}

    # forward
    def forward(self, xp, feed, params: dict, dtype: str) -> Run:
        """Run the schedule; every value stays in ``run.env`` for the backward pass."""
        run = Run({}, feed, params, dtype)
        for item in self.schedule:
            if isinstance(item, Scan):
                self._scan_forward(xp, item, run)
            else:
                run.env[item.node] = self._step_forward(xp, item, run)
        return run

    def _step_forward(self, xp, item: Step, run: Run):
        data, env, feed = item.data, run.env, run.feed
        op = data.op
        if item.kind == "leaf":
            if op in FEED_OPS:
                return feed.arrays[item.node]
            if op == "param":
                return run.params[data.key]
            if op == "const":
                return REGISTRY["const"].forward(xp, dtype=run.dtype, **data.attrs)
            return feed.masks[item.node]
        if item.kind == "identity":
            return env[data.args[0]]
        if item.kind == "shift":
            state, initial = (env[a] for a in data.args)
            return _shift(xp, state, initial)
        inputs = [env[a] for a in data.args]
        if item.overwrites is not None:
            target = env[item.overwrites]
            if _fits(xp, target, inputs):
                return getattr(xp, REGISTRY[op].in_place)(*inputs, out=target)
        return ops_for(xp)[op].forward(xp, *inputs, **data.attrs)

    def _scan_forward(self, xp, scan: Scan, run: Run):
        code, env, feed = scan.code, run.env, run.feed
        steps, batch = feed.steps[scan.time], feed.batch
        arrays = {}
        reused = _reusable(scan, "forward", (steps, batch, run.dtype))
        for node, role, i in code.over_time:
            shape = (batch,) + code.shapes[node]
            kind = run.dtype if code.data[node].dtype == "float" else "int64"
            # buffers nobody outside sees are reused from run to run (no new pages to fault in)
            store = reused if node not in code.exposed else {}
            if role == "M":
                mask = feed.masks[node]
                arrays[f"M{i}"] = mask if mask.ndim else xp.broadcast_to(mask, (steps,) + shape)
            else:
                arrays[f"{role}{i}"] = _buffer(xp, store, f"{role}{i}", (steps + (role == "S"),) + shape, kind)
        for prev, state in code.state_of.items():
            arrays[f"S{code.index[state]}"][0] = env[code.data[prev].args[1]]
        for name, (kind, arg) in code.external().items():
            arrays[name] = env[arg]
        for weight in code.transposed():
            arrays["wt_" + identifier(weight)] = _step_operand(xp, env[weight].T, batch, scan, weight)
        compiled, buffers, chains, _, loop = code.fused_forward() if self._fuses(xp) else \
            (code.forward_code, code.forward_buffers, (), code.forward_source, code.forward_loop)
        loaded = self._loaded(xp, scan, ("forward", batch, run.dtype, bool(chains)), compiled, loop,
                              buffers, lambda: code.forward_functions(xp, run.dtype, loop))
        _call(xp, loaded, steps, arrays)
        for node, role, i in code.over_time:
            env[node] = arrays[f"S{i}"][1:] if role == "S" else arrays[f"{role}{i}"]
        for prev, state in code.state_of.items():
            env[prev] = arrays[f"S{code.index[state]}"][:-1]
        for node in code.kept_views:
            attrs = code.data[node].attrs
            env[node] = env[code.data[node].args[0]][..., attrs["start"]:attrs["stop"]]
        for consumed in code.hosted.values():
            # its array now holds the scan's sums; backward writes their cotangent there
            run.consumed[consumed] = env.pop(consumed)

    def _fuses(self, xp) -> bool:
        if self.fuse_chains is not None:
            return self.fuse_chains
        return capabilities(xp).chain_kernels

    def _loaded(self, xp, scan: Scan, key, compiled, loop, buffers: dict, functions):
        """The generated function for ``key`` (and its native loop, lowered from ``loop``
        where the namespace has one: see :mod:`seqgraph.backends.native_loop`) with its
        scratch buffers and the callables ``functions()`` gives it, made once per key."""
        if key not in scan.cache.loops:
            namespace = ufunc_namespace(xp)
            exec(compiled, namespace)
            function = namespace["scan_backward" if key[0] == "backward" else "scan_forward"]
            batch, dtype = key[1], key[2]
            scratch = {name: xp.empty((batch,) + tuple(int(n) for n in shape), dtype=dtype)
                       for name, (shape, _) in buffers.items()}
            runner = native_loop.compile_loop(loop, xp) if self.native_loops else None
            scan.cache.loops[key] = Loaded(function, {**scratch, **functions()}, runner)
        return scan.cache.loops[key]

    # backward
    def backward(self, xp, run: Run, seeds: dict, wrt=None) -> dict:
        """Cotangents of every node on a path from the seeds to ``wrt`` (leaf nodes; default
        every parameter and float input), by node id."""
        needs = self.needs_grad if wrt is None else self._needs_for(frozenset(wrt))
        grads = {node: value for node, value in seeds.items()}
        self._owned = {}
        for item in reversed(self.schedule):
            if isinstance(item, Scan):
                self._scan_backward(xp, item, run, grads, needs)
            elif item.kind != "leaf" and grads.get(item.node) is not None:
                self._step_backward(xp, item, run, grads, needs)
        for total, _, _ in list(self._owned.values()):
            self._finish(xp, total)
        self._owned = {}  # held only during the pass: a gradient must not outlive its caller's use
        return grads

    def _needs_for(self, wrt: frozenset) -> frozenset:
        """The nodes a gradient flows through on its way to the leaves ``wrt``."""
        if wrt not in self._needs:
            reach = set(wrt).union(*(nx.descendants(self.graph, n) for n in wrt if n in self.graph))
            self._needs[wrt] = self.needs_grad & reach
        return self._needs[wrt]

    def _step_backward(self, xp, item: Step, run: Run, grads: dict, needs: frozenset):
        data, env = item.data, run.env
        g = grads[item.node]
        self._finish(xp, g)
        args = data.args
        if item.kind == "identity":
            contributions = (g,)
        elif item.kind == "shift":
            contributions = (_unshift(xp, g), g[0])
        elif not any(w and a in needs for w, a in zip(item.wanted, args)):
            return
        elif data.op == "slice":
            self._place(xp, grads, args[0], env[args[0]], g, data.attrs)
            return
        else:
            wanted = tuple(w and a in needs for w, a in zip(item.wanted, args))
            contributions = ops_for(xp)[data.op].partial_vjp(  # a consumed value is gone: no rule reads it
                xp, g, env.get(item.node), *[env[a] for a in args], wanted=wanted, **data.attrs)
        for arg, part in zip(args, contributions):
            if part is not None and arg in needs:
                grads[arg] = accumulate(grads.get(arg), part)

    def _place(self, xp, grads: dict, parent, value, g, attrs: dict) -> None:
        """Add a slice's cotangent into its input's, in place: the slices of one projection (a
        GRU's gates) share one gradient buffer instead of a zero-filled copy each. A spent
        value's own array holds the gradient; there each slice's first cotangent is written,
        not added (and left where it lies when a scan already wrote it there), and what no
        slice wrote is zeroed before the gradient is read (:meth:`_finish`)."""
        axis, span = attrs.get("axis", -1), (attrs["start"], attrs["stop"])
        total = grads.get(parent)
        if total is None and parent in self.spent and value.dtype == g.dtype:
            total = grads[parent] = value  # nothing reads this value any more
            self._owned[id(total)] = (total, axis, [])
        elif total is None or id(total) not in self._owned:
            placed = xp.zeros(value.shape, dtype=g.dtype)
            if total is not None:
                accumulate_into(placed, total)
            total = grads[parent] = placed
            self._owned[id(total)] = (total, axis, None)  # held, so the id is not reused in this pass
        _, along, written = self._owned[id(total)]
        target = total[index_along(axis, slice(*span))]
        if written is not None and along == axis and not any(a < span[1] and span[0] < b for a, b in written):
            written.append(span)
            if not same_place(xp, target, g):
                xp.copyto(target, g)
            return
        self._finish(xp, total)
        accumulate_into(target, g)

    def _finish(self, xp, gradient) -> None:
        """Zero what no slice wrote of a spent value's array that holds its gradient; from
        then on slices add into it."""
        owned = self._owned.get(id(gradient))
        if owned is None or owned[2] is None:
            return
        total, axis, written = owned
        edges = [0] + [x for span in sorted(written) for x in span] + [total.shape[axis]]
        for start, stop in zip(edges[::2], edges[1::2]):
            if stop > start:
                total[index_along(axis, slice(start, stop))].fill(0)
        self._owned[id(total)] = (total, axis, None)

    def _scan_backward(self, xp, scan: Scan, run: Run, grads: dict, needs: frozenset):
        code, env = scan.code, run.env
        outside = {n: grads.pop(n) for n in code.order if grads.get(n) is not None}
        seeded = frozenset(n for n in outside if n in needs)
        layout, compiled, _, buffers, chains, loop = code.backward_code(seeded, needs, self._fuses(xp))
        if not layout.active:
            return
        steps, batch = run.feed.steps[scan.time], run.feed.batch
        arrays = {}
        reused = _reusable(scan, "backward", (steps, batch, run.dtype))
        spare = [env[parent] for parent, names in self.spent_inputs[id(scan)].items()
                 if parent in env and not any(name in loop.buffers for name in names)]
        for node, i, roles in layout.arrays:
            shape = (batch,) + code.shapes[node]
            if "S" in roles:
                arrays[f"S{i}"] = env[node].base if env[node].base is not None else env[node]
            if "K" in roles and f"K{i}" not in arrays and node in env:
                arrays[f"K{i}"] = env[node]
            if "M" in roles:
                arrays[f"M{i}"] = env[node]
            if "C" in roles:
                arrays[f"C{i}"] = _buffer(xp, reused, f"C{i}", shape, run.dtype)
            if "G" in roles:
                fitting = [a for a in [run.consumed.get(code.hosted.get(node))] + spare
                           if _fits_exactly(a, (steps,) + shape, run.dtype)]
                spare = [a for a in spare if not fitting or a is not fitting[0]]
                arrays[f"G{i}"] = fitting[0] if fitting else _buffer(xp, reused, f"G{i}", (steps,) + shape, run.dtype)
            if "O" in roles:
                arrays[f"O{i}"] = outside[node]
        values = ChainMap(env, run.consumed)  # a consumed value is read for its shape only
        packed = code.product_weights()
        for name, (kind, arg) in code.external().items():
            value = values[arg]
            if arg in packed:
                arrays[name] = _step_operand(xp, value, batch, scan, arg)
            else:  # a weight slice (W[:, X:] after a split) made contiguous once, not by every product
                arrays[name] = xp.ascontiguousarray(value) if kind == "static" and value.ndim > 1 else value
        key = ("backward", batch, run.dtype, seeded, needs, bool(chains))
        loaded = self._loaded(xp, scan, key, compiled, loop, buffers,
                              lambda: code.backward_functions(xp, layout, loop))
        _call(xp, loaded, steps, arrays)
        for prev, state in code.state_of.items():
            initial = code.data[prev].args[1]
            if prev in layout.active and initial in needs:
                grads[initial] = accumulate(grads.get(initial), arrays[f"C{code.index[prev]}"].copy())
        for node, ports in layout.deferred.items():
            self._deferred(xp, code, layout, node, ports, arrays, values, grads)
        for node, value in grads.items():
            # a cotangent may still be a reused buffer; what a caller gets must be its own
            if node in self.leaves and shares_memory(xp, value, reused.values()):
                grads[node] = value.copy()

    def _deferred(self, xp, code, layout, node, ports, arrays, env, grads):
        """The contributions of one core node to inputs from outside the core, over all steps
        at once (a weight gradient is one large product)."""
        data = code.data[node]
        root, region = layout.root[node], layout.region[node]
        g = arrays[f"G{code.index[root]}"]
        if region is not None:
            g = g[..., region[0]:region[1]]
        wanted = [k in ports for k in range(len(data.args))]
        parts = ops_for(xp)[data.op].partial_vjp(xp, g, env.get(node), *[env.get(a) for a in data.args],
                                                 wanted=wanted, **data.attrs)
        for port in ports:
            arg = data.args[port]
            grads[arg] = accumulate(grads.get(arg), parts[port])


def _reusable(scan: Scan, direction: str, signature) -> dict:
    """The buffers kept for ``direction`` of ``scan`` at this shape signature (only the
    latest signature's are kept, so a changing length does not pile up memory)."""
    kept = scan.cache.buffers.get(direction)
    if kept is None or kept[0] != signature:
        kept = scan.cache.buffers[direction] = (signature, {})
    return kept[1]


def _buffer(xp, store: dict, name: str, shape: tuple, dtype):
    if name not in store:
        store[name] = xp.empty(shape, dtype=dtype)
    return store[name]


def _step_operand(xp, weight, rows: int, scan: Scan, name):
    """A weight that every step multiplies ``rows`` rows by: packed once where the namespace
    can (MKL), else a contiguous copy (a per-step product with a strided view runs far slower).
    A pass packs weight ``name`` into the buffer of the scan's last packing of it, forward
    or backward: that one is done with, and a fresh buffer would be faulted in page by page."""
    if not capabilities(xp).packed_products:
        return xp.ascontiguousarray(weight)
    buffers = scan.cache.packing
    packed = xp.pack(weight, rows, buffers.get(name))
    buffers[name] = getattr(packed, "buffer", None)
    return packed


def _spent_inputs(graph: nx.DiGraph, code: ScanCode, spent: frozenset) -> dict:
    """``{spent value: [loop names of its slices]}`` for the spent values (see
    :func:`_spent_after_forward`) a scan reads through slices. Where its backward loop reads
    none of those slices, the value's array may hold one of the loop's cotangents over time:
    a GRU's 3H-wide one so lives in its input projection, whose own gradient later takes its
    place column by column (:meth:`Program._place`)."""
    found = {}
    for name, (kind, arg) in code.external().items():
        data = node_of(graph, arg)
        if kind == "seq" and data.op == "slice" and data.args[0] in spent:
            found.setdefault(data.args[0], []).append(name)
    return found


def _fits_exactly(array, shape: tuple, dtype) -> bool:
    """Whether ``array`` is a writable C-ordered array of this shape and dtype."""
    return (array is not None and tuple(array.shape) == shape and array.dtype == dtype
            and array.flags.c_contiguous and array.flags.writeable)


def _call(xp, loaded: "Loaded", steps: int, arrays: dict):
    """Run a loaded loop over ``steps`` on ``arrays`` and its own scratch: natively where it
    has a native loop that takes them, else the generated Python."""
    arrays = {**arrays, **loaded.scratch}
    if loaded.native is not None and loaded.native.run(steps, arrays):
        return
    function = loaded.function
    names = function.__code__.co_varnames[1:function.__code__.co_argcount]
    if not capabilities(xp).float_errors:
        function(steps, *[arrays[n] for n in names])
        return
    with xp.errstate(over="ignore", under="ignore"):
        function(steps, *[arrays[n] for n in names])


def _shift(xp, sequence, initial):
    """``out[0] = initial``, ``out[t] = sequence[t-1]``: a state read at t-1, for all t at once."""
    return xp.concatenate([xp.broadcast_to(initial, sequence.shape[1:])[None], sequence[:-1]])


def _unshift(xp, g):
    """The gradient of :func:`_shift` with respect to the sequence."""
    return xp.concatenate([g[1:], xp.zeros_like(g[:1])])


def gradient_sources(graph: nx.DiGraph, checked) -> set:
    """Every float node a gradient may be asked of, and every node on a path from one."""
    sources = set(checked.params.values())
    sources |= {n for n in {**checked.inputs, **checked.targets}.values() if node_of(graph, n).dtype == "float"}
    sources = {n for n in sources if n in graph}
    reach = sources.union(*(nx.descendants(graph, s) for s in sources)) if sources else set()
    return {n for n in reach if node_of(graph, n).dtype == "float"}


def compile_program(graph: nx.DiGraph, checked, graph_passes=None) -> Program:
    """Optimise the folded ``graph`` (with ``graph_passes``, default the whole pipeline), then
    schedule it: leaves, static and time-parallel ops, and compiled scans."""
    wanted = set(checked.outputs.values()) | set(checked.final_states.values())
    graph = passes.optimize(graph, wanted, graph_passes)
    needs_grad = gradient_sources(graph, checked)
    components = list(nx.strongly_connected_components(graph))
    condensed = nx.condensation(graph, components)
    schedule = []
    for group in nx.topological_sort(condensed):
        members = condensed.nodes[group]["members"]
        if len(members) > 1:
            schedule.append(_make_scan(graph, members, needs_grad, wanted))
        else:
            (node,) = members
            schedule.append(_make_step(graph, node, needs_grad, wanted))
    return Program(schedule, graph, wanted, needs_grad)


def _make_step(graph: nx.DiGraph, node, needs_grad: set, keep: set) -> Step:
    data = node_of(graph, node)
    op = data.op
    if op in LEAF_OPS or op in ("const", "dropout_mask", "training_flag"):
        return Step(node, data, "leaf")
    if op in ("step", "stack") and (op == "stack" or data.timed):
        return Step(node, data, "identity")
    if op == PREV:
        return Step(node, data, "shift")
    wanted = tuple(arg in needs_grad and differentiable(graph, node, port)
                   for port, arg in enumerate(data.args))
    return Step(node, data, "op", wanted, _overwritable_input(graph, node, keep))


def _fresh(op: str) -> bool:
    """Whether ``op`` always makes a new array of its own (never a view of another value);
    graph nodes that are not registered ops (parameters, inputs, states) do not."""
    return op in REGISTRY and REGISTRY[op].fresh


def _overwritable_input(graph: nx.DiGraph, node, keep: set):
    """An input of an elementwise ``node`` that dies there and that no gradient reads, so the
    op can write its (same-sized) result over it instead of allocating: the bias added to a
    time-parallel product is added in place."""
    data = node_of(graph, node)
    op = data.op
    if REGISTRY[op].in_place is None or not (data.shape or data.type.batched):
        return None  # an op of 0-d arrays gives a NumPy scalar, no array to write into
    arity = len(data.args)
    read_here = {r for port in range(arity) for r in needs(op, port, arity, data.attrs) if r != "out"}
    for port, arg in enumerate(data.args):
        source = node_of(graph, arg)
        producer_reads = {r for p in range(len(source.args))
                          for r in needs(source.op, p, len(source.args), source.attrs)}
        if (_fresh(source.op) and arg not in keep and port not in read_here
                and "out" not in producer_reads and list(graph.successors(arg)) == [node]
                and data.args.count(arg) == 1 and not _recurrent(graph, arg)):
            return arg
    return None


def _spent_after_forward(graph: nx.DiGraph, keep: set) -> frozenset:
    """Time-parallel values whose arrays are free once the forward pass is over: a new array of
    their own that no gradient rule reads, read only through slices (of slices) whose readers'
    rules do not read them either (:func:`_unread_slice`). The backward pass adds the slices'
    gradients into such an array (a GRU's input projection holds its own gradient) instead of
    a new one."""
    spent = set()
    for node, data in nodes_of(graph):
        if (not _fresh(data.op) or node in keep or not list(graph.successors(node))
                or _recurrent(graph, node) or _reads(graph, node, node)):
            continue
        if all(_unread_slice(graph, s, keep) for s in graph.successors(node)):
            spent.add(node)
    return frozenset(spent)


def _unread_slice(graph: nx.DiGraph, node, keep: set) -> bool:
    """Whether ``node`` is a slice nobody keeps and no gradient rule reads, and so is every
    slice of it (a slice is a view: a rule reading a slice of a slice reads the sliced value's
    array, as a dense layer on a slice of a merged product does)."""
    return (node_of(graph, node).op == "slice" and node not in keep
            and not any(_reads(graph, r, node) for r in graph.successors(node))
            and all(node_of(graph, r).op != "slice" or _unread_slice(graph, r, keep)
                    for r in graph.successors(node)))


def _reads(graph: nx.DiGraph, reader, value) -> bool:
    """Whether ``reader``'s gradient rule reads ``value`` (its output, or one of its inputs)."""
    data = node_of(graph, reader)
    arity = len(data.args)
    read = {r for port in range(arity) for r in needs(data.op, port, arity, data.attrs)}
    if reader == value:
        return "out" in read
    return any(data.args[index] == value for index in read if index != "out")


def _recurrent(graph: nx.DiGraph, node) -> bool:
    return any(nx.has_path(graph, s, node) for s in graph.successors(node))


def _fits(xp, target, inputs) -> bool:
    """Whether ``target`` can hold the result of a broadcasting op on ``inputs`` (an array:
    arithmetic on 0-d arrays gives NumPy scalars, which cannot be written into)."""
    if not isinstance(target, xp.ndarray):
        return False
    shape = ()
    for x in inputs:
        try:
            shape = broadcast_shapes(shape, x.shape)
        except ShapeError:
            return False
    return tuple(shape) == target.shape and all(x.dtype == target.dtype for x in inputs)


def _make_scan(graph: nx.DiGraph, members: set, needs_grad: set, wanted: set) -> Scan:
    inner = graph.subgraph(members).copy()
    inner.remove_edges_from([(u, v) for u, v, d in inner.edges(data=True) if d.get("delay")])
    order = list(nx.lexicographical_topological_sort(inner, key=str))
    code = ScanCode(graph, order, needs_grad, wanted, _consumed_inputs(graph, members, wanted))
    return Scan(code.time, code)


def _consumed_inputs(graph: nx.DiGraph, members: set, keep: set) -> set:
    """Time-parallel inputs of a recurrent core that one core ``add`` alone reads, as a new
    array of their own that no gradient rule reads and nobody keeps: the LSTM's input
    projection. The scan may write that add's result over them row by row (the recurrent
    product is accumulated into the projection) and, backward, the add's cotangent, which is
    also theirs: no buffer of the scan's own holds either."""
    found = set()
    for node in members:
        data = node_of(graph, node)
        if data.op != "add":
            continue
        for arg in data.args:
            source = node_of(graph, arg)
            if (arg not in members and source.timed and _fresh(source.op) and arg not in keep
                    and source.dtype == "float" and tuple(source.shape) == tuple(data.shape)
                    and list(graph.successors(arg)) == [node] and data.args.count(arg) == 1
                    and not _reads(graph, node, arg) and not _reads(graph, arg, arg)):
                found.add(arg)
    return found


__all__ = ["Program", "Run", "Scan", "Step", "compile_program"]
