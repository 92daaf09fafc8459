"""A loss whose target is computed from the model's own values (``mse(p, p * 0)``): no
cotangent reaches the target, so neither executor, the probe nor ``seqgraph check``'s
failing-node finder applies a gradient rule to it."""

import dataclasses

import numpy as np
import pytest

import seqgraph as sg
from seqgraph import SeqgraphError
from seqgraph.gradcheck import quick_report, random_inputs
from seqgraph.ops import REGISTRY

SHRINK = """
model Shrink {
    input  x : seq[float, 3]
    target y : seq[float, 3]
    p    = dense(x, 2)
    q    = p * 0
    loss = mse(p, q)
}"""


def _network():
    model = sg.parse(SHRINK, "shrink.sg").model()
    net = sg.compile(model, dtype="float64", seed=4)
    inputs, _ = random_inputs(model, batch=2, steps=3, seed=1)
    return net, inputs


def test_the_probe_and_the_network_give_the_gradients_of_a_hand_computation():
    net, inputs = _network()
    x, weight, bias = inputs["x"], net.params["dense_0.weight"], net.params["dense_0.bias"]
    p = x @ weight.T + bias
    dp = 2 * p / p.size  # loss = mean(p^2): the target is a constant to the loss
    expected = {"dense_0.weight": np.einsum("tbo,tbi->oi", dp, x), "dense_0.bias": dp.sum((0, 1)),
                "x": dp @ weight}
    probe = sg.Probe(net)
    probe.forward(inputs)
    by_probe = probe.backward()
    net.forward(inputs)
    by_network = net.backward()
    for grads in (by_probe, by_network):
        assert set(grads) == set(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(grads[key], value, rtol=1e-12, atol=1e-15, err_msg=key)
    with pytest.raises(SeqgraphError, match="no gradient flows back into 'mul'"):
        probe.grad("q")


def test_the_failing_node_finder_names_the_broken_rule_past_a_computed_target(monkeypatch):
    tanh = REGISTRY["tanh"]
    monkeypatch.setitem(REGISTRY, "tanh", dataclasses.replace(
        tanh, vjp=lambda xp, g, out, x: (g * (1 - out),), kernel=None))
    # the target's own tanh gets no cotangent, so its (as wrong) rule is never applied
    text = SHRINK.replace("dense(x, 2)", "tanh(dense(x, 3))").replace("p * 0", "tanh(x) * 0")
    model = sg.parse(text, "shrink.sg").model()
    ok, text = quick_report(model)
    assert not ok
    assert text.endswith("first node whose gradient disagrees: tanh (tanh)")


@pytest.mark.parametrize("target", ["x * 0", "x"])
def test_a_gradient_fault_names_the_rule_that_made_it_not_the_target_beside_it(target):
    model = sg.parse(f"""
    model M {{
        input  x : seq[float, 2]
        target y : seq[float, 2]
        loss = mse(log(x), {target})
    }}""", "fault.sg").model()
    net = sg.compile(model, dtype="float64")
    x = np.ones((3, 2, 2))
    x[1, 0, 1] = 1e-320  # log is finite (-737), its gradient 1/x is not
    with np.errstate(over="ignore", divide="ignore"):
        net.forward({"x": x, "y": np.zeros_like(x)})
        fault = net.first_nonfinite()
    assert (fault.phase, fault.node, fault.into) == ("gradient", "log", "x")
