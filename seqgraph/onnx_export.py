"""A compiled network's forward graph as an ONNX model, for ONNX Runtime and the tools
around it.

The exported graph takes the model's inputs (its targets are left out) and, for each time
axis whose lengths it reads (a recurrent op, ``last``, ``reverse``, convolution and pooling
along time, attention), the valid length of every sequence (``time.lengths``, int64 ``[batch]``); it
hands back the model's outputs except the loss. Batch and time axes are dynamic (``batch``, and the
axis' name, ``time`` by default). Sequences are time-major, as everywhere in seqgraph.

How the folded graph becomes ONNX:

- every op outside a recurrence becomes one or a few standard ONNX ops (:data:`TRANSLATIONS`,
  one entry per registry op);
- a recurrence of a built-in cell (``lstm``, ``gru``, ``rnn``, ``rnn_relu``) becomes one ONNX
  ``LSTM``, ``GRU`` or ``RNN`` op with ``layout = 0`` and ``sequence_lens``: PyTorch's gate
  order is mapped to ONNX's (LSTM i, f, g, o to i, o, f, c; GRU r, z, n to z, r, h with
  ``linear_before_reset = 1``), a recurrence over a reversed sequence whose outputs are only
  reversed back becomes ``direction = reverse``, and the two halves of ``direction = both``
  one ``bidirectional`` op;
- any other recurrence (a user's cell, or a built-in one used in a way those ops cannot
  express) becomes a ``Scan`` whose body is the cell's step, translated op by op.

``recurrent_ops=False`` exports every recurrence as a ``Scan``: ONNX Runtime runs its
``LSTM``, ``GRU`` and ``RNN`` ops in float32 only, while a ``Scan`` runs in float64 too.
"""

from __future__ import annotations

from typing import Optional

import networkx as nx
import numpy

from .errors import SeqgraphError
from .ir import node_of, nodes_of

OPSET = 18
BATCH = "batch"
BUILT_IN_CELLS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN", "rnn_relu": "RNN"}
# rows of PyTorch's stacked gate weights, in the order ONNX stacks them
GATE_ORDER = {"lstm": (0, 3, 1, 2), "gru": (1, 0, 2), "rnn": (0,), "rnn_relu": (0,)}
RECURRENT_PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _onnx():
    """The ``onnx`` package, imported on first use: it is an optional extra."""
    try:
        import onnx
    except ImportError:
        raise SeqgraphError("exporting to ONNX needs the onnx package",
                            hint="pip install 'seqgraph[export]'") from None
    return onnx


def export_onnx(network, path=None, recurrent_ops: bool = True):
    """The forward graph of ``network`` with its current parameters as an ``onnx.ModelProto``
    (see the module docstring), written to ``path`` when one is given."""
    onnx = _onnx()
    exporter = _Exporter(onnx, network, recurrent_ops)
    proto = exporter.build()
    if path is not None:
        from .weights import atomic_write
        encoded = proto.SerializeToString()
        atomic_write(path, lambda file: file.write(encoded))
    return proto


def _unsupported(data, why: str) -> SeqgraphError:
    return SeqgraphError(f"cannot export op '{data.op}' to ONNX: {why}", data.span,
                         "the model's other ops export; compute this one outside the exported graph")


def _leading_dims(vtype) -> list:
    """The names of the axes a value has before its feature axes at run time: time and
    batch for a sequence, batch for a value per example or per step, none for a parameter."""
    if vtype.is_seq:
        return [vtype.time, BATCH]
    return [BATCH] if (vtype.batched or vtype.timed) else []


def _leading_axes(data) -> int:
    return len(_leading_dims(data.type))


class _Emitter:
    """Collects the nodes of one ONNX graph (the main graph, or a Scan body). Constants go
    to the main graph's initializers, which a body sees from its outer scope."""

    def __init__(self, onnx, names: dict, taken: set, root: Optional["_Emitter"] = None):
        self.onnx = onnx
        self.names = names  # folded-graph node id -> ONNX value name
        self.taken = taken
        self.root = root or self
        self.nodes: list = []
        self.initializers: list = []
        self._cache: dict = {}

    def fresh(self, stem: str) -> str:
        """An ONNX value name not used yet, ``stem`` if possible."""
        name, count = stem, 0
        while name in self.taken:
            count += 1
            name = f"{stem}.{count}"
        self.taken.add(name)
        return name

    def op(self, op_type: str, inputs, stem: Optional[str] = None, outputs: int = 1, **attrs):
        """Add one node; its output name (or names, for ``outputs > 1``)."""
        results = [self.fresh(stem or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), results, **attrs))
        return results[0] if outputs == 1 else results

    def constant(self, array, stem: str = "const", shared: bool = True) -> str:
        """An initializer holding ``array``, seen by every graph; ``shared`` ones (axes,
        shapes, fills) are made once per value, a parameter keeps its own name."""
        array = numpy.asarray(array)
        root = self.root
        key = (array.dtype.str, array.shape, array.tobytes()) if shared else None
        if key not in root._cache:
            name = root.fresh(stem)
            root.initializers.append(self.onnx.numpy_helper.from_array(array, name))
            if not shared:
                return name
            root._cache[key] = name
        return root._cache[key]

    def ints(self, values) -> str:
        """An int64 vector constant (axes, shapes, starts and ends)."""
        return self.constant(numpy.asarray(list(values), dtype=numpy.int64), "ints")

    def once(self, key, make) -> str:
        """``make()``, computed once per ``key`` in this graph (a transposed weight, a mask)."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


class _Exporter:
    """Turns one network's folded graph into an ONNX model."""

    def __init__(self, onnx, network, recurrent_ops: bool):
        self.onnx = onnx
        self.network = network
        self.model = network.model
        self.graph = network.model.graph
        self.dtype = numpy.dtype(network.dtype)
        self.recurrent_ops = recurrent_ops
        checked = self.model.checked
        self.outputs = {name: node for name, node in checked.outputs.items() if node != checked.loss}
        if not self.outputs:
            raise SeqgraphError(f"model {self.model.name} has no output to export besides its loss",
                                self.model.ast.span, "mark what it computes: output probs = softmax(logits)")
        self.needed = set(self.outputs.values())
        for node in self.outputs.values():
            self.needed |= nx.ancestors(self.graph, node)
        self.main = _Emitter(onnx, {}, set())
        self.recurrences = self._recurrences()

    # --- the whole model ----------------------------------------------------------------

    def build(self):
        """The ONNX model."""
        helper = self.onnx.helper
        inputs = self._inputs()
        for group in self._order():
            if group in self.recurrences:
                self._recurrence(self.recurrences[group])
            elif group not in self.main.names:
                self._untimed(group)
        outputs = []
        for name, node in self.outputs.items():
            self.main.nodes.append(helper.make_node("Identity", [self.main.names[node]], [name]))
            outputs.append(self._value_info(name, node_of(self.graph, node)))
        nodes, read = _live(self.main.nodes, self.outputs)
        initializers = [tensor for tensor in self.main.initializers if tensor.name in read]
        graph = helper.make_graph(nodes, self.model.name, inputs, outputs, initializers)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="seqgraph")
        proto.ir_version = min(proto.ir_version, 9)  # what ONNX Runtime releases since 1.15 read
        return proto

    def _elem_type(self, dtype: str) -> int:
        tensor = self.onnx.TensorProto
        if dtype == "int":
            return tensor.INT64
        return tensor.DOUBLE if self.dtype == numpy.float64 else tensor.FLOAT

    def _value_info(self, name: str, data):
        dims = _leading_dims(data.type) + [int(d) for d in data.shape]
        return self.onnx.helper.make_tensor_value_info(name, self._elem_type(data.dtype), dims)

    def _inputs(self) -> list:
        """Graph inputs: the model's inputs the outputs need, and their time axes' lengths."""
        infos = []
        checked = self.model.checked
        for name, node in checked.targets.items():
            if node in self.needed:
                output = next(o for o, n in self.outputs.items() if n == node or node in nx.ancestors(self.graph, n))
                raise SeqgraphError(f"output '{output}' depends on target '{name}', which an exported "
                                    "model is not fed", node_of(self.graph, self.outputs[output]).span,
                                    "export what the model computes from its inputs alone")
        self.main.taken.update(self.outputs)
        for name, node in checked.inputs.items():
            if node in self.needed:
                self.main.names[node] = name
                self.main.taken.add(name)
                infos.append(self._value_info(name, node_of(self.graph, node)))
        for axis, node in checked.time_axes.items():
            if node in self.needed:
                name = f"{axis}.lengths"
                self.main.names[node] = name
                self.main.taken.add(name)
                infos.append(self.onnx.helper.make_tensor_value_info(name, self.onnx.TensorProto.INT64, [BATCH]))
        return infos

    def _order(self) -> list:
        """Untimed nodes and recurrences (by id) in an order that computes inputs first."""
        group_of = {}
        for rid, rec in self.recurrences.items():
            for node in rec.nodes | set(rec.stacks):
                group_of[node] = rid
        order = nx.DiGraph()
        for node in self.needed:
            order.add_node(group_of.get(node, node))
        for u, v, data in self.graph.edges(data=True):
            if u in self.needed and v in self.needed and not data.get("delay"):
                gu, gv = group_of.get(u, u), group_of.get(v, v)
                if gu != gv:
                    order.add_edge(gu, gv)
        return list(nx.lexicographical_topological_sort(order, key=str))

    # --- values outside recurrences -------------------------------------------------------

    def _untimed(self, node) -> None:
        data = node_of(self.graph, node)
        op = data.op
        em = self.main
        if op == "param":
            value = self.network.backend.to_host(self.network.params[data.key])
            em.names[node] = em.constant(numpy.asarray(value, dtype=self.dtype), data.key, shared=False)
            return
        if op == "state_init":
            return  # a recurrence starts from it (or from ONNX's zero default) itself
        em.names[node] = self._translate(em, node, data)

    def _translate(self, em: _Emitter, node, data) -> str:
        translate = TRANSLATIONS.get(data.op)
        if translate is None:
            raise _unsupported(data, "ONNX export has no translation for it")
        args = [em.names[arg] for arg in data.args]
        arg_data = [node_of(self.graph, arg) for arg in data.args]
        return translate(_Context(self, em, node, data, arg_data), *args)

    # --- recurrences ----------------------------------------------------------------------

    def _recurrences(self) -> dict:
        """The recurrences the outputs need, by id (``recurrence:<scope>``), each one cell
        instance: its timed nodes, its step inputs, states and stacked outputs."""
        timed = [n for n in self.needed if node_of(self.graph, n).timed]
        components = nx.connected_components(self.graph.subgraph(timed).to_undirected())
        found = {}
        for nodes in components:
            rec = _Recurrence(self.graph, nodes, self.needed)
            found[f"recurrence:{rec.scope}"] = rec
        if self.recurrent_ops:
            from .program import prelude_cells
            cells = prelude_cells()
            for rec in found.values():
                rec.plan_builtin(cells, self.graph, self.needed, self.network.params)
                if rec.builtin is not None:
                    self.needed.add(rec.builtin.lengths)  # the op's sequence_lens
            _pair_directions(list(found.values()))
        return found

    def _recurrence(self, rec: "_Recurrence") -> None:
        if rec.emitted:
            return
        if rec.builtin is None:
            self._scan(rec)
        else:
            self._recurrent_op(rec)

    def _initial_state(self, em: _Emitter, init, batch: str) -> str:
        """A state's starting value (B, ...): a given value, or its constant filled out."""
        data = node_of(self.graph, init)
        if data.op != "state_init":
            return em.names[init]
        fill = em.constant(numpy.asarray(data.attrs.get("value", 0.0), dtype=self.dtype), "fill")
        shape = em.op("Concat", [batch, em.ints(data.shape)], axis=0)
        return em.op("Expand", [fill, shape], f"{init}")

    def _scan(self, rec: "_Recurrence") -> None:
        """The recurrence as an ONNX Scan over its step inputs, the body its cell's step."""
        helper, em = self.onnx.helper, self.main
        body = _Emitter(self.onnx, em.names, em.taken, root=em)
        body_inputs, body_outputs = [], []
        for prev in rec.prevs:
            name = em.fresh(f"{prev}.in")
            em.names[prev] = name
            body_inputs.append(self._value_info(name, node_of(self.graph, prev)))
        for step in rec.steps:
            name = em.fresh(f"{step}.in")
            em.names[step] = name
            body_inputs.append(self._value_info(name, node_of(self.graph, step)))
        for node in rec.order:
            body.names[node] = self._translate(body, node, node_of(self.graph, node))
        results = [node_of(self.graph, prev).args[0] for prev in rec.prevs] + \
            [node_of(self.graph, stack).args[0] for stack in rec.stacks]
        for value in results:
            name = em.fresh(f"{value}.out")
            body.nodes.append(helper.make_node("Identity", [em.names[value]], [name]))
            body_outputs.append(self._value_info(name, node_of(self.graph, value)))
        graph = helper.make_graph(body.nodes, f"{rec.scope}.step", body_inputs, body_outputs)
        first = em.names[node_of(self.graph, rec.steps[0]).args[0]]
        batch = em.op("Shape", [first], "batch_size", start=1, end=2)
        initial = [self._initial_state(em, node_of(self.graph, prev).args[1], batch) for prev in rec.prevs]
        sources = [em.names[node_of(self.graph, step).args[0]] for step in rec.steps]
        outs = [em.fresh(f"{rec.scope}.final") for _ in rec.prevs] + [em.fresh(stack) for stack in rec.stacks]
        em.nodes.append(helper.make_node("Scan", initial + sources, outs, body=graph,
                                         num_scan_inputs=len(sources)))
        for stack, name in zip(rec.stacks, outs[len(rec.prevs):]):
            em.names[stack] = name
        rec.emitted = True

    def _recurrent_op(self, rec: "_Recurrence") -> None:
        """One ONNX LSTM, GRU or RNN op for this recurrence (and its reverse half)."""
        em = self.main
        parts = sorted([rec] + ([rec.partner] if rec.partner is not None else []),
                       key=lambda part: part.builtin.direction != "forward")
        plan = parts[0].builtin
        direction = "bidirectional" if rec.partner is not None else plan.direction
        weights = [_onnx_weights(plan.cell, [self._host(p) for p in part.builtin.params]) for part in parts]
        w, r, b = (em.constant(numpy.stack([ws[i] for ws in weights]).astype(self.dtype), f"{rec.scope}.{k}",
                               shared=False) for i, k in enumerate("WRB"))
        x = em.names[plan.source]
        lengths = em.once(("lengths32", plan.lengths),
                          lambda: em.op("Cast", [em.names[plan.lengths]], "lengths_int32",
                                        to=self.onnx.TensorProto.INT32))
        inputs = [x, w, r, b, lengths]
        for state in ("h", "c"):
            init = plan.init.get(state)
            if init is not None:
                inputs.append(em.op("Unsqueeze", [em.names[init], em.ints([0])], f"{rec.scope}.{state}0"))
            elif state == "h" and plan.init.get("c") is not None:
                inputs.append("")
        attrs = {"hidden_size": plan.hidden, "direction": direction, "layout": 0}
        if plan.cell == "gru":
            attrs["linear_before_reset"] = 1
        if plan.cell == "rnn_relu":
            attrs["activations"] = ["Relu"] * len(parts)
        results = em.op(BUILT_IN_CELLS[plan.cell], inputs, rec.scope, outputs=3 if plan.cell == "lstm" else 2,
                        **attrs)  # Y, Y_h and, for an LSTM, Y_c
        sequences = self._directions(em, results[0], 1, len(parts), rec.scope)
        finals = self._directions(em, results[2], 0, len(parts), f"{rec.scope}.c") \
            if plan.cell == "lstm" else [None] * len(parts)
        for part, sequence, final in zip(parts, sequences, finals):
            for node in part.builtin.sequence_outputs:
                em.names[node] = sequence
            for node in part.builtin.cell_finals:
                em.names[node] = final
            part.emitted = True

    def _directions(self, em: _Emitter, value: str, axis: int, count: int, stem: str) -> list:
        """An ONNX recurrent op's output split by direction, the direction axis removed."""
        halves = [value] if count == 1 else em.op("Split", [value], stem, outputs=count, axis=axis,
                                                   num_outputs=count)
        return [em.op("Squeeze", [half, em.ints([axis])], stem) for half in halves]

    def _host(self, key: str):
        return numpy.asarray(self.network.backend.to_host(self.network.params[key]), dtype=numpy.float64)


def _live(nodes: list, outputs) -> tuple:
    """``(kept, read)``: ``nodes`` without those whose results nothing reads (a recurrent op
    that runs in reverse itself leaves the ReverseSequence of its input unread, and the
    parameters it holds reordered leave their originals unread), and the names the kept
    ones read. A Scan body's reads of outer values count as reads."""
    read = set(outputs)
    kept = []
    for node in reversed(nodes):
        if not read.intersection(node.output):
            continue
        kept.append(node)
        read.update(node.input)
        for attribute in node.attribute:
            if attribute.HasField("g"):
                read.update(name for inner in attribute.g.node for name in inner.input)
    return kept[::-1], read


def _onnx_weights(cell: str, params: list) -> tuple:
    """PyTorch's (weight_ih, weight_hh, bias_ih, bias_hh) as ONNX's W, R and B of one
    direction, the gates reordered."""
    order = GATE_ORDER[cell]

    def gates(array):
        return numpy.concatenate([numpy.split(array, len(order))[i] for i in order])

    weight_ih, weight_hh, bias_ih, bias_hh = (gates(p) for p in params)
    return weight_ih, weight_hh, numpy.concatenate([bias_ih, bias_hh])


class _BuiltinPlan:
    """How a recurrence maps onto an ONNX recurrent op: the cell, its direction, the
    sequence it reads, its parameters and initial states, and which folded-graph nodes its
    outputs stand for."""

    def __init__(self, cell, direction, source, lengths, params, hidden, init,
                 sequence_outputs, cell_finals):
        self.cell, self.direction, self.source, self.lengths = cell, direction, source, lengths
        self.params, self.hidden, self.init = params, hidden, init
        self.sequence_outputs, self.cell_finals = sequence_outputs, cell_finals


class _Recurrence:
    """One cell instance scanned over a sequence: its timed nodes and its boundary."""

    def __init__(self, graph, nodes, needed):
        self.nodes = set(nodes)
        self.order = [n for n in nx.topological_sort(_without_delays(graph.subgraph(self.nodes)))
                      if node_of(graph, n).op not in ("step", "prev")]
        self.steps = sorted(n for n in self.nodes if node_of(graph, n).op == "step")
        self.prevs = sorted(n for n in self.nodes if node_of(graph, n).op == "prev")
        self.stacks = sorted(s for n in self.nodes for s in graph.successors(n)
                             if s in needed and node_of(graph, s).op == "stack")
        first = self.steps[0] if self.steps else min(self.nodes)
        self.scope = str(first).rpartition("/")[0] or str(first)
        self.layer = node_of(graph, first).layer
        self.builtin: Optional[_BuiltinPlan] = None
        self.partner: Optional[_Recurrence] = None
        self.emitted = False

    def plan_builtin(self, cells: dict, graph, needed, params) -> None:
        """Set ``builtin`` when an ONNX recurrent op computes this recurrence's outputs: a
        built-in cell whose whole cell sequence nobody reads, started from zeros or from
        given values."""
        cell = _prelude_cell(cells, graph, self.steps)
        if cell is None:
            return
        keys = [f"{self.layer}.{name}{self.scope[len(self.layer):]}" for name in RECURRENT_PARAMS]
        states = {node_of(graph, p).name.partition("[")[0]: p for p in self.prevs}  # "h[t-1]" -> h
        if any(key not in params for key in keys) or set(states) != ({"h", "c"} if cell == "lstm" else {"h"}):
            return
        stack_of = {node_of(graph, s).args[0]: s for s in self.stacks}
        h_seq, c_seq = (stack_of.get(node_of(graph, states[k]).args[0]) if k in states else None for k in "hc")
        if h_seq is None or set(self.stacks) - {h_seq, c_seq}:
            return

        def users(node):
            return [u for u in graph.successors(node) if u in needed]

        cell_finals = users(c_seq) if c_seq else []
        if any(node_of(graph, u).op != "last" for u in cell_finals):
            return  # ONNX's LSTM gives only the last cell state, not the whole c sequence
        init = _initial_values(graph, states)
        if init is None:
            return
        source = node_of(graph, self.steps[0]).args[0]
        direction, outputs = "forward", [h_seq]
        reversed_back = users(h_seq)
        if node_of(graph, source).op == "reverse" and reversed_back and \
                all(node_of(graph, u).op == "reverse" for u in reversed_back):
            direction, outputs, source = "reverse", reversed_back, node_of(graph, source).args[0]
        lengths = next(n for n, d in nodes_of(graph)
                       if d.op == "lengths" and d.key == node_of(graph, h_seq).time)
        self.builtin = _BuiltinPlan(cell, direction, source, lengths, keys, int(params[keys[1]].shape[1]),
                                    init, outputs, cell_finals)


def _prelude_cell(cells: dict, graph, steps: list) -> Optional[str]:
    """The built-in cell a recurrence instantiates (its step input comes from that cell's
    input port), or None for a user's cell."""
    if len(steps) != 1:
        return None
    span = node_of(graph, steps[0]).span
    found = next((name for name, cell in cells.items() if cell.inputs and cell.inputs[0].span is span), None)
    return found if found in BUILT_IN_CELLS else None


def _initial_values(graph, states: dict) -> Optional[dict]:
    """State name -> the node of its given initial value, or None where it starts at zero
    (ONNX's default). The whole answer is None when a state starts from another constant,
    which ONNX's recurrent ops cannot take."""
    init = {}
    for state, prev in states.items():
        start = node_of(graph, node_of(graph, prev).args[1])
        if start.op != "state_init":
            init[state] = node_of(graph, prev).args[1]
        elif start.attrs.get("value", 0.0) != 0.0:
            return None
        else:
            init[state] = None
    return init


def _pair_directions(recurrences: list) -> None:
    """Join the forward and reverse halves of one ``direction = both`` layer."""
    forward = {(r.layer, r.scope): r for r in recurrences if r.builtin and r.builtin.direction == "forward"}
    for rec in recurrences:
        plan = rec.builtin
        if plan is None or plan.direction != "reverse" or not rec.scope.endswith("_reverse"):
            continue
        other = forward.get((rec.layer, rec.scope[:-len("_reverse")]))
        if other is None or other.partner is not None or other.builtin.source != plan.source \
                or other.builtin.cell != plan.cell or any(plan.init.values()) \
                or any(other.builtin.init.values()):
            continue
        # one op computes both; whichever half comes first in the order emits it (both
        # read the same sequence, so either place is after everything they need)
        other.partner, rec.partner = rec, other


def _without_delays(graph) -> nx.DiGraph:
    kept = nx.DiGraph()
    kept.add_nodes_from(graph.nodes)
    kept.add_edges_from((u, v) for u, v, d in graph.edges(data=True) if not d.get("delay"))
    return kept


# --- one translation per op -------------------------------------------------------------------


class _Context:
    """What a translation sees: the emitter, the node's data and its arguments' data."""

    def __init__(self, exporter: _Exporter, em: _Emitter, node, data, arg_data):
        self.exporter, self.em, self.node, self.data, self.arg_data = exporter, em, node, data, arg_data
        self.attrs = data.attrs

    def op(self, op_type, inputs, **attrs) -> str:
        return self.em.op(op_type, inputs, str(self.node), **attrs)

    def scalar(self, value) -> str:
        return self.em.constant(numpy.asarray(value, dtype=self.exporter.dtype), "scalar")

    def lead(self, index: Optional[int] = None) -> int:
        return _leading_axes(self.data if index is None else self.arg_data[index])

    def valid_steps(self, lengths: str, sequence: str, features: int) -> str:
        """The boolean mask ``t < lengths[b]`` of shape (T, B, 1, ...) with ``features`` ones."""
        em = self.em

        def make():
            steps = em.op("Shape", [sequence], "steps", start=0, end=1)
            count = em.op("Squeeze", [steps, em.ints([0])], "steps")
            times = em.op("Range", [em.constant(numpy.int64(0)), count, em.constant(numpy.int64(1))], "t")
            return em.op("Less", [em.op("Unsqueeze", [times, em.ints([1])], "t"),
                                  em.op("Unsqueeze", [lengths, em.ints([0])], "lengths")], "valid")
        mask = em.once(("valid", lengths, sequence), make)
        if features == 0:
            return mask
        return em.op("Unsqueeze", [mask, em.ints(range(2, 2 + features))], "valid")


def _simple(op_type: str):
    return lambda cx, *args: cx.op(op_type, args)


def _const(cx):
    return cx.scalar(cx.attrs.get("value", 0.0))


def _matmul(cx, w, x):
    """W x for each example is x W^T: ONNX's MatMul broadcasts over the leading axes."""
    wt = cx.em.root.once(("transposed", w), lambda: cx.em.root.op("Transpose", [w], f"{w}.T", perm=[1, 0]))
    return cx.op("MatMul", [x, wt])


def _affine(cx, w, b, x):
    return cx.op("Add", [_matmul(cx, w, x), b])


def _reshaped(cx, x):
    """Reshape/flatten: the leading axes kept, the feature axes as the node's shape says."""
    lead = cx.lead()
    features = cx.em.ints(cx.data.shape)
    if lead == 0:
        return cx.op("Reshape", [x, features])
    kept = cx.em.op("Shape", [x], "lead", start=0, end=lead)
    return cx.op("Reshape", [x, cx.em.op("Concat", [kept, features], "shape", axis=0)])


def _transpose(cx, x, axes=None):
    axes = cx.attrs["axes"]
    rank = cx.lead(0) + len(cx.arg_data[0].shape)
    perm = list(range(rank - len(axes))) + [rank + a for a in axes]
    return cx.op("Transpose", [x], perm=perm)


def _reduce(op_type: str):
    def translate(cx, x):
        axes = cx.attrs["axis"]
        axes = list(axes) if isinstance(axes, (tuple, list)) else [axes]
        return cx.op(op_type, [x, cx.em.ints(axes)], keepdims=0)
    return translate


def _along(op_type: str):
    return lambda cx, x: cx.op(op_type, [x], axis=cx.attrs.get("axis", -1))


def _concat(cx, *xs):
    return cx.op("Concat", xs, axis=cx.attrs.get("axis", -1))


def _slice(cx, x):
    em = cx.em
    return cx.op("Slice", [x, em.ints([cx.attrs["start"]]), em.ints([cx.attrs["stop"]]),
                           em.ints([cx.attrs.get("axis", -1)])])


def _embedding(cx, ids, table):
    return cx.op("Gather", [table, ids], axis=0)


def _first(cx, x):
    return cx.op("Gather", [x, cx.em.constant(numpy.int64(0))], axis=0)


def _last(cx, x, lengths):
    """out[b] = x[lengths[b] - 1, b]: gathered batch by batch from x with batch first."""
    em = cx.em
    rank = 2 + len(cx.arg_data[0].shape)
    batch_first = em.op("Transpose", [x], "batch_first", perm=[1, 0] + list(range(2, rank)))
    index = em.op("Sub", [lengths, em.constant(numpy.int64(1))], "last_step")
    return cx.op("GatherND", [batch_first, em.op("Unsqueeze", [index, em.ints([1])], "last_step")],
                 batch_dims=1)


def _reverse(cx, x, lengths):
    return cx.op("ReverseSequence", [x, lengths], batch_axis=1, time_axis=0)


def _max_over_time(cx, x, lengths):
    mask = cx.valid_steps(lengths, x, len(cx.data.shape))
    masked = cx.op("Where", [mask, x, cx.scalar(-numpy.inf)])
    return cx.op("ReduceMax", [masked, cx.em.ints([0])], keepdims=0)


def _mean_over_time(cx, x, lengths):
    features = len(cx.data.shape)
    mask = cx.valid_steps(lengths, x, features)
    total = cx.op("ReduceSum", [cx.op("Where", [mask, x, cx.scalar(0.0)]), cx.em.ints([0])], keepdims=0)
    count = cx.op("Cast", [lengths], to=cx.exporter._elem_type("float"))
    if features:
        count = cx.op("Unsqueeze", [count, cx.em.ints(range(1, 1 + features))])
    return cx.op("Div", [total, count])


def _attention(cx, query, memory, lengths):
    """softmax over the valid memory steps of query . memory, then the weighted memory."""
    em = cx.em
    valid = cx.op("Transpose", [cx.valid_steps(lengths, memory, 0)], perm=[1, 0])  # (B, Tm)
    mem = cx.op("Transpose", [memory], perm=[1, 0, 2])  # (B, Tm, D)
    mem = cx.op("Where", [em.op("Unsqueeze", [valid, em.ints([2])], "valid"), mem, cx.scalar(0.0)])
    keys = cx.op("Transpose", [mem], perm=[0, 2, 1])  # (B, D, Tm)
    scores = cx.op("MatMul", [cx.op("Unsqueeze", [query, em.ints([-2])]), keys])  # (..., B, 1, Tm)
    scores = cx.op("Squeeze", [scores, em.ints([-2])])
    weights = cx.op("Softmax", [cx.op("Where", [valid, scores, cx.scalar(-numpy.inf)])], axis=-1)
    mixed = cx.op("MatMul", [cx.op("Unsqueeze", [weights, em.ints([-2])]), mem])
    return cx.op("Squeeze", [mixed, em.ints([-2])])


def _pair(value, count: int) -> list:
    return list(value) if isinstance(value, (tuple, list)) else [int(value)] * count


def _conv(spatial: int):
    def translate(cx, x, w, b):
        if cx.lead(0) != 1:
            raise _unsupported(cx.data, "ONNX's Conv takes one batch axis; this input has "
                                        f"{cx.lead(0)} leading axes")
        pad = _pair(cx.attrs.get("pad", 0), spatial)
        return cx.op("Conv", [x, w, b], strides=_pair(cx.attrs.get("stride", 1), spatial), pads=pad + pad)
    return translate


def _pool(op_type: str, dilated: bool):
    """MaxPool (``dilated``: it has PyTorch's dilation) or AveragePool (it has
    count_include_pad instead), ceil_mode either way."""
    def translate(cx, x):
        if cx.lead(0) != 1:
            raise _unsupported(cx.data, f"ONNX's {op_type} takes one batch axis; this input has "
                                        f"{cx.lead(0)} leading axes")
        attrs = cx.attrs
        options = {"ceil_mode": int(bool(attrs.get("ceil_mode", False)))}
        if dilated:
            options["dilations"] = _pair(attrs.get("dilation", 1), 2)
        else:
            options["count_include_pad"] = int(bool(attrs.get("count_include_pad", True)))
        pad = _pair(attrs.get("pad", 0), 2)
        return cx.op(op_type, [x], kernel_shape=_pair(attrs["kernel"], 2),
                     strides=_pair(attrs.get("stride") or attrs["kernel"], 2), pads=pad + pad, **options)
    return translate


def _along_time(cx, x, lengths, fill, kernel: int, window):
    """A window op along a sequence's time axis, each sequence alone: x (T, B, C) with its
    padded steps set to ``fill`` and PyTorch's 'same' padding of ``fill`` added (the smaller
    half before), as (B, C, T') for ``window(image, **geometry)`` (stride 1, no padding of
    its own: onnx's reference evaluator fails on padded pools), whose (B, C', T) result comes
    back as (T, B, C') with its padded steps 0."""
    from .ops.temporal import same_padding
    if cx.lead(0) != 2:
        raise _unsupported(cx.data, "it runs along the time axis of a whole sequence")
    valid = cx.valid_steps(lengths, x, 1)
    dilation = int(cx.attrs.get("dilation", 1))
    before, after = same_padding(int(kernel), dilation)
    filled = cx.op("Where", [valid, x, cx.scalar(fill)])
    padded = cx.op("Pad", [filled, cx.em.ints([before, 0, 0, after, 0, 0]), cx.scalar(fill)])
    geometry = dict(strides=[1], dilations=[dilation]) if dilation != 1 else dict(strides=[1])
    out = window(cx.op("Transpose", [padded], perm=[1, 2, 0]), **geometry)
    return cx.op("Where", [valid, cx.op("Transpose", [out], perm=[2, 0, 1]), cx.scalar(0.0)])


def _time_conv1d(cx, x, w, b, lengths):
    return _along_time(cx, x, lengths, 0.0, cx.arg_data[1].shape[2],
                       lambda image, **geometry: cx.op("Conv", [image, w, b], **geometry))


def _time_maxpool(cx, x, lengths):
    kernel = int(cx.attrs["kernel"])
    return _along_time(cx, x, lengths, -numpy.inf, kernel, lambda image, **geometry: cx.op(
        "MaxPool", [image], kernel_shape=[kernel], **geometry))


def _time_avgpool(cx, x, lengths):
    """The window's mean with padding counted, or, without ``count_include_pad``, over its
    steps inside the sequence: the mean over the share of valid steps (at least one step's
    share: a padded step's window may hold none, and seqgraph counts it as 1)."""
    kernel = int(cx.attrs["kernel"])

    def mean(image, **geometry):
        return cx.op("AveragePool", [image], kernel_shape=[kernel], **geometry)

    total = _along_time(cx, x, lengths, 0.0, kernel, mean)
    if cx.attrs.get("count_include_pad"):
        return total
    ones = cx.op("Cast", [cx.valid_steps(lengths, x, 1)], to=cx.exporter._elem_type("float"))
    share = _along_time(cx, ones, lengths, 0.0, kernel, mean)
    return cx.op("Div", [total, cx.op("Max", [share, cx.scalar(1.0 / kernel)])])


def _dropout_mask(cx, x):
    return cx.scalar(1.0)  # an exported model runs for inference: dropout is the identity


def _training_flag(cx):
    return cx.scalar(0.0)  # an exported model evaluates: batch_norm uses its running statistics


def _batch_norm(cx, x, running_mean, running_var, training):
    """ONNX's BatchNormalization in inference mode, with unit scale and zero bias (the layer's
    own weight and bias are separate ops). eps joins the variance as a constant: the epsilon
    attribute, a float32, would round it in a float64 model."""
    channels = cx.arg_data[0].shape[0]
    dtype = cx.exporter.dtype
    scale = cx.em.constant(numpy.ones(channels, dtype=dtype), "ones")
    bias = cx.em.constant(numpy.zeros(channels, dtype=dtype), "zeros")
    variance = cx.op("Add", [running_var, cx.scalar(cx.attrs.get("eps", 1e-5))])
    return cx.op("BatchNormalization", [x, scale, bias, running_mean, variance], epsilon=0.0)


def _layer_norm(cx, x):
    """(x - mean) / sqrt(var + eps) over the last axis, as reductions (LayerNormalization's
    epsilon attribute, a float32, would round eps in a float64 model)."""
    last = cx.em.ints([-1])
    centred = cx.op("Sub", [x, cx.op("ReduceMean", [x, last])])
    variance = cx.op("ReduceMean", [cx.op("Mul", [centred, centred]), last])
    return cx.op("Div", [centred, cx.op("Sqrt", [cx.op("Add", [variance, cx.scalar(cx.attrs.get("eps", 1e-5))])])])


def _compare(op_type: str, negate: bool = False):
    """A comparison as 1.0 or 0.0 in the model's float type."""
    def translate(cx, a, b):
        truth = cx.op(op_type, [a, b])
        if negate:
            truth = cx.op("Not", [truth])
        return cx.op("Cast", [truth], to=cx.exporter._elem_type("float"))
    return translate


def _where(cx, cond, a, b):
    return cx.op("Where", [cx.op("Cast", [cond], to=cx.exporter.onnx.TensorProto.BOOL), a, b])


def _clip(low: tuple, high: tuple):
    """Clip to the bounds given by attributes, ``low`` and ``high`` each a pair of the
    attribute's name and its default (a bound of None is no bound)."""
    def translate(cx, x):
        bounds = [cx.attrs.get(name, default) for name, default in (low, high)]
        return cx.op("Clip", [x] + ["" if bound is None else cx.scalar(bound) for bound in bounds])
    return translate


def _pow(cx, x):
    return cx.op("Pow", [x, cx.scalar(cx.attrs.get("exponent", 2.0))])


def _softplus(cx, x):
    """log(1 + exp(beta x)) / beta, x itself where beta x > threshold (PyTorch's rule)."""
    beta = cx.attrs.get("beta", 1.0)
    z = cx.op("Mul", [x, cx.scalar(beta)])
    smooth = cx.op("Div", [cx.op("Softplus", [z]), cx.scalar(beta)])
    return cx.op("Where", [cx.op("Greater", [z, cx.scalar(cx.attrs.get("threshold", 20.0))]), x, smooth])


def _gelu(cx, x):
    """0.5 x (1 + erf(x / sqrt 2)), or PyTorch's tanh form (opset 18 has no Gelu op)."""
    from .ops.pointwise import GELU_CUBIC, SQRT_2_OVER_PI, SQRT_HALF
    if cx.attrs.get("approximate", "none") == "tanh":
        cube = cx.op("Mul", [cx.op("Mul", [x, x]), x])
        inner = cx.op("Mul", [cx.op("Add", [x, cx.op("Mul", [cube, cx.scalar(GELU_CUBIC)])]),
                              cx.scalar(SQRT_2_OVER_PI)])
        curve = cx.op("Tanh", [inner])
    else:
        curve = cx.op("Erf", [cx.op("Mul", [x, cx.scalar(SQRT_HALF)])])
    return cx.op("Mul", [cx.op("Mul", [x, cx.scalar(0.5)]), cx.op("Add", [curve, cx.scalar(1.0)])])


def _leaky_relu(cx, x):
    """x where x > 0, else slope x: a Where, since LeakyRelu's alpha, a float attribute, would
    round the slope to float32."""
    slope = cx.scalar(cx.attrs.get("negative_slope", 0.01))
    return cx.op("Where", [cx.op("Greater", [x, cx.scalar(0.0)]), x, cx.op("Mul", [x, slope])])


TRANSLATIONS = {
    "add": _simple("Add"), "sub": _simple("Sub"), "mul": _simple("Mul"), "div": _simple("Div"),
    "maximum": _simple("Max"), "neg": _simple("Neg"), "sigmoid": _simple("Sigmoid"),
    "tanh": _simple("Tanh"), "relu": _simple("Relu"), "exp": _simple("Exp"), "log": _simple("Log"),
    "const": _const, "matmul": _matmul, "affine": _affine, "concat": _concat, "slice": _slice,
    "reshape": _reshaped, "flatten": _reshaped, "transpose": _transpose,
    "sum": _reduce("ReduceSum"), "mean": _reduce("ReduceMean"),
    "softmax": _along("Softmax"), "log_softmax": _along("LogSoftmax"),
    "embedding": _embedding, "first": _first, "last": _last, "reverse": _reverse,
    "max_over_time": _max_over_time, "mean_over_time": _mean_over_time, "attention": _attention,
    "conv2d": _conv(2), "conv1d": _conv(1),
    "maxpool2d": _pool("MaxPool", dilated=True), "avgpool2d": _pool("AveragePool", dilated=False),
    "dropout_mask": _dropout_mask, "training_flag": _training_flag, "batch_norm": _batch_norm,
    "layer_norm": _layer_norm,
    "time_conv1d": _time_conv1d, "time_maxpool": _time_maxpool, "time_avgpool": _time_avgpool,
    "sqrt": _simple("Sqrt"), "abs": _simple("Abs"), "pow": _pow, "minimum": _simple("Min"),
    "clamp": _clip(("min", None), ("max", None)), "hardtanh": _clip(("min_val", -1.0), ("max_val", 1.0)),
    "greater": _compare("Greater"), "less": _compare("Less"), "greater_equal": _compare("GreaterOrEqual"),
    "less_equal": _compare("LessOrEqual"), "equal": _compare("Equal"),
    "not_equal": _compare("Equal", negate=True), "where": _where,
    "softplus": _softplus, "gelu": _gelu, "leaky_relu": _leaky_relu,
}
