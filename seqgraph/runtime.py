"""Running a model: the compiled network and, beside it, the reference executor.

:class:`Network` is what ``seqgraph.compile`` returns. Its forward and backward run the
compiled program of :mod:`seqgraph.compiler`. :class:`Reference` runs the *unrolled* graph
node by node and keeps every intermediate value: it defines what a model computes, and it
is the oracle every faster path is tested against.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Optional

import networkx as nx

from . import autodiff, faults, resources
from .backends import DEFAULT_BACKEND, Footprint, get_backend, ops_for
from .compiler import compile_program
from .errors import SeqgraphError, did_you_mean
from .init import initial_value
from .ir import FEED_OPS, PREV, node_of, nodes_of
from .ops import REGISTRY
from .parts import compile_part

DTYPES = ("float32", "float64")


@dataclass
class Feed:
    """The arrays a run starts from (inputs, lengths, initial states, dropout masks and the
    training flag), by node id."""
    arrays: dict
    steps: dict
    batch: int
    masks: dict


def prepare_feed(model, backend, dtype: str, inputs: dict, lengths=None, state=None,
                 training: bool = False, rng=None) -> Feed:
    """Check and convert what the caller passed; zero the padded steps of every sequence."""
    xp = backend.xp
    graph, checked = model.graph, model.checked
    declared = {**checked.inputs, **checked.targets}
    unknown = [name for name in inputs if name not in declared]
    if unknown:
        raise SeqgraphError(f"model {model.name} has no input '{unknown[0]}'",
                            hint=did_you_mean(unknown[0], declared))
    missing = [name for name in declared if name not in inputs]
    if missing:
        raise SeqgraphError(f"model {model.name} needs input '{missing[0]}'",
                            hint="inputs: " + ", ".join(declared))
    host = {name: backend.to_host(inputs[name]) for name in declared}
    steps, batch = _steps_and_batch(graph, declared, host)
    lengths = _lengths(checked, steps, batch, lengths, backend)
    arrays = {}
    for name, node in declared.items():
        vtype = node_of(graph, node).type
        array = host[name]
        if vtype.dtype == "int":
            array = array.astype("int64", copy=False)
            if vtype.bound is not None and array.size and (array.min() < 0 or array.max() >= vtype.bound):
                raise SeqgraphError(f"input '{name}' holds ids outside 0..{vtype.bound - 1} "
                                    f"(min {array.min()}, max {array.max()})")
        else:
            array = array.astype(dtype, copy=False)  # nothing writes into a feed's arrays
        array = backend.asarray(array)
        if vtype.is_seq:
            array = _zero_padding(xp, array, lengths[vtype.time])
        arrays[node] = array
    for axis, node in checked.time_axes.items():
        arrays[node] = lengths[axis]
    arrays.update(_initial_states(model, backend, dtype, batch, state or {}))
    masks = dropout_masks(graph, backend, dtype, steps, batch, training, rng)
    return Feed(arrays, steps, batch, masks)


def _steps_and_batch(graph, declared: dict, host: dict):
    steps, batch = {}, None
    for name, node in declared.items():
        vtype = node_of(graph, node).type
        array = host[name]
        lead = 2 if vtype.is_seq else 1
        want = len(vtype.shape) + lead
        if array.ndim != want:
            layout = "(T, B" + "".join(f", {d}" for d in vtype.shape) + ")" if vtype.is_seq else \
                "(B" + "".join(f", {d}" for d in vtype.shape) + ")"
            raise SeqgraphError(f"input '{name}' must have shape {layout}, got {tuple(array.shape)}")
        if tuple(array.shape[lead:]) != tuple(vtype.shape):
            raise SeqgraphError(f"input '{name}' has features {tuple(array.shape[lead:])}, "
                                f"expected {tuple(vtype.shape)}")
        if vtype.is_seq:
            axis = vtype.time
            if array.shape[0] == 0:
                raise SeqgraphError(f"input '{name}' has no time steps")
            if steps.setdefault(axis, array.shape[0]) != array.shape[0]:
                raise SeqgraphError(f"input '{name}' has {array.shape[0]} steps but other sequences "
                                    f"on time axis '{axis}' have {steps[axis]}")
        this_batch = array.shape[1] if vtype.is_seq else array.shape[0]
        if batch is None:
            batch = this_batch
        elif batch != this_batch:
            raise SeqgraphError(f"input '{name}' has batch {this_batch}, other inputs have {batch}")
    return steps, batch or 1


def _lengths(checked, steps: dict, batch: int, lengths, backend) -> dict:
    axes = list(checked.time_axes)
    if lengths is None:
        lengths = {}
    elif not isinstance(lengths, dict):
        if len(axes) != 1:
            raise SeqgraphError(f"this model has time axes {', '.join(axes)}: pass lengths as a dict")
        lengths = {axes[0]: lengths}
    result = {}
    for axis in axes:
        count = steps.get(axis, 1)
        given = lengths.get(axis)
        host = backend.to_host(given).astype("int64") if given is not None else None
        if host is None:
            result[axis] = backend.asarray([count] * batch, dtype="int64")
            continue
        if host.shape != (batch,):
            raise SeqgraphError(f"lengths for '{axis}' must have shape ({batch},), got {host.shape}")
        if host.min() < 1 or host.max() > count:
            raise SeqgraphError(f"lengths for '{axis}' must lie in 1..{count} (the padded length), "
                                f"got {host.min()}..{host.max()}")
        result[axis] = backend.asarray(host)
    return result


def _zero_padding(xp, array, lengths):
    if lengths.size == 0 or int(lengths.min()) >= array.shape[0]:
        return array  # nothing is padding
    valid = xp.arange(array.shape[0])[:, None] < lengths[None, :]
    valid = valid.reshape(valid.shape + (1,) * (array.ndim - 2))
    return xp.where(valid, array, xp.zeros((), dtype=array.dtype))


# per graph, the nodes a feed makes values for, by op, in the graph's order
_FED: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _fed_nodes(graph, op: str) -> list:
    """``(node, record)`` of every ``op`` node of ``graph`` (``state_init``, ``dropout_mask``,
    ``training_flag``) in the graph's order, found once per graph: a training step must not
    walk the graph."""
    found = _FED.setdefault(graph, {})
    if op not in found:
        found[op] = [(node, data) for node, data in nodes_of(graph) if data.op == op]
    return found[op]


def _initial_states(model, backend, dtype: str, batch: int, state: dict) -> dict:
    unknown = [key for key in state if key not in model.checked.states]
    if unknown:
        raise SeqgraphError(f"model {model.name} has no state '{unknown[0]}'",
                            hint=did_you_mean(unknown[0], model.checked.states))
    arrays = {}
    for node, data in _fed_nodes(model.graph, "state_init"):
        shape = (batch,) + tuple(data.shape)
        if data.attrs.get("fresh"):  # init = learned: 1 starts from the trained vector, 0 carries
            value = backend.xp.full(shape, 0.0 if data.key in state else 1.0, dtype=dtype)
        elif data.key in state:
            # no trip through the host: a state carried from the last window is on the device
            value = backend.asarray(state[data.key], dtype=dtype)
            if tuple(value.shape) != shape:
                raise SeqgraphError(f"state '{data.key}' must have shape {shape}, got {tuple(value.shape)}")
        else:
            value = backend.xp.full(shape, data.attrs["value"], dtype=dtype)
        arrays[node] = value
    return arrays


def dropout_masks(graph, backend, dtype: str, steps: dict, batch: int, training: bool, rng) -> dict:
    """One mask per dropout node for the whole run (all steps at once), so the compiled and the
    reference executor draw the same numbers; and the training flag batch_norm reads."""
    xp = backend.xp
    masks = {node: xp.full((), 1.0 if training else 0.0, dtype=dtype)  # what batch_norm reads
             for node, _ in _fed_nodes(graph, "training_flag")}
    for node, data in _fed_nodes(graph, "dropout_mask"):
        if not training:
            masks[node] = xp.ones((), dtype=dtype)
            continue
        shape = (batch,) + tuple(data.shape)
        if data.timed or data.type.is_seq:
            shape = (steps[data.time],) + shape
        template = xp.zeros(shape, dtype=dtype)
        masks[node] = REGISTRY["dropout_mask"].forward(xp, template, rng=rng, **data.attrs)
    return masks


class Reference:
    """Runs the unrolled graph node by node and keeps every value: the oracle.

    ``values`` maps every unrolled node id (``lstm_0/c@5``) to its value after
    :meth:`forward`; ``grads`` maps every node on a gradient path to its cotangent after
    :meth:`backward`.
    """

    def __init__(self, network: "Network"):
        self.network = network
        self.values: dict = {}
        self.grads: dict = {}
        self.graph: Optional[nx.DiGraph] = None

    def forward(self, inputs: dict, lengths=None, state=None, training: bool = False, rng=None) -> dict:
        """The named outputs, computed step by step on the unrolled graph."""
        net = self.network
        feed = prepare_feed(net.model, net.backend, net.dtype, inputs, lengths, state, training, rng)
        net.own_updated_params()
        self.graph = net.model.unroll(feed.steps or 1)
        xp = net.backend.xp
        values = {}
        for node in nx.topological_sort(self.graph):
            data = node_of(self.graph, node)
            values[node] = self.evaluate(xp, node, data, [values[a] for a in data.args], feed)
        self.values = values
        return {name: values[node] for name, node in net.model.outputs.items()}

    def evaluate(self, xp, node, data, inputs, feed: Feed):
        """The value of unrolled ``node`` (its record ``data``) from its ``inputs``' values."""
        op = data.op
        base = data.base
        if op in FEED_OPS:
            return feed.arrays[base]
        if op == "param":
            return self.network.params[data.key]
        if op == PREV:
            return inputs[0]
        if op == "training_flag":
            return feed.masks[base]
        if op == "dropout_mask":
            mask = feed.masks[base]
            return mask[data.step] if data.timed and mask.ndim else mask
        if op == "const":
            return REGISTRY["const"].forward(xp, dtype=self.network.dtype, **data.attrs)
        return ops_for(xp)[op].forward(xp, *inputs, **data.attrs)

    def backward(self, cotangents: Optional[dict] = None) -> dict:
        """d(loss or seeded outputs)/d(every parameter and float input), through the unrolled graph."""
        net = self.network
        seeds = net.seeds(cotangents)
        graph = self.graph
        wrt = _wrt_nodes(net.model, graph)
        backward = autodiff.gradient_graph(graph, [net.model.outputs[n] for n in seeds], wrt.values())
        seed_values = {net.model.outputs[n]: v for n, v in seeds.items()}
        self.grads = autodiff.run_gradient_graph(net.backend.xp, backward, graph, self.values, seed_values)
        return net.collect_grads(self.grads, wrt, seed_values.values())


def updated_params(model) -> list:
    """The keys of the parameters an op's forward writes new values into (``Op.updates``:
    batch_norm's running statistics)."""
    graph = model.graph
    keys = []
    for _, data in nodes_of(graph):
        op = REGISTRY.get(data.op)
        for port in op.updates if op is not None else ():
            source = node_of(graph, data.args[port])
            if source.op == "param" and source.key not in keys:
                keys.append(source.key)
    return keys


def _wrt_nodes(model, graph) -> dict:
    """Parameter keys and float input names → node ids. A parameter no gradient reaches from
    the model's outputs (batch_norm's running statistics, a teacher's weights seen only as
    soft targets) is not trained: left out."""
    reached = autodiff.reaching(graph, model.outputs.values())
    wrt = {key: node for key, node in model.checked.params.items() if node in reached}
    for name, node in {**model.checked.inputs, **model.checked.targets}.items():
        if node_of(graph, node).dtype == "float":
            wrt[name] = node
    return wrt


class Network:
    """A compiled model with its parameters: ``forward``, ``backward``, ``params``."""

    def __init__(self, model, backend: str = DEFAULT_BACKEND, dtype: str = "float32", seed: int = 0):
        if dtype not in DTYPES:
            raise SeqgraphError(f"unknown dtype '{dtype}'", hint="use float32 or float64")
        self.model = model
        self.backend = get_backend(backend)
        self.dtype = dtype
        self.seed = seed
        needed = resources.require_fit(resources.estimate(model, dtype=dtype, training=False), self.backend)
        with resources.memory_errors(needed):
            self.params = {key: self.backend.asarray(initial_value(key, shape, init, seed), dtype)
                           for key, (shape, init) in model.params.items()}
        self._owned = {key: self.params[key] for key in updated_params(model)}
        self.program = compile_program(model.graph, model.checked)
        self._rng = None
        self._run = None
        self._overwritten = frozenset()
        self.final_states: dict = {}
        self._parts: dict = {}  # compiled parts of the model (predict, decoders), by what they are for
        self._wrt = _wrt_nodes(model, model.graph)  # found once: a training step must not walk the graph

    @property
    def rng(self):
        """The generator dropout masks are drawn from (seeded from the network's seed)."""
        if self._rng is None:
            import numpy
            self._rng = numpy.random.default_rng(self.seed + 1)
        return self._rng

    def forward(self, inputs: dict, lengths=None, state: Optional[dict] = None, training: bool = False) -> dict:
        """Run the model: named outputs (``loss`` among them). ``lengths`` gives the valid steps
        of each sequence; ``state`` initial recurrent states by key (``lstm_0.h``); with
        ``training`` dropout is active."""
        feed = prepare_feed(self.model, self.backend, self.dtype, inputs, lengths, state, training,
                            self.rng if training else None)
        self.own_updated_params()
        self._run = None  # the last run's values go before this run's are made, not after
        self._run = self.program.forward(self.backend.xp, feed, self.params, self.dtype)
        self._overwritten = frozenset()
        self.final_states = {key: self._run.env[node] for key, node in self.model.checked.final_states.items()}
        return {name: self._run.env[node] for name, node in self.model.outputs.items()}

    def own_updated_params(self) -> None:
        """Make each parameter a forward writes new values into (batch_norm's running
        statistics, see ``Op.updates``) an array of this network's own: one a caller put
        into ``params`` is copied once, so that a forward never writes into it."""
        for key, owned in self._owned.items():
            if self.params[key] is not owned:
                self.params[key] = self._owned[key] = self.backend.asarray(self.params[key], self.dtype).copy()

    def predict(self, inputs: dict, lengths=None, outputs=None) -> dict:
        """The named outputs for ``inputs`` alone: no targets and no loss are needed (nor
        computed). ``outputs`` names the ones wanted; by default every output that needs no
        target."""
        part = self._predictor(tuple(outputs) if outputs is not None else None)
        feed = prepare_feed(part, self.backend, self.dtype, inputs, lengths)
        run = part.program.forward(self.backend.xp, feed, self.params, self.dtype)
        return {name: run.env[node] for name, node in part.checked.outputs.items()}

    def _predictor(self, names):
        """The compiled part behind :meth:`predict` for these output names (made once)."""
        if names not in self._parts:
            model = self.model
            targets = set(model.checked.targets.values())
            free = {name: node for name, node in model.outputs.items()
                    if not targets & (nx.ancestors(model.graph, node) | {node})}
            for name in names or ():
                if name not in free:
                    why = "it needs a target" if name in model.outputs else "there is no such output"
                    raise SeqgraphError(f"cannot predict '{name}': {why}",
                                        hint=did_you_mean(name, model.outputs) or "outputs without "
                                        "targets: " + ", ".join(free))
            self._parts[names] = compile_part(model, {n: free[n] for n in names} if names else free)
        return self._parts[names]

    def decoder(self, feedback: Optional[str] = None):
        """The compiled :class:`~seqgraph.generate.Decoder` of the fed-back input ``feedback``
        (the only one by default), made once."""
        from .generate import Decoder
        key = ("decoder", feedback)
        if key not in self._parts:
            self._parts[key] = Decoder(self, feedback)
        return self._parts[key]

    def generate(self, inputs: Optional[dict] = None, lengths=None, **options):
        """Decode with output feedback (greedy, sampled or beam search): see
        :func:`seqgraph.generate.generate` for the options."""
        from .generate import generate
        return generate(self, inputs or {}, lengths, **options)

    def value(self, node: str):
        """The value of folded-graph node ``node`` in the last forward run (whole sequences
        for per-step nodes). ``backward()`` reuses the buffers of values no gradient rule
        reads; asking for one of those afterwards is an error rather than a wrong answer."""
        if self._run is None:
            raise SeqgraphError("call forward() first")
        if node in self._overwritten:
            raise SeqgraphError(f"backward() reused the buffer of '{node}' for its gradient",
                                hint="read the value between forward() and backward(), or use "
                                     "net.reference() (or sg.Probe), which keeps every value")
        if node not in self._run.env:
            raise SeqgraphError(f"the compiled program does not keep the value of '{node}'",
                                hint="values inside a recurrence live for one step only unless "
                                     "something reads them later, and a recurrence writes over an "
                                     "input projection only it reads; net.reference() keeps every value")
        return self._run.env[node]

    def first_nonfinite(self):
        """Where the last forward run first produced NaN or inf (else its loss gradient): a
        :class:`~seqgraph.faults.Fault` naming the node, op, layer, source line and time
        step, or None. See :mod:`seqgraph.faults`."""
        return faults.first_nonfinite(self)

    def seeds(self, cotangents: Optional[dict]) -> dict:
        """Output name → cotangent: 1 for the loss by default."""
        xp = self.backend.xp
        if cotangents is None:
            if "loss" not in self.model.outputs:
                self.model.require_loss()
            return {"loss": xp.ones((), dtype=self.dtype)}
        unknown = [n for n in cotangents if n not in self.model.outputs]
        if unknown:
            raise SeqgraphError(f"no output '{unknown[0]}' to seed", hint=did_you_mean(unknown[0], self.model.outputs))
        return {n: self.backend.asarray(v, self.dtype) for n, v in cotangents.items()}

    def backward(self, cotangents: Optional[dict] = None, wrt=None) -> dict:
        """Gradients of the loss (or a vector-Jacobian product seeded at named outputs) with
        respect to every parameter key and every float input name, or only to the names in
        ``wrt`` (a training step wants the parameters' alone, and skips the rest's work)."""
        if self._run is None:
            raise SeqgraphError("call forward() before backward()")
        seeds = self.seeds(cotangents)
        names = self._wrt
        if wrt is not None:
            unknown = [name for name in wrt if name not in names and name not in self.params]
            if unknown:
                raise SeqgraphError(f"no parameter or float input '{unknown[0]}' to differentiate by",
                                    hint=did_you_mean(unknown[0], names))
            names = {name: names[name] for name in wrt if name in names}  # state has no gradient
        grads = self.program.backward(self.backend.xp, self._run,
                                      {self.model.outputs[n]: v for n, v in seeds.items()},
                                      None if wrt is None else set(names.values()))
        self._overwritten = self.program.spent
        return self.collect_grads(grads, names, seeds.values())

    def collect_grads(self, grads: dict, wrt: dict, held=()) -> dict:
        """Gradients by parameter key and input name (zeros where nothing flows), each an
        array of its own, apart from one another and from the caller's arrays ``held`` (its
        cotangents): a rule may hand one cotangent to two inputs (``add`` does, to an LSTM's
        ``bias_ih`` and ``bias_hh``, or an output's to an input), and callers such as
        clipping scale each gradient in place."""
        xp = self.backend.xp
        taken = Footprint(xp, held)  # one search per gradient, not a check against each other
        result = {}
        for name, node in wrt.items():
            grad = grads.get(node)
            if grad is None:
                shape = self.params[name].shape if name in self.params else None
                grad = xp.zeros(shape, dtype=self.dtype) if shape is not None else None
            elif taken.overlaps(grad):
                grad = grad.copy()
            if grad is not None:
                taken.add(grad)
                result[name] = grad
        return result

    @property
    def trained(self) -> list:
        """The keys of the parameters a gradient reaches (the others are state, or frozen)."""
        return [key for key in self._wrt if key in self.params]

    def reference(self) -> Reference:
        """A reference executor sharing this network's parameters."""
        return Reference(self)

    def export_onnx(self, path=None, recurrent_ops: bool = True):
        """The forward graph with the current parameters as an ONNX model (an
        ``onnx.ModelProto``), written to ``path`` when given; see :mod:`seqgraph.onnx_export`.
        Needs the ``export`` extra."""
        from .onnx_export import export_onnx
        return export_onnx(self, path, recurrent_ops=recurrent_ops)


def compile_model(model, backend: str = DEFAULT_BACKEND, dtype: str = "float32", seed: int = 0, **sizes) -> Network:
    """``seqgraph.compile``: a :class:`Network` for ``model`` (sizes given here override its defaults)."""
    if sizes:
        model = model.with_sizes(**sizes)
    return Network(model, backend=backend, dtype=dtype, seed=seed)
