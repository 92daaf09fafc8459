"""Fused elementwise chains as data, and buffer sharing by liveness."""

import numpy as np

import seqgraph as sg
from seqgraph.compiler import Scan
from seqgraph.ir import node_of
from seqgraph.ops import REGISTRY
from seqgraph.passes.buffers import share_buffers
from seqgraph.passes.fusion import fuse_elementwise

from .conftest import language_model

FUNCTIONS = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "max": np.maximum}


def _scan(net):
    (scan,) = [item for item in net.program.schedule if isinstance(item, Scan)]
    return scan


def _evaluate_nodes(graph, chain, values):
    values = dict(values)
    for node in chain.nodes:
        data = node_of(graph, node)
        values[node] = REGISTRY[data.op].forward(np, *[values[a] for a in data.args], **data.attrs)
    return values


def test_the_lstm_cell_state_update_is_one_chain_whose_formulas_match_the_ops():
    net = sg.compile(language_model("lstm"), dtype="float64")
    code = _scan(net).code
    graph = net.program.graph
    chains = fuse_elementwise(graph, code.order)
    cell = max(chains, key=lambda c: len(c.nodes))
    assert sorted(node_of(graph, n).op for n in cell.nodes) == \
        ["add", "mul", "mul", "mul", "sigmoid", "tanh", "tanh"]
    assert len(chains) == 3  # the pre-activation add | the widened input and forget gates | the rest
    rng = np.random.default_rng(0)
    inputs = {arg: rng.normal(size=(2,) + tuple(node_of(graph, arg).shape)) for arg in cell.inputs}
    values = _evaluate_nodes(graph, cell, inputs)
    namespace = dict(FUNCTIONS, **{f"x{k}": inputs[a] for k, a in enumerate(cell.inputs)})
    for out, formula in cell.forward.items():
        np.testing.assert_allclose(eval(formula, namespace), values[out], rtol=1e-13)
    # backward formulas: the vjp of the whole chain from random output cotangents
    cotangents = {out: rng.normal(size=values[out].shape) for out in cell.outputs}
    namespace.update({f"g{k}": cotangents[o] for k, o in enumerate(cell.outputs)})
    grads = dict(cotangents)
    for node in reversed(cell.nodes):
        data = node_of(graph, node)
        parts = REGISTRY[data.op].vjp(np, grads.pop(node), values[node], *[values[a] for a in data.args])
        for arg, part in zip(data.args, parts):
            grads[arg] = grads.get(arg, 0) + part
    for arg, formula in cell.backward.items():
        expected = grads[arg]
        if expected.shape != values[arg].shape:
            expected = expected.sum(axis=0)
        np.testing.assert_allclose(eval(formula, namespace), expected, rtol=1e-12, atol=1e-13)


def test_share_buffers_colours_intervals():
    lifetimes = {"a": (0, 2), "b": (1, 3), "c": (3, 4), "d": (4, 5), "e": (5, 6)}
    keys = dict.fromkeys(lifetimes, "k")
    plan = share_buffers(lifetimes, keys)
    assert plan["a"] != plan["b"]
    assert plan["c"] == plan["a"]  # a died at 2, c is born at 3
    assert plan["d"] == plan["b"]
    assert plan["e"] == plan["c"] or plan["e"] == plan["a"] or plan["e"] == plan["b"]
    assert len(set(plan.values())) == 2


def test_share_buffers_respects_keys_and_in_place_pairs():
    lifetimes = {"x": (0, 1), "y": (1, 2), "z": (2, 3)}
    assert len(set(share_buffers(lifetimes, {"x": 1, "y": 1, "z": 2}).values())) == 3
    plan = share_buffers(lifetimes, dict.fromkeys(lifetimes, 1), in_place={("x", "y"), ("y", "z")})
    assert len(set(plan.values())) == 1


def test_scratch_values_share_buffers_in_the_step_loop():
    net = sg.compile(language_model("lstm"), dtype="float64")
    code = _scan(net).code
    scratch = [n for n in code.order if n not in code.kept and n not in code.views
               and graph_op(net, n) != "prev"]
    assert len(code.forward_buffers) < len(scratch)


def graph_op(net, node):
    return node_of(net.program.graph, node).op
