"""The inspection API (seqgraph.Probe): finding nodes, reading values and gradients.

The numbers are checked against a hand computation, in NumPy, of a tiny cell whose forget
gate reads the previous output and whose cell state carries a sum over time."""

import re
from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph import SeqgraphError
from seqgraph.gradcheck import random_inputs

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
cell Tiny(x : [X]) -> h : [H] {
    param W : [H, X]
    param U : [H, H]
    state c : [H] = 0
    state h : [H] = 0
    f = sigmoid(U @ h[t-1])
    c = f * c[t-1] + tanh(W @ x)
    h = tanh(c)
}

model TinyModel(hidden = 2) {
    input  x : seq[float, 3]
    target y : [2]
    h    = Tiny(x, hidden)
    loss = mse(last(h), y)
    output gate = sigmoid(last(h))      # the loss does not depend on it
}
"""

W = np.array([[0.5, -0.3, 0.8], [-0.6, 0.2, 0.4]])
U = np.array([[0.9, -0.7], [0.3, 1.1]])
X = np.array([[[1.0, 0.0, -1.0], [0.5, 0.5, 0.5]],
              [[-0.2, 0.3, 0.1], [1.0, -1.0, 0.0]],
              [[0.4, 0.4, -0.4], [-0.5, 0.0, 0.2]],
              [[0.0, 1.0, 0.6], [0.3, -0.8, 0.9]]])  # (T=4, B=2, X=3)
Y = np.array([[0.25, -0.5], [0.75, 0.1]])


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def by_hand():
    """f_t, c_t, h_t and dL/df_t, dL/dc_t, dL/dh_t for every step, written out in NumPy."""
    steps, batch, _ = X.shape
    f, c, h = {}, {-1: np.zeros((batch, 2))}, {-1: np.zeros((batch, 2))}
    for t in range(steps):
        f[t] = sigmoid(h[t - 1] @ U.T)
        c[t] = f[t] * c[t - 1] + np.tanh(X[t] @ W.T)
        h[t] = np.tanh(c[t])
    df, dc, dh = {}, {}, {}
    dc_next, df_next = np.zeros((batch, 2)), np.zeros((batch, 2))
    for t in reversed(range(steps)):
        dh[t] = (df_next * f.get(t + 1, 0) * (1 - f.get(t + 1, 0))) @ U
        if t == steps - 1:
            dh[t] = dh[t] + 2 * (h[t] - Y) / Y.size
        dc[t] = dh[t] * (1 - h[t] ** 2) + dc_next * f.get(t + 1, 0)
        df[t] = dc[t] * c[t - 1]
        dc_next, df_next = dc[t], df[t]
    dU = sum((df[t] * f[t] * (1 - f[t])).T @ h[t - 1] for t in range(steps))
    return {"f": f, "c": c, "h": h}, {"f": df, "c": dc, "h": dh}, dU


@pytest.fixture(scope="module")
def probe():
    model = sg.parse(TINY, "tiny.sg").model()
    net = sg.compile(model, dtype="float64")
    net.params["Tiny_0.W"], net.params["Tiny_0.U"] = W.copy(), U.copy()
    probe = sg.Probe(net)
    probe.forward({"x": X, "y": Y})
    probe.backward()
    return probe


@pytest.mark.parametrize("variable", ["f", "c", "h"])
@pytest.mark.parametrize("step", range(4))
def test_values_and_gradients_equal_a_hand_computation(probe, variable, step):
    values, grads, _ = by_hand()
    np.testing.assert_allclose(probe.value(f"Tiny_0.{variable}", step=step), values[variable][step],
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(probe.grad(f"Tiny_0.{variable}", step=step), grads[variable][step],
                               rtol=0, atol=1e-12)


def test_all_steps_at_once_are_stacked_over_time(probe):
    values, grads, _ = by_hand()
    np.testing.assert_allclose(probe.value("Tiny_0.c"), np.stack([values["c"][t] for t in range(4)]), atol=1e-12)
    np.testing.assert_allclose(probe.grad("Tiny_0.f"), np.stack([grads["f"][t] for t in range(4)]), atol=1e-12)
    assert probe.value("Tiny_0.c").shape == (4, 2, 2)


def test_parameter_gradients_and_the_delayed_read(probe):
    values, grads, dU = by_hand()
    np.testing.assert_allclose(probe.grad("Tiny_0.U"), dU, atol=1e-12)
    np.testing.assert_allclose(probe.value("Tiny_0.c[t-1]", step=2), values["c"][1], atol=1e-12)
    np.testing.assert_allclose(probe.value("Tiny_0.h[t-1]", step=0), np.zeros((2, 2)), atol=0)
    # the gradient reaching h[t-1] at step t is the part of dL/dh_{t-1} that flows through f_t
    np.testing.assert_allclose(probe.grad("Tiny_0.h[t-1]", step=3), grads["h"][2], atol=1e-12)


def test_model_names_inputs_outputs_and_sequences(probe):
    values, grads, _ = by_hand()
    assert float(probe.value("loss")) == pytest.approx(np.mean((values["h"][3] - Y) ** 2), abs=1e-14)
    np.testing.assert_allclose(probe.value("x", step=1), X[1], atol=0)
    np.testing.assert_allclose(probe.value("h", step=2), values["h"][2], atol=1e-12)  # the (T, B, H) sequence
    np.testing.assert_allclose(probe.grad("x", step=3), grads["c"][3] * (1 - np.tanh(X[3] @ W.T) ** 2) @ W,
                               atol=1e-12)


def test_a_node_the_loss_does_not_read_has_zero_gradient(probe):
    values, _, _ = by_hand()
    np.testing.assert_allclose(probe.value("gate"), sigmoid(values["h"][3]), atol=1e-12)
    np.testing.assert_array_equal(probe.grad("gate"), np.zeros((2, 2)))


def test_backward_returns_what_the_network_returns(probe):
    grads = probe.backward()
    net = probe.network
    net.forward({"x": X, "y": Y})
    for key, grad in net.backward().items():
        np.testing.assert_allclose(grads[key], grad, atol=1e-12)


def test_nodes_by_layer_and_op_folded_and_at_a_step(probe):
    folded = probe.nodes(layer="Tiny_0", op="sigmoid")
    assert [n.id for n in folded] == ["Tiny_0/sigmoid"]
    gate = folded[0]
    assert (gate.op, gate.layer, gate.name, gate.shape, gate.step) == ("sigmoid", "Tiny_0", "f", (2,), None)
    assert gate.rule == "g * y * (1 - y)"
    assert (gate.span.filename, gate.span.line, gate.span.col) == ("tiny.sg", 6, 9)
    assert gate.source_line == "f = sigmoid(U @ h[t-1])"
    at_two = probe.nodes(layer="Tiny_0", op="mul", step=2)
    assert [(n.id, n.base, n.step) for n in at_two] == [("Tiny_0/mul@2", "Tiny_0/mul", 2)]
    assert at_two[0].rule == "switch" and at_two[0].type == "[2] step 2"
    assert [n.id for n in probe.nodes(name="c")] == ["Tiny_0/add"]
    assert [n.id for n in probe.nodes(op="param")] == ["Tiny_0.W", "Tiny_0.U"]


def test_a_node_handle_reads_its_own_step(probe):
    values, grads, _ = by_hand()
    node = probe.nodes(layer="Tiny_0", op="sigmoid", step=1)[0]
    np.testing.assert_allclose(probe.value(node), values["f"][1], atol=1e-12)
    np.testing.assert_allclose(probe.grad(node), grads["f"][1], atol=1e-12)
    np.testing.assert_allclose(probe.value(probe.node("Tiny_0/add"), step=3), values["c"][3], atol=1e-12)


def test_a_state_key_names_the_new_state_value(probe):
    assert probe.node("Tiny_0.c").id == probe.node("Tiny_0.c", step=0).base == "Tiny_0/add"
    assert probe.node("Tiny_0.h", step=3).id == "Tiny_0/tanh.1@3"


@pytest.mark.parametrize("call, message, hint", [
    (lambda p: p.value("Tiny_0.ff", step=0), "model TinyModel has no node or variable 'Tiny_0.ff'",
     "did you mean 'Tiny_0.f'?"),
    (lambda p: p.value("Tiny_0.c", step=4), "step 4 is out of range: the last run had 4 steps on "
                                            "time axis 'time' (0..3)", None),
    (lambda p: p.nodes(layer="tiny_0"), "no layer 'tiny_0' in this graph", "did you mean 'Tiny_0'?"),
    (lambda p: p.nodes(op="sigmod"), "no 'sigmod' node in model TinyModel", "did you mean 'sigmoid'?"),
    (lambda p: p.value("Tiny_0.W", step=1), "'Tiny_0.W' is neither per-step nor a sequence: "
                                            "read it without step=", None),
    (lambda p: p.grad("y"), "no gradient flows back into 'y': the ops reading it treat it as a "
                            "constant (as a loss treats its target)", None),
    (lambda p: p.grad("Tiny_0/h_init"), "the gradient of 'Tiny_0/h_init' is not computed: it depends "
                                        "on no parameter or input", None),
])
def test_mistakes_are_seqgraph_errors(probe, call, message, hint):
    with pytest.raises(SeqgraphError) as info:
        call(probe)
    assert info.value.message == message
    assert info.value.hint == hint


def test_reading_before_running_says_what_to_call():
    probe = sg.Probe(sg.compile(sg.parse(TINY).model(), dtype="float64"))
    with pytest.raises(SeqgraphError, match=r"call probe.forward\(...\) first"):
        probe.value("Tiny_0.c", step=0)
    probe.forward({"x": X, "y": Y})
    with pytest.raises(SeqgraphError, match=r"call probe.backward\(\) before reading gradients"):
        probe.grad("Tiny_0.c", step=0)


def test_the_worked_example_in_the_docs_runs_and_shows_these_numbers(monkeypatch):
    page = (ROOT / "docs" / "inspection.md").read_text()
    monkeypatch.chdir(ROOT)
    namespace: dict = {}
    for block in re.findall(r"^```python\n(.*?)^```", page, re.S | re.M):
        exec(block, namespace)  # noqa: S102 - the page's own examples
    np.testing.assert_allclose(namespace["f5"], [[0.5982, 0.6103, 0.8989, 0.7103],
                                                 [0.4823, 0.0443, 0.7213, 0.0906]], atol=5e-5)
    np.testing.assert_allclose(namespace["dc5"], [[0.0074, 0.0082, -0.0028, 0.0113],
                                                  [-0.0021, -0.0052, -0.0002, 0.0159]], atol=5e-5)
    assert str(namespace["forget"].span) == "models/peephole.sg:18:9"
    assert str(namespace["at_five"][0]) == "PeepholeLSTM_0/mul@5: mul, [4] step 5, rule: switch"
    assert [str(n) for n in namespace["gates"]][1] == \
        "PeepholeLSTM_0/sigmoid.1 (f): sigmoid, [4] per-step, rule: g * y * (1 - y)"
    assert 2e-3 < namespace["flow"].decay("lstm_0.c") < 4e-3


def test_steps_on_two_time_axes_of_different_lengths():
    model = sg.load(ROOT / "models" / "seq2seq_attention.sg").model()
    probe = sg.Probe(sg.compile(model, dtype="float64", hidden=4, embed=3))
    inputs, lengths = random_inputs(probe.model, batch=2, steps={"src": 5, "tgt": 3})
    probe.forward(inputs, lengths)
    probe.backward()
    assert probe.steps == {"src": 5, "tgt": 3}
    assert [n.id for n in probe.nodes(op="tanh", step=4)] == ["encoder/tanh@4", "encoder/tanh.1@4"]
    assert {n.layer for n in probe.nodes(op="tanh", step=2)} == {"encoder", "decoder"}
    assert probe.grad("encoder.c").shape == (5, 2, 4) and probe.grad("decoder.c").shape == (3, 2, 4)
    with pytest.raises(SeqgraphError, match="step 3 is out of range: the last run had 3 steps on time axis 'tgt'"):
        probe.value("decoder.h", step=3)
