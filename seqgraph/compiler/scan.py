"""One recurrent core, compiled to its step program: a forward and a backward step loop.

Each loop is a :class:`~seqgraph.step_program.Loop` of typed instructions, in-place
ufunc calls and matrix products into buffers allocated before the loop, so a step never
walks networkx, never looks an op up in the registry and never allocates. Each backend
lowers the loops its own way (generated Python for NumPy and CuPy, a native tape). For the
core's nodes in step order ``n_0 .. n_k``::

    for t in range(T):                      # forward
        v_i = op_i(inputs at t; a prev node reads its state's buffer at t-1)
    for t in reversed(range(T)):            # backward
        g_i = cotangent of n_i at t (from outside, from consumers at t, from t+1 for states)
        add each in-core input's contribution g_i * d n_i / d input
    after the loop: the contributions to every input from outside the core (weights,
    biases, input projections) as one vjp over all steps at once: a weight gradient is one
    product of (T*B, m) by (T*B, n) arrays, not T small ones.

Where each value lives:

- a **state** ``s`` has a ``(T+1, B, ...)`` buffer ``S``: ``S[0]`` holds the initial value,
  ``S[t+1]`` the value at step ``t``, so ``s[t-1]`` is ``S[t]`` and no copy shifts it;
- a value the backward loop reads, or that is read outside the core, is **kept**: a
  ``(T, B, ...)`` buffer written row by row; every other value lives in a ``(B, ...)``
  **scratch** buffer that is reused every step, and scratch values that are never alive at
  the same time share one buffer (:func:`seqgraph.passes.buffers.share_buffers`);
- a ``slice`` is a view of its input, never a copy; its cotangent is a view of its input's;
- a cotangent that an ``add`` only passes on shares its consumer's buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial

import networkx as nx

from ..autodiff import differentiable
from ..backends import ops_for
from ..backends.chains import ChainKernel
from ..ir import PREV, identifier, node_of
from ..passes.buffers import share_buffers
from ..passes.fusion import backward_chain, fuse_elementwise
from ..ops.kernels import KERNELS, Call, needs, node_kernel
from ..step_program import Buffer, Instruction, Loop, StepProgram, View, ordered_views, python_source, ufunc



@dataclass
class Layout:
    """Where one backward pass keeps each cotangent (see :class:`ScanCode`); ``arrays`` lists
    ``(node, index, roles)`` for each node the loop is handed an array for, each role a
    letter of its name: S its state's steps, K its kept values, M its mask, C its carried
    cotangent, G its cotangent over all steps, O the cotangent from outside."""
    active: set
    root: dict
    region: dict
    full: set
    deferred: dict
    inits: dict
    contributions: dict = field(default_factory=dict)
    arrays: list = field(default_factory=list)


class ScanCode:
    """A recurrent core compiled to a forward loop and (per set of outside cotangents) a
    backward loop. ``order`` lists the core's nodes in step order."""

    def __init__(self, graph: nx.DiGraph, order: list, needs_grad: set, wanted: set, consumed=frozenset()):
        self.graph = graph
        self.order = order
        self.members = set(order)
        self.index = {n: i for i, n in enumerate(order)}
        self.data = {n: node_of(graph, n) for n in order}
        self.time = self.data[order[0]].time
        self.needs_grad = needs_grad
        self.state_of = {n: self.data[n].args[0] for n in order if self.data[n].op == PREV}
        self.prev_of = {s: p for p, s in self.state_of.items()}
        self.consumers = {n: [(c, k) for c in graph.successors(n)
                              if c in self.members and self.data[c].op != PREV
                              for k, a in enumerate(self.data[c].args) if a == n]
                          for n in order}
        self.outside = {n for n in order if any(s not in self.members for s in graph.successors(n))}
        self.chains = fuse_elementwise(graph, order)
        self.views = {n for n in order if self.data[n].op == "slice"
                      and self.data[n].args[0] in self.members
                      and self.data[self.data[n].args[0]].op not in ("slice", PREV)
                      and n not in self.prev_of}
        self.masks = {n for n in order if self.data[n].op == "dropout_mask"}
        self.kept = self._kept(wanted)
        self.recomputed = self._recomputed(wanted)
        self.kept -= self.recomputed
        # an add of a product and a time-parallel input the scan may overwrite (see
        # compiler._consumed_inputs): its value lives in that input's row, its cotangent in
        # that input's array
        self.hosted = {n: a for n in order if self.data[n].op == "add" and n not in self.kept
                       and n not in wanted for a in self.data[n].args if a in consumed}
        # a slice the backward loop reads whose input is not kept gets its own copy over time,
        # so a GRU keeps the H columns it reads rather than the whole 3H pre-activation
        self.copied = {n for n in self.kept & self.views if self.data[n].args[0] not in self.kept}
        self.views -= self.copied
        self.sliced = self.views | self.copied  # slices whose cotangent is a view of their input's
        self.exposed = self._exposed(wanted)
        self.kept_views = [n for n in order if n in self.views and n in self.kept]  # read through their input
        # what every pass hands the loops, found once: a pass must not walk the graph
        self.shapes = {n: tuple(int(size) for size in self.data[n].shape) for n in order}
        self.over_time = [(n, "S" if n in self.prev_of else "M" if n in self.masks else "K", self.index[n])
                          for n in order if n in self.prev_of or n in self.masks or (
                              n in self.kept and n not in self.state_of and n not in self.views)]
        self._external = self._find_external()
        self._transposed = self._find_transposed()
        self._product_weights = self._find_product_weights()
        self._arrays = self._find_arrays()
        self.forward_source, self.forward_buffers, self.forward_loop = self._forward_source()
        self.forward_code = compile(self.forward_source, f"<scan {order[0]} forward>", "exec")
        self._backward = {}
        self._fused = None
        self._chain_kernels = {}

    # -- what is where ------------------------------------------------------------------

    def source(self, arg) -> str:
        """``core``, ``seq`` (a time-parallel per-step value: row t) or ``static``."""
        if arg in self.members:
            return "core"
        return "seq" if node_of(self.graph, arg).timed else "static"

    def _kept(self, wanted: set) -> set:
        kept = set(self.prev_of) | set(self.state_of) | (self.outside | (wanted & self.members))
        for node, port, _ in self._gradient_ports():
            kept |= self._gradient_reads(node, port)
        return (kept & self.members) - set(self.masks)

    def _gradient_ports(self):
        """``(node, port, arg)`` for each input of a core op that a gradient flows into."""
        for node in self.order:
            data = self.data[node]
            if data.op != PREV:
                for port, arg in enumerate(data.args):
                    if node_of(self.graph, arg).dtype == "float" and differentiable(self.graph, node, port):
                        yield node, port, arg

    def _gradient_reads(self, node, port: int) -> set:
        """The values the gradient into input ``port`` of ``node`` reads: what its rule needs
        (:func:`seqgraph.ops.kernels.needs`), except where the loop calls the op's vjp in
        place of its kernel (an input of the core that the op broadcasts, whose gradient
        must be summed back): that call is handed every input and the output."""
        data = self.data[node]
        arg = data.args[port]
        if (data.op in KERNELS and arg in self.members
                and tuple(node_of(self.graph, arg).shape) != tuple(data.shape)):
            return set(data.args) | {node}
        return {node if r == "out" else data.args[r] for r in needs(data.op, port, len(data.args), data.attrs)}

    def _recomputed(self, wanted: set) -> set:
        """Values only gradient rules read that the backward loop recomputes instead of the
        forward keeping them: one elementwise op of values that stay stored (an LSTM's
        ``tanh(c)`` from ``c``, a GRU's ``1 - z`` from ``z``). Keeping one is a ``(T, B, ...)``
        array written forward and read backward; recomputing it is one op a step, or none
        where a fused chain's backward formula recomputes it anyway."""
        found, read_after_loop = set(), self._read_after_loop()
        for node in self.order:
            data = self.data[node]
            if (node not in self.kept or data.op not in KERNELS or node in self.prev_of or node in self.outside
                    or node in self.state_of or node in wanted or node in self.views or node in self.masks
                    or node in read_after_loop):
                continue
            if all(self.source(a) == "static" or self._stored_after(a, found) for a in data.args):
                found.add(node)
        return found

    def _read_after_loop(self) -> set:
        """The core values that gradients into inputs from outside the core read: those run
        once over all steps after the loop (:attr:`Layout.deferred`), so they need each value
        at every step (a weight's gradient reads what it multiplied), not one step's."""
        found = set()
        for node, port, arg in self._gradient_ports():
            if arg not in self.members:
                found |= self._gradient_reads(node, port)
        return found & self.members

    def _stored_after(self, node, dropped: set) -> bool:
        """Whether ``node`` stays stored for backward (:meth:`_stored`) once ``dropped`` are
        not kept."""
        base = node
        while base in self.views:
            base = self.data[base].args[0]
        return base not in dropped and self._stored(node)

    def _exposed(self, wanted: set) -> set:
        """Nodes whose buffer a caller may hold: wanted, or shown through an identity."""
        shown = {n for n in self.order if n in wanted or any(
            s in wanted and node_of(self.graph, s).op in ("stack", "step")
            for s in self.graph.successors(n) if s not in self.members)}
        for view in self.views & shown:
            shown.add(self.data[view].args[0])
        shown |= {self.prev_of[s] for s in shown if s in self.prev_of}
        shown |= {self.state_of[p] for p in shown if p in self.state_of}
        return shown

    def _fetch(self, node) -> list:
        """The view binding ``v<i>`` to node's value at step ``t`` when it is stored over time."""
        i = self.index[node]
        if node in self.state_of:
            return [View(f"v{i}", f"S{self.index[self.state_of[node]]}", 0)]
        if node in self.prev_of:
            return [View(f"v{i}", f"S{i}", 1)]
        if node in self.masks:
            return [View(f"v{i}", f"M{i}", 0)]
        if node in self.views:
            return [View(f"v{i}", f"v{self.index[self.data[node].args[0]]}", columns=_region(self.data[node]))]
        return [View(f"v{i}", f"K{i}", 0)]

    def arg_name(self, arg) -> str:
        """How generated code names an input at step t."""
        kind = self.source(arg)
        if kind == "core":
            return f"v{self.index[arg]}"
        return f"x_{identifier(arg)}" if kind == "seq" else f"w_{identifier(arg)}"

    def external(self) -> dict:
        """Inputs from outside the core: generated name → (kind, node)."""
        return self._external

    def transposed(self) -> list:
        """The weights the forward loop multiplies by (it is handed each one transposed)."""
        return self._transposed

    def product_weights(self) -> set:
        """The weights the loops use only as products' left operands: the backward loop may
        have them packed for its products (see :mod:`seqgraph.backends.mkl`)."""
        return self._product_weights

    def _find_arrays(self) -> dict:
        """Every array a loop of this core may be handed but its scratch buffers, by name."""
        found = {}
        for node in self.order:
            i, shape = self.index[node], self.shapes[node]
            for role in "SKMCGO":
                found[f"{role}{i}"] = Buffer(f"{role}{i}", role, i, shape)
        for name, (kind, arg) in self.external().items():
            found[name] = Buffer(name, "X" if kind == "seq" else "w", None,
                                 tuple(int(n) for n in node_of(self.graph, arg).shape))
        for weight in self.transposed():
            shape = tuple(int(n) for n in node_of(self.graph, weight).shape)
            found["wt_" + identifier(weight)] = Buffer("wt_" + identifier(weight), "wt", None, shape[::-1])
        return found

    def _loop(self, name: str, prelude: list, body: list, scratch: dict, reverse=False, chains=(),
              liveness=None, sharing=None) -> Loop:
        """The :class:`Loop` of ``prelude`` and ``body``; ``scratch`` maps its scratch buffers'
        names to ``(shape, dtype)``."""
        arrays = {**self._arrays, **{n: Buffer(n, "b", None, shape) for n, (shape, _) in scratch.items()}}
        named = {item.of for item in prelude + body if isinstance(item, View)}
        named |= {n for item in prelude + body if isinstance(item, Instruction) for n in item.names()}
        functions = sorted({item.function for item in prelude + body if isinstance(item, Instruction)
                            and item.function is not None})
        return Loop(name, tuple(prelude), tuple(body), reverse, {n: arrays[n] for n in sorted(named) if n in arrays},
                    tuple(functions), {f"F{self.index[c.nodes[-1]]}": c for c in chains},
                    dict(liveness or {}), dict(sharing or {}))

    def _find_external(self) -> dict:
        found = {}
        for node in self.order:
            if self.data[node].op == PREV:
                continue
            for arg in self.data[node].args:
                if arg not in self.members:
                    kind = self.source(arg)
                    found[("X_" if kind == "seq" else "w_") + identifier(arg)] = (kind, arg)
        return found

    # -- forward -------------------------------------------------------------------------

    def _forward_source(self, fused=()):
        """The forward loop's source, scratch buffers and :class:`Loop`; each chain in
        ``fused`` runs as one call ``F<i>(inputs..., out=(outputs...))`` at its last node ``i``."""
        member = {node: chain for chain in fused for node in chain.nodes}
        stored = self.kept | self.views | set(self.masks)
        per_step, body, hoisted, lifetimes, keys, in_place = [], [], [], {}, {}, set()
        per_step += [View(f"x_{identifier(a)}", f"X_{identifier(a)}", 0) for k, (kind, a) in self.external().items()
                     if kind == "seq"]
        per_step += [View(f"v{self.index[n]}", f"x_{identifier(a)}") for n, a in self.hosted.items()]
        for node in self.order:
            if node in self.kept or node in self.masks:
                per_step += self._fetch(node)
        prelude = []
        for node in self.order:
            i = self.index[node]
            data = self.data[node]
            if data.op == PREV or node in self.masks:
                continue
            if node in self.views:
                if node not in self.kept:
                    parent = data.args[0]
                    # a view of a scratch value is bound once, before the loop
                    (per_step if parent in self.kept or parent in self.hosted else hoisted).append(self._fetch(node)[0])
                continue
            chain = member.get(node)
            if node not in stored and node not in self.hosted:
                lifetimes[node] = (self.index[chain.nodes[-1]] if chain else i, None)
                keys[node] = (tuple(data.shape), data.dtype)
            if chain is None:
                body += self._forward_instructions(node)
            elif node == chain.nodes[-1]:
                body.append(self._chain_instruction(chain))
        reads = self._last_reads(member)
        lifetimes = {n: (first, reads.get(n, first)) for n, (first, _) in lifetimes.items()}
        for node in self.order:
            data = self.data[node]
            if data.op in KERNELS and node in lifetimes:
                for arg in data.args:
                    if arg in lifetimes and keys.get(arg) == keys[node]:
                        in_place.add((arg, node))
        plan = share_buffers(lifetimes, keys, in_place)
        buffers = {}
        for node, number in plan.items():
            buffers[f"b{number}"] = keys[node]
            prelude.append(View(f"v{self.index[node]}", f"b{number}"))
        loop = self._loop("scan_forward", prelude + hoisted, per_step + body, buffers, chains=fused,
                          liveness={f"v{self.index[n]}": span for n, span in lifetimes.items()},
                          sharing={f"v{self.index[n]}": f"b{k}" for n, k in plan.items()})
        return python_source(loop), buffers, loop

    def _find_transposed(self) -> list:
        return sorted({self.data[n].args[0] for n in self.order if self._matmul(n)}, key=str)

    def _find_product_weights(self) -> set:
        return {w for w in self._transposed
                if all(self._matmul(c) and self.data[c].args[0] == w and self.data[c].args[1] != w
                       for c in self.graph.successors(w) if c in self.members)}

    def _matmul(self, node) -> bool:
        data = self.data[node]
        return data.op == "matmul" and self.source(data.args[0]) == "static"

    def _generic_forward(self, node) -> bool:
        data = self.data[node]
        return (data.op not in KERNELS and data.op != PREV and node not in self.sliced
                and node not in self.masks and not self._matmul(node))

    def _forward_instructions(self, node) -> list:
        """What computes node's value at step t into ``v<i>`` (views and instructions)."""
        data = self.data[node]
        i = self.index[node]
        ins = [self.arg_name(a) for a in data.args]
        if data.op in KERNELS:
            return [ufunc(call) for call in node_kernel(data).forward(f"v{i}", ins)]
        if self._matmul(node):
            return [ufunc(Call("dot", (ins[1], f"wt_{identifier(data.args[0])}"), f"v{i}"))]
        if node in self.copied:
            return [View(f"c{i}", ins[0], columns=_region(data)), ufunc(Call("copyto", (f"c{i}",), f"v{i}"))]
        return [Instruction("function", (f"v{i}",), tuple(ins), function=f"F{i}")]

    def _last_reads(self, member=None) -> dict:
        """The step-order index of each value's last read (a fused chain reads its inputs at
        its last node, ``member`` mapping the chains' nodes to them)."""
        member = member or {}
        reads = {}
        for node in self.order:
            if self.data[node].op == PREV:
                continue
            at = self.index[member[node].nodes[-1]] if node in member else self.index[node]
            for arg in self.data[node].args:
                while arg in self.views:
                    arg = self.data[arg].args[0]
                if arg in self.members:
                    reads[arg] = max(reads.get(arg, -1), at)
        return reads

    # -- the forward loop with fused chains (a backend with generated kernels) -----------

    def fused_forward(self):
        """``(code, buffers, chains, source, loop)`` of the forward loop that runs each fusible chain
        as one generated kernel (:meth:`fusible_chains`), made once."""
        if self._fused is None:
            chains = self.fusible_chains()
            source, buffers, loop = self._forward_source(chains)
            self._fused = (compile(source, f"<scan {self.order[0]} fused forward>", "exec"), buffers, chains,
                           source, loop)
        return self._fused

    def fusible_chains(self) -> list:
        """The chains of more than one op (or of one op whose in-place form is several calls),
        of one shape throughout, whose values nothing outside reads before the chain's last
        node; each returned with the outputs its kernel must write: what is read outside it,
        and what a later step or backward keeps."""
        found = []
        for chain in self.chains:
            inside = set(chain.nodes)
            last = self.index[chain.nodes[-1]]
            readers = {n: self._readers(n) - inside for n in chain.nodes}
            if ((len(chain.nodes) < 2 and not self._several_calls(chain.nodes[0]))
                    or len({tuple(self.data[n].shape) for n in chain.nodes}) > 1
                    or any(self.index[r] < last for rs in readers.values() for r in rs)):
                continue
            outputs = [n for n in chain.nodes if n in chain.outputs or n in self.kept or readers[n]]
            found.append(replace(chain, outputs=outputs, forward={n: chain.values[n] for n in outputs},
                                 backward={}))
        return found

    def _several_calls(self, node) -> bool:
        """Whether ``node``'s in-place kernel is more than one call (a sigmoid's is four)."""
        data = self.data[node]
        return data.op in KERNELS and len(node_kernel(data).forward("v", ["x"] * len(data.args))) > 1

    def _readers(self, node) -> set:
        """The core nodes that read ``node``'s value in the same step (through views)."""
        found = set()
        for consumer, _ in self.consumers[node]:
            found |= self._readers(consumer) if consumer in self.views else {consumer}
        return found

    def _chain_instruction(self, chain) -> Instruction:
        return Instruction("chain", tuple(f"v{self.index[n]}" for n in chain.outputs),
                           tuple(self.arg_name(a) for a in chain.inputs), function=f"F{self.index[chain.nodes[-1]]}")

    def forward_functions(self, xp, dtype, loop: Loop) -> dict:
        """The callables forward ``loop`` is handed: the forward of each op without an
        in-place kernel, and for each chain it runs its generated kernel (made once per
        namespace)."""
        found = {}
        for node in self.order:
            if self._generic_forward(node):
                op, attrs = ops_for(xp)[self.data[node].op], self.data[node].attrs
                found[f"F{self.index[node]}"] = partial(op.forward, xp, **attrs)
        for name, chain in loop.chains.items():
            if (xp, name) not in self._chain_kernels:
                self._chain_kernels[(xp, name)] = ChainKernel(chain, xp).forward
            found[name] = self._chain_kernels[(xp, name)]
        return found

    # -- backward ------------------------------------------------------------------------

    def layout(self, seeded: frozenset, needs_grad: frozenset = None) -> Layout:
        """Which nodes get a cotangent, and where each one lives, given the nodes that
        receive cotangents from outside the core (``seeded``) and those a wanted gradient
        flows through (``needs_grad``, default all)."""
        graph = self.graph
        needs_grad = self.needs_grad if needs_grad is None else needs_grad
        active = {n for n in seeded if n in needs_grad}
        changed = True
        while changed:
            changed = False
            for node in reversed(self.order):
                if node in active or node not in needs_grad:
                    continue
                carried = node in self.prev_of and self.prev_of[node] in active
                used = any(c in active and differentiable(graph, c, k) for c, k in self.consumers[node])
                if carried or used:
                    active.add(node)
                    changed = True
        inits = {}
        for node in self.order:
            if node not in active:
                continue
            parts = (["outside"] if node in seeded else []) + (
                ["carry"] if node in self.prev_of and self.prev_of[node] in active else [])
            if parts:
                inits[node] = parts
        contributions = {n: [(c, k) for c, k in self.consumers[n]
                             if c in active and differentiable(graph, c, k)] for n in active}
        deferred = {}
        for node in self.order:
            data = self.data[node]
            if node not in active or data.op == PREV:
                continue
            ports = [k for k, a in enumerate(data.args) if a not in self.members
                     and a in needs_grad and differentiable(graph, node, k)]
            if ports:
                deferred[node] = ports
        root, region = {}, {}
        for node in reversed(self.order):
            if node not in active:
                continue
            root[node], region[node] = node, None
            if node in self.state_of:
                continue
            parts = contributions[node]
            if node not in inits and len(parts) == 1:
                consumer, port = parts[0]
                if consumer in self.sliced and self._slices_alias(self.data[consumer].args[0], active, inits):
                    continue
                if (self._passes(consumer, port)
                        and tuple(self.data[consumer].shape) == tuple(self.data[node].shape)):
                    root[node], region[node] = root[consumer], region[consumer]
        for node in reversed(self.order):
            if node in self.sliced and node in active:
                parent = self.data[node].args[0]
                if self._slices_alias(parent, active, inits):
                    start, stop = self.data[node].attrs["start"], self.data[node].attrs["stop"]
                    offset = region[parent][0] if region[parent] else 0
                    root[node], region[node] = root[parent], (offset + start, offset + stop)
        for node in self.order:
            self._share_with_slice(node, active, inits, contributions, root, region)
        full = {root[n] for n in deferred}
        return Layout(active, root, region, full, deferred, inits, contributions,
                      self._backward_arrays(seeded, active, full))

    def _backward_arrays(self, seeded: frozenset, active: set, full: set) -> list:
        """:attr:`Layout.arrays`, found once per layout rather than on every pass."""
        found = []
        for node in self.order:
            roles = "".join(role for role, holds in (
                ("S", node in self.prev_of), ("K", node in self.kept and node not in self.views),
                ("M", node in self.masks), ("C", node in active and node in self.state_of),
                ("G", node in full), ("O", node in seeded)) if holds)
            if roles:
                found.append((node, self.index[node], roles))
        return found

    def _passes(self, node, port: int) -> bool:
        """Whether ``node`` hands input ``port`` its own cotangent unchanged (from the op's
        gradient formula: see :meth:`~seqgraph.ops.kernels.Kernel.passes`)."""
        data = self.data[node]
        return data.op in KERNELS and node_kernel(data).passes(port)

    def _share_with_slice(self, node, active: set, inits: dict, contributions: dict, root: dict,
                          region: dict) -> None:
        """An add whose whole cotangent passes to a slice that is the slice's only one (a GRU's
        ``x_rz + h_rz``; not when the slice also starts from an outside cotangent, as a
        cell's output does) keeps it in that slice's place, in its input's cotangent, instead
        of a buffer of its own that would be copied there."""
        data = self.data[node]
        if node not in active or node in inits or root[node] != node or region[node] is not None:
            return
        for port, arg in enumerate(data.args):
            if (arg in active and arg in self.sliced and region.get(arg) is not None and arg not in inits
                    and self._passes(node, port) and contributions[arg] == [(node, port)]
                    and tuple(self.data[arg].shape) == tuple(data.shape)):
                start = region[arg][0]
                for member in [m for m in root if root[m] == node]:
                    inner = region[member] or (0, region[arg][1] - start)
                    root[member], region[member] = root[arg], (start + inner[0], start + inner[1])
                return

    def _slices_alias(self, parent, active: set, inits: dict) -> bool:
        """Whether the cotangents of parent's slices are views of parent's cotangent."""
        if parent not in active or parent in inits or parent in self.prev_of:
            return False
        users = self.consumers[parent]
        if not users or any(c not in self.sliced or self.data[c].attrs.get("axis", -1) != -1
                            for c, _ in users):
            return False
        spans = sorted((self.data[c].attrs["start"], self.data[c].attrs["stop"]) for c, _ in users)
        return all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))

    def backward_code(self, seeded: frozenset, needs_grad: frozenset = None, fused: bool = False):
        """``(layout, code, source, buffers, chains, loop)`` of the backward loop for ``seeded``
        (and the nodes gradients flow through, ``needs_grad``, default all), made once;
        ``fused``: each chain of :meth:`fused_backward_chains` (in ``chains``) runs as one call."""
        key = (seeded, needs_grad, fused)
        if key not in self._backward:
            layout = self.layout(seeded, needs_grad)
            chains = self.fused_backward_chains(layout) if fused else []
            loop, buffers = self._backward_loop(layout, chains)
            source = python_source(loop)
            code = compile(source, f"<scan {self.order[0]} {'fused ' if fused else ''}backward>", "exec")
            self._backward[key] = (layout, code, source, buffers, [chain for chain, _ in chains], loop)
        return self._backward[key]

    def program(self, seeded: frozenset = None, fused: bool = False) -> StepProgram:
        """The step program of this core: its forward loop and the backward loop for the
        cotangents ``seeded`` (default: every value read outside the core); ``fused``: with
        the fused chains' kernels."""
        seeded = frozenset(self.outside if seeded is None else seeded)
        forward = self.fused_forward()[4] if fused else self.forward_loop
        return StepProgram(forward, self.backward_code(seeded, None, fused)[5], tuple(map(str, self.order)))

    def _backward_loop(self, layout: Layout, fused=()):
        """The backward :class:`Loop` and its scratch buffers; each ``(chain, at)`` in
        ``fused`` runs as one call ``F<i>(inputs..., cotangents..., out=(targets...))``
        before the gradient instructions of the node at index ``at`` (after all of them when
        ``at`` is -1)."""
        reads_fwd = set()
        written = {}
        emitted = []  # (instructions, writes, reads, temporaries) of scratch roots
        inside = {node for chain, _ in fused for node in chain.nodes}
        for node in [*reversed(self.order), None]:
            for chain, at in fused:
                if at == (self.index[node] if node is not None else -1):
                    code, writes, temps = self._chain_backward_instructions(layout, chain, written)
                    reads_fwd |= {a for a in chain.inputs if a in self.members}
                    emitted.append((code, writes, {layout.root[o] for o in chain.outputs}, temps))
            if node is None or node not in layout.active or node in self.state_of or node in inside:
                continue
            data = self.data[node]
            for port, arg in enumerate(data.args):
                if arg not in self.members or arg not in layout.active or not differentiable(self.graph, node, port):
                    continue
                if layout.root[arg] == layout.root[node] and layout.region[arg] == layout.region[node]:
                    continue
                if node in self.sliced and layout.root[node] == layout.root[arg]:
                    continue
                mode = "add" if arg in layout.inits or written.get(arg) else "set"
                written[arg] = True
                code, reads, temps = self._gradient_instructions(layout, node, port, mode)
                reads_fwd |= reads
                emitted.append((code, {layout.root[arg]}, {layout.root[node]}, temps))
        # scratch roots share buffers by liveness over the emitted instructions
        lifetimes, keys = {}, {}
        for step, (_, writes, reads, _) in enumerate(emitted):
            for root in writes | reads:
                if root in layout.full or root in self.state_of:
                    continue
                first, _ = lifetimes.get(root, (step, step))
                lifetimes[root] = (first, step)
                keys[root] = (tuple(self.data[root].shape), "float")
        for root in {layout.root[n] for n in layout.active}:
            if root not in lifetimes and root not in layout.full and root not in self.state_of:
                lifetimes[root] = (-1, -1)
                keys[root] = (tuple(self.data[root].shape), "float")
        temporaries = set()
        for step, (code, _, _, temps) in enumerate(emitted):
            used = {name for instruction in code for name in instruction.names()}
            for tmp, like in temps.items():
                if tmp in used:
                    temporaries.add(tmp)
                    lifetimes[tmp] = (step, step)
                    keys[tmp] = (tuple(self.data[like].shape), "float")
        # roots with an outside or carried cotangent are written at the top of the step
        for root in {layout.root[n] for n in layout.inits}:
            if root in lifetimes:
                lifetimes[root] = (-1, lifetimes[root][1])
        plan = share_buffers(lifetimes, keys)
        buffers = {f"b{k}": (keys[v][0], "float") for v, k in plan.items()}
        prelude, per_step = self._cotangent_views(layout, plan)
        read = {name for code, *_ in emitted for instruction in code for name in instruction.names()}
        fetch = [View(f"x_{identifier(a)}", f"X_{identifier(a)}", 0) for _, (kind, a) in self.external().items()
                 if kind == "seq" and self.arg_name(a) in read]
        recompute = sorted(reads_fwd & self.recomputed, key=self.index.get)
        for number, node in enumerate(recompute, start=1 + max(plan.values(), default=-1)):
            reads_fwd |= {a for a in self.data[node].args if a in self.members}
            buffers[f"b{number}"] = (tuple(self.data[node].shape), "float")
            prelude.append(View(f"v{self.index[node]}", f"b{number}"))
        for node in self.order:
            if node in reads_fwd and node not in self.recomputed:
                fetch += [view for view in self._fetch_chain(node) if view not in fetch]
        for node in recompute:
            fetch += self._forward_instructions(node)
        renamed = {tmp: f"b{plan[tmp]}" for tmp in temporaries}
        body = [instruction.renamed(renamed) for code, *_ in emitted for instruction in code]
        name = {value: value if value in temporaries else f"g{self.index[value]}" for value in lifetimes}
        liveness = {name[value]: span for value, span in lifetimes.items()}
        sharing = {name[value]: f"b{number}" for value, number in plan.items()}
        loop = self._loop("scan_backward", prelude, per_step + fetch + self._init_instructions(layout)
                          + self._uncovered_instructions(layout) + body, buffers, reverse=True,
                          chains=[chain for chain, _ in fused], liveness=liveness, sharing=sharing)
        return loop, buffers

    def _cotangent_views(self, layout: Layout, plan: dict):
        """The prelude (views, then the carried cotangents' zero fills) and the per-step
        views that bind ``g<i>`` to each active node's cotangent: a carried buffer, a row of
        one kept over time, a scratch buffer (``plan``) or a part of its root's."""
        views, zeroed, per_step = [], [], []
        for root in sorted({layout.root[n] for n in layout.active}, key=self.index.get):
            i = self.index[root]
            if root in self.state_of:
                views.append(View(f"g{i}", f"C{i}"))
                zeroed.append(Instruction("zero", (f"g{i}",)))
            elif root in layout.full:
                per_step.append(View(f"g{i}", f"G{i}", 0))
            else:
                views.append(View(f"g{i}", f"b{plan[root]}"))
        for node in sorted(layout.active, key=self.index.get):
            r = layout.root[node]
            if r != node:
                view = View(f"g{self.index[node]}", f"g{self.index[r]}", columns=layout.region[node])
                (per_step if r in layout.full else views).append(view)
        return ordered_views(views) + zeroed, ordered_views(per_step)

    def fused_backward_chains(self, layout: Layout) -> list:
        """``(chain, at)`` for each fusible chain whose backward can run as one call in the
        backward loop of ``layout`` (see :meth:`_backward_chain`)."""
        found, chains = [], self.fusible_chains()
        fusible = {node for chain in chains for node in chain.nodes}
        for chain in chains:
            fused = self._backward_chain(layout, chain, fusible)
            if fused is not None:
                found.append(fused)
        return found

    def _backward_chain(self, layout: Layout, chain, fusible: set):
        """``chain`` as one backward call, and the index of the node before whose gradient
        lines it runs, or None where that is not well-defined.

        The call reads the cotangents its nodes get from outside it (``outputs``), complete
        once every consumer outside it has written them; it writes the whole cotangent of
        every active core input (before any input's own lines read it) and of every node
        whose cotangent rows a deferred weight gradient reads after the loop. A consumer in
        another chain (in ``fusible``) would write its part at that chain's call: not fused."""
        inside = set(chain.nodes)
        if not inside <= layout.active:
            return None
        outputs = [n for n in chain.nodes if n in layout.inits
                   or any(c not in inside for c, _ in layout.contributions[n])]
        consumers = [self.index[c] for n in outputs for c, _ in layout.contributions[n] if c not in inside]
        inputs = [a for a in chain.inputs if a in self.members and a in layout.active]
        shape = tuple(self.data[chain.nodes[0]].shape)
        at = max((self.index[a] for a in inputs), default=-1)
        if (not outputs or any(tuple(self.data[a].shape) != shape for a in inputs)
                or any(i <= at or self.order[i] in fusible for i in consumers)):
            return None
        targets, places = [], set()
        for node in inputs + [n for n in chain.nodes if n in layout.deferred]:
            if (layout.root[node], layout.region[node]) not in places or node in inputs:
                targets.append(node)
                places.add((layout.root[node], layout.region[node]))
        stored = {n for n in chain.inputs + chain.nodes if n not in self.members or self._stored(n)}
        fused = backward_chain(self.graph, chain, outputs, targets, stored)
        return (fused, at) if fused is not None and fused.backward else None

    def _stored(self, node) -> bool:
        """Whether the backward loop can read node's forward value at every step."""
        if node in self.views:
            return self._stored(self.data[node].args[0])
        return node in self.kept or node in self.masks

    def _chain_backward_instructions(self, layout: Layout, chain, written: dict):
        """The instructions of one fused chain's backward call (a target that already holds
        a contribution gets the call's result added), the roots it writes and its
        temporaries (each mapped to the node it is shaped like)."""
        i = self.index[chain.nodes[-1]]
        ins = [self.arg_name(a) for a in chain.inputs] + [f"g{self.index[o]}" for o in chain.outputs]
        outs, adds, temps = [], [], {}
        for target in chain.backward:
            j = self.index[target]
            if target not in chain.nodes and (target in layout.inits or written.get(target)):
                tmp = f"tmp_{j}_{i}_chain"
                outs.append(tmp)
                adds.append(ufunc(Call("add", (f"g{j}", tmp), f"g{j}")))
                temps[tmp] = target
            else:
                outs.append(f"g{j}")
            written[target] = True
        call = Instruction("chain", tuple(outs), tuple(ins), function=f"F{i}")
        return [call] + adds, {layout.root[t] for t in chain.backward}, temps

    def _fetch_chain(self, node) -> list:
        lines = []
        if node in self.views:
            lines += self._fetch_chain(self.data[node].args[0])
        return lines + self._fetch(node)

    def _gradient_instructions(self, layout: Layout, node, port: int, mode: str):
        """The instructions adding node's contribution to input ``port``, the forward values
        they read and their temporary (mapped to the node it is shaped like)."""
        data = self.data[node]
        i = self.index[node]
        arg = data.args[port]
        dst, g, out = f"g{self.index[arg]}", f"g{i}", f"v{i}"
        ins = [self.arg_name(a) for a in data.args]
        tmp = f"tmp_{self.index[arg]}_{i}_{port}"
        temps = {tmp: arg}
        op = data.op
        reads = self._gradient_reads(node, port) & self.members
        if op in KERNELS and tuple(node_of(self.graph, arg).shape) == tuple(data.shape):
            calls = node_kernel(data).gradients[port](dst, mode, g, out, ins, tmp)
            return [ufunc(call) for call in calls], reads, temps
        if self._matmul(node) and port == 1:
            # dot writes only into a contiguous buffer; a slice of a cotangent is not one
            product = "dot" if layout.region[arg] is None else "matmul"
            if mode == "set":
                return [ufunc(Call(product, (g, ins[0]), dst, keyword=product == "matmul"))], reads, temps
            return [ufunc(Call(product, (g, ins[0]), tmp, keyword=product == "matmul")),
                    ufunc(Call("add", (dst, tmp), dst))], reads, temps
        if op == "slice" and data.attrs.get("axis", -1) < 0:
            # g is written first, since it may share memory with dst
            attrs = data.attrs
            columns = (attrs["start"], attrs["stop"], attrs.get("axis", -1))
            return [Instruction("place", (dst,), (g,), mode, columns=columns)], reads, temps
        return [Instruction("function", (dst,), (g, out, *ins), mode, function=f"V{i}_{port}")], reads, temps

    def _init_instructions(self, layout: Layout) -> list:
        """What starts each cotangent that comes from outside the core or is carried from
        step t+1: a copy of one, or the sum of both."""
        items, later = [], []
        for node in sorted(layout.inits, key=self.index.get, reverse=True):
            i = self.index[node]
            sources = [f"o{i}" if p == "outside" else f"g{self.index[self.prev_of[node]]}"
                       for p in layout.inits[node]]
            call = Call("copyto", (sources[0],), f"g{i}") if len(sources) == 1 else Call("add", tuple(sources), f"g{i}")
            views = [View(f"o{i}", f"O{i}", 0)] if "outside" in layout.inits[node] else []
            (later if node in self.state_of else items).extend(views + [ufunc(call)])
        return items + later

    def _uncovered_instructions(self, layout: Layout) -> list:
        """Zero the parts of an aliased cotangent that no active slice writes."""
        lines = []
        for parent in self.order:
            if parent not in layout.active:
                continue
            slices = [c for c, _ in self.consumers[parent] if c in self.sliced]
            if not slices or not self._slices_alias(parent, layout.active, layout.inits):
                continue
            covered = sorted((self.data[c].attrs["start"], self.data[c].attrs["stop"])
                             for c in slices if c in layout.active)
            edges = [0] + [x for span in covered for x in span] + [self.data[parent].shape[-1]]
            for start, stop in zip(edges[::2], edges[1::2]):
                if stop > start:
                    lines.append(Instruction("zero", (f"g{self.index[parent]}",), columns=(start, stop)))
            if not covered:
                continue
        return lines

    def backward_functions(self, xp, layout: Layout, loop: Loop) -> dict:
        """The callables backward ``loop`` is handed: the vjp of each op without an in-place
        kernel, and for each chain it runs its generated backward kernel (made once per
        namespace)."""
        found = {}
        for name, chain in loop.chains.items():
            key = (xp, name, tuple(chain.outputs), tuple(chain.backward))
            if key not in self._chain_kernels:
                self._chain_kernels[key] = ChainKernel(chain, xp).backward
            found[name] = self._chain_kernels[key]
        for node in layout.active:
            data = self.data[node]
            if data.op == PREV:
                continue
            op = ops_for(xp)[data.op]
            for port, arg in enumerate(data.args):
                wanted = [k == port for k in range(len(data.args))]
                found[f"V{self.index[node]}_{port}"] = _one_gradient(op, xp, wanted, port, data.attrs)
        return found

    def stats(self) -> dict:
        """Counts of what one step runs and holds."""
        return {"forward_calls_per_step": len(self.forward_loop.instructions()),
                "scratch_buffers": len(self.forward_buffers),
                "kept": len(self.kept), "chains": len(self.chains)}


def _one_gradient(op, xp, wanted, port, attrs):
    def gradient(g, out, *ins):
        return op.partial_vjp(xp, g, out, *ins, wanted=wanted, **attrs)[port]
    return gradient


def _region(data) -> tuple:
    return (data.attrs["start"], data.attrs["stop"])

