"""Gradient checks: analytic gradients against central finite differences, in float64.

:func:`check_model` compares the compiled network's gradient of the loss with central
differences along random directions, one per parameter and float input. When they disagree
it finds the culprit: it re-runs the reference executor and checks each unrolled node's
local rule on the values it actually saw, reporting the first node (and time step) whose
vector-Jacobian product disagrees with finite differences of its forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy
import networkx as nx

from . import autodiff
from .autodiff import local_vjp
from .ir import PREV, node_of
from .ops import REGISTRY


@dataclass
class GradCheck:
    """The outcome: the worst relative error, where it was, and the culprit node if any."""
    worst_error: float
    worst_name: str
    errors: dict
    culprit: Optional[str] = None

    def ok(self, tolerance: float = 1e-6) -> bool:
        """Whether every gradient agreed within ``tolerance``."""
        return self.worst_error <= tolerance


def random_inputs(model, batch: int = 2, steps=3, seed: int = 0, ragged: bool = False):
    """Random inputs for every input and target of ``model``, and their lengths.

    ``steps`` is an int or a dict per time axis; with ``ragged`` the last sequence of each
    axis is one step shorter than the rest.
    """
    rng = numpy.random.default_rng(seed)
    graph = model.graph
    inputs, lengths = {}, {}
    for name, node in model.inputs.items():
        vtype = node_of(graph, node).type
        lead = (batch,)
        if vtype.is_seq:
            count = steps[vtype.time] if isinstance(steps, dict) else steps
            lead = (count, batch)
            lengths[vtype.time] = numpy.full(batch, count)
            if ragged and count > 1:
                lengths[vtype.time][-1] = count - 1
        shape = lead + tuple(vtype.shape)
        if vtype.dtype == "int":
            inputs[name] = rng.integers(0, vtype.bound, size=shape)
        else:
            inputs[name] = rng.normal(size=shape)
    return inputs, lengths


def _relative(a: float, b: float, floor: float = 1e-8) -> float:
    return abs(a - b) / max(abs(a), abs(b), floor)


def _noise_floor(loss: float, eps: float) -> float:
    """The smallest directional derivative central differences at ``eps`` can tell from 0:
    rounding in a float64 loss (about 1e-14 relative, after its sums) divided by ``eps``,
    with room for a tolerance of 1e-6. A gradient that is 0 in truth (a loss unchanged by a
    parameter, such as a shift of every logit before a softmax) differs from its differences
    only by that noise, and passes."""
    return max(1e-8, 1e-8 * abs(loss) / eps)


def _richardson(along, eps: float) -> float:
    """The derivative of ``along`` at 0 from central differences at ``eps`` and ``eps/2``,
    combined so the h^2 error terms cancel: accurate to O(eps^4), which lets ``eps`` be large
    enough that rounding in the loss does not swamp a small directional derivative."""
    def central(h):
        return (along(h) - along(-h)) / (2 * h)

    return (4 * central(eps / 2) - central(eps)) / 3


def check_model(network, inputs: dict, lengths=None, eps: float = 1e-4, seed: int = 0) -> GradCheck:
    """Compare ``network``'s gradients with central differences along one random direction
    per parameter and float input. ``network`` must be float64."""
    rng = numpy.random.default_rng(seed)
    floor = _noise_floor(float(network.backend.to_host(network.forward(inputs, lengths)["loss"])), eps)
    grads = {k: network.backend.to_host(v) for k, v in network.backward().items()}
    inputs = {k: numpy.asarray(v) for k, v in inputs.items()}

    def loss() -> float:
        return float(network.backend.to_host(network.forward(inputs, lengths)["loss"]))

    model = network.model
    held = autodiff.held_constant(model.graph, model.outputs.values())
    fed = {**model.checked.inputs, **model.checked.targets}
    errors = {}
    for name, grad in grads.items():
        if fed.get(name) in held:
            continue  # its gradient leaves out a path it takes as a constant: differences see that too
        direction = rng.normal(size=grad.shape)
        if name in network.params:
            target, base = network.params, network.backend.to_host(network.params[name]).copy()
            put = lambda value, name=name: target.__setitem__(name, network.backend.asarray(value))
        else:
            base = inputs[name].astype(numpy.float64).copy()
            put = lambda value, name=name: inputs.__setitem__(name, value)

        def along(shift: float) -> float:
            put(base + shift * direction)
            return loss()

        numeric = _richardson(along, eps)
        put(base)
        analytic = float((grad * direction).sum())
        errors[name] = _relative(numeric, analytic, floor)
    worst = max(errors, key=errors.get) if errors else ""
    result = GradCheck(errors.get(worst, 0.0), worst, errors)
    if not result.ok():
        result.culprit = find_culprit(network, inputs, lengths, eps)
    return result


def find_culprit(network, inputs: dict, lengths=None, eps: float = 1e-6, tolerance: float = 1e-5):
    """The first unrolled node, in backward order, whose local gradient rule disagrees with
    central differences of its own forward on the values of this run (``None`` if all agree)."""
    reference = network.reference()
    reference.forward(inputs, lengths)
    reference.backward()
    graph, values = reference.graph, reference.values
    xp = network.backend.xp
    rng = numpy.random.default_rng(1)
    for node in reversed(list(nx.topological_sort(graph))):
        data = node_of(graph, node)
        if node not in reference.grads or data.op not in REGISTRY or data.op in ("const", "dropout_mask"):
            continue
        args = [values[a] for a in data.args]
        if _local_rule_fails(xp, data, args, values[node], rng, eps, tolerance):
            step = data.step
            where = f" at time step {step}" if step is not None else ""
            return f"{data.base} ({data.op}){where}"
    return None


def _local_rule_fails(xp, data, args, out, rng, eps, tolerance) -> bool:
    op = REGISTRY[data.op]
    attrs = data.attrs
    probe = xp.asarray(rng.normal(size=numpy.shape(out)))
    contributions = local_vjp(xp, data, probe, out, args)
    for port, part in enumerate(contributions):
        if part is None or port in op.nondiff or data.op == PREV:
            continue
        base = args[port]
        if getattr(base, "dtype", None) is None or base.dtype.kind != "f":
            continue
        direction = xp.asarray(rng.normal(size=base.shape))

        def at(shift):
            moved = list(args)
            moved[port] = base + shift * direction
            return float((op.forward(xp, *moved, **attrs) * probe).sum())

        numeric = (at(eps) - at(-eps)) / (2 * eps)
        analytic = float((part * direction).sum())
        if _relative(numeric, analytic) > tolerance and abs(numeric - analytic) > 1e-7:
            return True
    return False


def quick_report(model, batch: int = 2, steps: int = 3, tolerance: float = 1e-6) -> tuple:
    """``(ok, text)``: the tiny float64 gradient check ``seqgraph check`` runs on a model
    (random inputs, ragged lengths, one random direction per parameter and input)."""
    from .runtime import Network

    if model.checked.loss is None:
        return True, "gradient check: skipped (the model has no loss)"
    network = Network(model, dtype="float64", seed=0)
    inputs, lengths = random_inputs(model, batch=batch, steps=steps, ragged=True)
    result = check_model(network, inputs, lengths)
    where = f"batch {batch}, {steps} steps"
    if result.ok(tolerance):
        return True, (f"gradient check (float64, {where}): worst relative error "
                      f"{result.worst_error:.1e} ({result.worst_name}) - ok")
    culprit = result.culprit or "no single node (the rules agree locally; look at the graph wiring)"
    return False, (f"gradient check (float64, {where}): FAILED, relative error {result.worst_error:.1e} "
                   f"for {result.worst_name}; first node whose gradient disagrees: {culprit}")


def reference_differences(network, inputs: dict, lengths=None) -> dict:
    """How far the compiled ``network`` is from the reference executor on one batch: name ->
    the largest absolute difference, for every output and every gradient of the loss
    (``inf`` where one side lacks a gradient the other has)."""
    to_host = network.backend.to_host
    compiled = {**network.forward(inputs, lengths), **network.backward()}
    reference = network.reference()
    expected = {**reference.forward(inputs, lengths), **reference.backward()}
    differences = {}
    for name in set(compiled) | set(expected):
        if name not in compiled or name not in expected:
            differences[name] = float("inf")
            continue
        gap = numpy.abs(to_host(compiled[name]) - to_host(expected[name]))
        differences[name] = float(gap.max()) if gap.size else 0.0
    return differences
