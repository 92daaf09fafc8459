"""Looking inside a running network: find nodes, then read their values and gradients.

A :class:`Probe` runs a network's *reference executor*, which evaluates the unrolled graph
node by node and keeps every intermediate value and every cotangent, and lets you ask for
them by the names you wrote::

    net = seqgraph.compile(model, dtype="float64")
    probe = seqgraph.Probe(net)
    probe.forward({"x": x, "y": y})     # the same arguments and outputs as net.forward
    probe.backward()                    # the same gradients as net.backward
    probe.value("lstm_0.c", step=5)     # c_t at t = 5, shape (B, H)
    probe.grad("lstm_0.c", step=5)      # dL/dc_t at t = 5
    probe.nodes(layer="lstm_0", op="sigmoid")   # node handles: .id .op .shape .span .rule ...

A node is named by (first match wins):

1. its node id in the folded graph (``lstm_0/add.3``, as ``seqgraph graph`` prints it);
2. an input, target or output name of the model (``x``, ``loss``, ``pred``);
3. a parameter key (``lstm_0.weight_hh``) or a recurrent state key (``lstm_0.c``: the
   state's new value at each step);
4. ``layer.variable``: a variable of a cell's source, in one layer (``PeepholeLSTM_0.f``,
   ``lstm_0.h[t-1]``);
5. a variable of the model's source (``e``, ``logits``); a shadowed name means its last
   assignment, as it does at the end of the model.

``step`` picks one time step of a per-step node (or of a sequence, ``(T, B, ...)``, which
is then indexed); without it a per-step node's values come stacked over all steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import networkx as nx

from . import inspection
from .errors import SeqgraphError, Span, did_you_mean
from .graph import step_id
from .ir import base_of, node_of, nodes_of


@dataclass(frozen=True)
class NodeInfo:
    """One node of the folded graph, or (with ``step``) its copy at one time step.

    ``id`` is the node's id in its graph (``lstm_0/add.3``, or ``lstm_0/add.3@5`` for a
    per-step node's copy at step 5); ``base`` the folded node it copies."""

    id: str
    base: str
    op: str
    layer: Optional[str]
    name: Optional[str]
    shape: tuple
    type: str
    span: Optional[Span]
    rule: str
    timed: bool
    step: Optional[int] = None

    @property
    def source_line(self) -> str:
        """The line of source the node comes from ('' when it was made by seqgraph)."""
        return self.span.source.line(self.span.line).strip() if self.span else ""

    def __str__(self) -> str:
        label = f" ({self.name})" if self.name else ""
        return f"{self.id}{label}: {self.op}, {self.type}, rule: {self.rule}"


Ref = Union[str, NodeInfo]


class Probe:
    """Values and gradients of every node of ``network``'s unrolled graph, by name and step
    (see the module docstring)."""

    def __init__(self, network):
        self.network = network
        self.model = network.model
        self.reference = network.reference()
        self._seeded: Optional[list] = None  # the output nodes the last backward run started from

    # --- running ---------------------------------------------------------------------------

    def forward(self, inputs: dict, lengths=None, state: Optional[dict] = None, training: bool = False) -> dict:
        """Run the reference executor; returns the named outputs, like ``Network.forward``."""
        self._seeded = None
        rng = self.network.rng if training else None
        return self.reference.forward(inputs, lengths, state, training, rng)

    def backward(self, cotangents: Optional[dict] = None) -> dict:
        """Backpropagate through the unrolled graph; returns what ``Network.backward`` does
        (gradients by parameter key and float input name)."""
        if self.reference.graph is None:
            raise SeqgraphError("call probe.forward(...) before probe.backward()")
        grads = self.reference.backward(cotangents)
        self._seeded = [self.model.outputs[name] for name in self.network.seeds(cotangents)]
        return grads

    @property
    def steps(self) -> dict:
        """Time axis -> number of steps of the last forward run."""
        return dict(self._unrolled().graph.get("steps") or {})

    # --- finding nodes ---------------------------------------------------------------------

    def node(self, ref: Ref, step: Optional[int] = None) -> NodeInfo:
        """The node ``ref`` names (see the module docstring), at ``step`` if given."""
        if isinstance(ref, NodeInfo):
            node_id, step = ref.base, ref.step if step is None else step
        else:
            node_id = self._resolve(ref)
        if step is not None and node_of(self.model.graph, node_id).timed:
            self._check_step(node_id, step)
            return self._info(self._unrolled(), step_id(node_id, step))
        return self._info(self.model.graph, node_id, step)

    def nodes(self, layer: Optional[str] = None, op: Optional[str] = None, name: Optional[str] = None,
              step: Optional[int] = None) -> list:
        """The nodes of one layer, op and/or source variable name, in the order they are
        computed: of the folded graph, or with ``step`` the per-step nodes' copies at that step."""
        folded = self.model.graph
        chosen = inspection.layer_nodes(folded, layer) if layer is not None else set(folded.nodes)
        if op is not None:
            ops = {data.op for _, data in nodes_of(folded)}
            if op not in ops:
                raise SeqgraphError(f"no '{op}' node in model {self.model.name}", hint=did_you_mean(op, ops))
            chosen = {n for n in chosen if node_of(folded, n).op == op}
        if name is not None:
            chosen = {n for n in chosen if node_of(folded, n).name == name}
        order = [n for n in inspection.topological_order(folded) if n in chosen]
        if step is None:
            return [self._info(folded, n) for n in order]
        unrolled = self._unrolled()
        timed = [n for n in order if node_of(folded, n).timed]
        present = [n for n in timed if step_id(n, step) in unrolled]  # time axes may differ in length
        if timed and not present:
            self._check_step(timed[0], step)
        return [self._info(unrolled, step_id(n, step)) for n in present]

    # --- reading values and gradients ------------------------------------------------------

    def value(self, ref: Ref, step: Optional[int] = None):
        """The value of a node in the last forward run: ``(B, ...)`` at one step of a per-step
        node, ``(T, B, ...)`` for all its steps when ``step`` is None."""
        self._unrolled()
        return self._read(ref, step, self.reference.values.__getitem__)

    def grad(self, ref: Ref, step: Optional[int] = None):
        """d loss / d node (or the seeded vector-Jacobian product) in the last backward run,
        shaped like :meth:`value`; zeros where the loss does not depend on the node at all."""
        if self._seeded is None:
            raise SeqgraphError("call probe.backward() before reading gradients")
        return self._read(ref, step, self._grad_of)

    # --- helpers ---------------------------------------------------------------------------

    def _unrolled(self) -> nx.DiGraph:
        if self.reference.graph is None:
            raise SeqgraphError("call probe.forward(...) first: the number of steps comes from the inputs")
        return self.reference.graph

    def _references(self) -> dict:
        """Every name rules 2-5 of the module docstring know -> node id."""
        model, graph = self.model, self.model.graph
        known: dict = {}
        for node_id, data in nodes_of(graph):  # later assignments shadow earlier ones
            if data.name and not data.timed:
                known[data.name] = node_id
        for node_id, data in nodes_of(graph):
            if data.name and data.layer:
                qualified = f"{data.layer}.{data.name}"
                if data.timed or qualified not in known:
                    known[qualified] = node_id
        known.update(model.checked.params)
        known.update({key: node_of(graph, prev).args[0] for key, prev in model.checked.states.items()})
        known.update(model.inputs)
        known.update(model.outputs)
        return known

    def _resolve(self, ref: str) -> str:
        if ref in self.model.graph:
            return ref
        known = self._references()
        if ref not in known:
            raise SeqgraphError(f"model {self.model.name} has no node or variable '{ref}'",
                                hint=did_you_mean(ref, known) or "name a node id, an input or output, "
                                     "a parameter or state key, or layer.variable")
        return known[ref]

    def _check_step(self, node_id: str, step) -> None:
        axis = node_of(self.model.graph, node_id).time
        count = self.steps.get(axis, 1)
        if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < count:
            raise SeqgraphError(f"step {step} is out of range: the last run had {count} steps "
                                f"on time axis '{axis}' (0..{count - 1})")

    def _info(self, graph: nx.DiGraph, node_id: str, step: Optional[int] = None) -> NodeInfo:
        data = node_of(graph, node_id)
        return NodeInfo(id=node_id, base=base_of(graph, node_id), op=data.op, layer=data.layer,
                        name=data.name, shape=tuple(data.shape), type=inspection.describe_type(data),
                        span=data.span, rule=data.rule, timed=data.timed,
                        step=step if data.step is None else data.step)

    def _read(self, ref: Ref, step: Optional[int], lookup):
        """``lookup`` of the unrolled node(s) ``ref`` and ``step`` stand for."""
        info = self.node(ref, step)
        if info.timed:
            if info.step is not None:
                return lookup(info.id)
            count = self.steps[node_of(self.model.graph, info.base).time]
            return self.network.backend.xp.stack([lookup(step_id(info.base, t)) for t in range(count)])
        whole = lookup(info.id)
        if info.step is None:
            return whole
        if not node_of(self.model.graph, info.id).type.is_seq:
            raise SeqgraphError(f"'{info.id}' is neither per-step nor a sequence: read it without step=")
        self._check_step(info.id, info.step)
        return whole[info.step]

    def _grad_of(self, unrolled_id: str):
        grads, graph = self.reference.grads, self._unrolled()
        if grads.get(unrolled_id) is not None:
            return grads[unrolled_id]
        if node_of(graph, unrolled_id).dtype != "float":
            raise SeqgraphError(f"'{unrolled_id}' holds integers: it has no gradient")
        read = any(unrolled_id in nx.ancestors(graph, seed) for seed in self._seeded)
        depends = any(node_of(graph, n).op in ("param", "input")
                      for n in nx.ancestors(graph, unrolled_id) | {unrolled_id})
        if unrolled_id in grads or (read and depends):
            raise SeqgraphError(f"no gradient flows back into '{unrolled_id}': the ops reading it treat "
                                "it as a constant (as a loss treats its target)")
        if read:
            raise SeqgraphError(f"the gradient of '{unrolled_id}' is not computed: it depends on no "
                                "parameter or input")
        return self.network.backend.xp.zeros_like(self.reference.values[unrolled_id])
