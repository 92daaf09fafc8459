"""Variable-length batches, states carried across calls, and a program that does not grow with T."""

import numpy as np
import pytest

import seqgraph as sg

CLASSIFIER = """
model C(direction_size = 3) {
    input x : seq[float, 2]
    target y : int[3]
    h = %s(x, 4%s)
    loss = cross_entropy(dense(last(h), 3), y)
}
"""


def _net(layer="lstm", extra=""):
    return sg.compile(sg.parse(CLASSIFIER % (layer, extra)).model(), dtype="float64", seed=4)


def _grads(net, inputs, lengths=None):
    loss = net.forward(inputs, lengths)["loss"]
    return float(loss), net.backward()


@pytest.mark.parametrize("extra", ["", ", direction = backward", ", direction = both"])
def test_padded_batch_equals_separate_runs(extra):
    rng = np.random.default_rng(0)
    net = _net("lstm", extra)
    lengths = np.array([5, 3, 1])
    x = rng.normal(size=(5, 3, 2))
    y = np.array([0, 2, 1])
    padded_loss, padded_grads = _grads(net, {"x": x, "y": y}, lengths)
    total_loss, total_grads = 0.0, None
    for b, length in enumerate(lengths):
        loss, grads = _grads(net, {"x": x[:length, b:b + 1], "y": y[b:b + 1]})
        total_loss += loss / len(lengths)
        total_grads = {k: (total_grads or {}).get(k, 0) + v / len(lengths) for k, v in grads.items()
                       if k != "x"}
    assert padded_loss == pytest.approx(total_loss, abs=1e-12)
    for key, value in total_grads.items():
        np.testing.assert_allclose(padded_grads[key], value, rtol=0, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("extra", ["", ", direction = backward", ", direction = both"])
def test_values_in_padding_change_nothing(extra):
    rng = np.random.default_rng(1)
    net = _net("gru", extra)
    lengths = np.array([4, 2])
    x = rng.normal(size=(4, 2, 2))
    y = np.array([1, 0])
    loss, grads = _grads(net, {"x": x, "y": y}, lengths)
    noisy = x.copy()
    noisy[2:, 1] = 1e6 * rng.normal(size=(2, 2))
    noisy_loss, noisy_grads = _grads(net, {"x": noisy, "y": y}, lengths)
    assert noisy_loss == loss
    for key in grads:
        if key != "x":
            np.testing.assert_array_equal(noisy_grads[key], grads[key])
    assert not noisy_grads["x"][2:, 1].any()


def test_many_to_one_last_takes_each_sequence_own_last_step():
    net = sg.compile(sg.parse("model M { input x : seq[float, 2]  h = rnn(x, 3)  output last(h) }"
                              .replace("output last(h)", "output z = last(h)")).model(), dtype="float64")
    rng = np.random.default_rng(2)
    x = rng.normal(size=(4, 2, 2))
    full = net.forward({"x": x})["z"]
    sequence = net.reference()
    sequence.forward({"x": x})
    out = net.forward({"x": x}, lengths=np.array([4, 2]))["z"]
    np.testing.assert_allclose(out[0], full[0], atol=1e-15)
    short = net.forward({"x": x[:2, 1:]})["z"]
    np.testing.assert_allclose(out[1], short[0], atol=1e-15)


def test_state_carried_across_windows_equals_one_long_run():
    model = sg.parse("""
    model LM { input x : seq[float, 2]  target y : seq[float, 3]
               h = lstm(x, 3)  loss = mse(h, y) }""").model()
    net = sg.compile(model, dtype="float64", seed=0)
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 2, 2)), rng.normal(size=(6, 2, 3))
    whole = net.forward({"x": x, "y": y})["loss"]
    first = net.forward({"x": x[:3], "y": y[:3]})["loss"]
    carried = dict(net.final_states)
    second = net.forward({"x": x[3:], "y": y[3:]}, state=carried)["loss"]
    assert float(first + second) / 2 == pytest.approx(float(whole), abs=1e-12)
    grads = net.backward()
    assert set(carried) == {"lstm_0.h", "lstm_0.c"}
    assert "lstm_0.weight_hh" in grads  # the window backpropagates into its own weights only


def test_program_does_not_grow_with_steps():
    net = sg.compile(sg.load("models/char_lstm.sg").model(), dtype="float32")
    rng = np.random.default_rng(0)
    stats = []
    for steps in (10, 1000):
        vocab = net.model.sizes["vocab"]
        x = rng.integers(0, vocab, size=(steps, 2))
        net.forward({"x": x, "y": x})
        net.backward()
        stats.append(net.program.stats())
    assert stats[0] == stats[1]
    assert stats[0]["scans"] == 2


def test_backward_seeded_at_an_output_is_a_vector_jacobian_product():
    net = sg.compile(sg.parse("model M { input x : seq[float, 2]  h = rnn(x, 3)  output h }").model(),
                     dtype="float64")
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 2, 2))
    cotangent = rng.normal(size=(3, 2, 3))
    net.forward({"x": x})
    grads = net.backward({"h": cotangent})
    eps = 1e-6
    direction = rng.normal(size=x.shape)
    plus = (net.forward({"x": x + eps * direction})["h"] * cotangent).sum()
    minus = (net.forward({"x": x - eps * direction})["h"] * cotangent).sum()
    assert (grads["x"] * direction).sum() == pytest.approx((plus - minus) / (2 * eps), rel=1e-7)


def test_input_errors_are_seqgraph_errors():
    net = _net()
    with pytest.raises(sg.SeqgraphError, match="needs input 'y'"):
        net.forward({"x": np.zeros((2, 1, 2))})
    with pytest.raises(sg.SeqgraphError, match=r"shape \(T, B, 2\)"):
        net.forward({"x": np.zeros((2, 2)), "y": np.zeros(2, dtype=int)})
    with pytest.raises(sg.SeqgraphError, match="lengths"):
        net.forward({"x": np.zeros((2, 1, 2)), "y": np.zeros(1, dtype=int)}, lengths=np.array([3]))
    with pytest.raises(sg.SeqgraphError, match="outside 0..2"):
        net.forward({"x": np.zeros((2, 1, 2)), "y": np.array([3])})
