"""The built-in cells against their published equations, written here in plain NumPy."""

import numpy as np
import pytest

import seqgraph as sg

SOURCE = """
model M(features = 3, hidden = 5) {
    input x : seq[float, features]
    h = %s(x, hidden%s)
    output h
}
"""


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def lstm_reference(x, w_ih, w_hh, b_ih, b_hh, h=None, c=None):
    steps, batch, _ = x.shape
    hidden = w_hh.shape[1]
    h = np.zeros((batch, hidden)) if h is None else h
    c = np.zeros((batch, hidden)) if c is None else c
    out = []
    for t in range(steps):
        z = x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f, g, o = np.split(z, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = sigmoid(o) * np.tanh(c)
        out.append(h)
    return np.stack(out), h, c


def gru_reference(x, w_ih, w_hh, b_ih, b_hh):
    steps, batch, _ = x.shape
    h = np.zeros((batch, w_hh.shape[1]))
    out = []
    for t in range(steps):
        xr, xz, xn = np.split(x[t] @ w_ih.T + b_ih, 3, axis=-1)
        hr, hz, hn = np.split(h @ w_hh.T + b_hh, 3, axis=-1)
        r, z = sigmoid(xr + hr), sigmoid(xz + hz)
        n = np.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        out.append(h)
    return np.stack(out)


def rnn_reference(x, w_ih, w_hh, b_ih, b_hh, act=np.tanh):
    h = np.zeros((x.shape[1], w_hh.shape[1]))
    out = []
    for t in range(x.shape[0]):
        h = act(x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        out.append(h)
    return np.stack(out)


def _net(layer, extra=""):
    model = sg.parse(SOURCE % (layer, extra)).model()
    return sg.compile(model, dtype="float64", seed=11)


def _params(net, layer, suffix=""):
    p = net.params
    return [p[f"{layer}_0.{k}{suffix}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


@pytest.fixture
def x():
    return np.random.default_rng(0).normal(size=(6, 2, 3))


def test_lstm_matches_equations(x):
    net = _net("lstm")
    out = net.forward({"x": x})["h"]
    expected, h_last, c_last = lstm_reference(x, *_params(net, "lstm"))
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(net.final_states["lstm_0.h"], h_last, rtol=0, atol=1e-12)
    np.testing.assert_allclose(net.final_states["lstm_0.c"], c_last, rtol=0, atol=1e-12)


def test_gru_matches_equations(x):
    net = _net("gru")
    np.testing.assert_allclose(net.forward({"x": x})["h"], gru_reference(x, *_params(net, "gru")),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("layer, act", [("rnn", np.tanh), ("rnn_relu", lambda z: np.maximum(z, 0))])
def test_rnn_matches_equations(x, layer, act):
    net = _net(layer)
    np.testing.assert_allclose(net.forward({"x": x})["h"], rnn_reference(x, *_params(net, layer), act=act),
                               rtol=0, atol=1e-12)


def test_bidirectional_stacked_lstm_matches_equations(x):
    net = _net("lstm", ", direction = both, layers = 2")
    out = net.forward({"x": x})["h"]
    layer_input = x
    for index in range(2):
        forward, _, _ = lstm_reference(layer_input, *_params(net, "lstm", f"_l{index}"))
        backward, _, _ = lstm_reference(layer_input[::-1], *_params(net, "lstm", f"_l{index}_reverse"))
        layer_input = np.concatenate([forward, backward[::-1]], axis=-1)
    np.testing.assert_allclose(out, layer_input, rtol=0, atol=1e-12)


def test_parameters_follow_pytorch_init_bound():
    net = _net("lstm")
    bound = 1 / np.sqrt(5)
    for value in _params(net, "lstm"):
        assert np.abs(value).max() <= bound
        assert np.abs(value).max() > 0.5 * bound


def test_init_is_reproducible_from_seed():
    model = sg.parse(SOURCE % ("gru", "")).model()
    a, b, c = (sg.compile(model, seed=s).params for s in (1, 1, 2))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["gru_0.weight_ih"], c["gru_0.weight_ih"])


def test_user_cell_restating_lstm_matches_builtin(x):
    source = """
    cell MyLSTM(x : [X]) -> h : [H] {
        param weight_ih : [4*H, X]
        param weight_hh : [4*H, H]
        param bias_ih : [4*H]
        param bias_hh : [4*H]
        state h : [H] = 0
        state c : [H] = 0
        zi, zf, zg, zo = split(weight_ih @ x + bias_ih + weight_hh @ h[t-1] + bias_hh, 4)
        c = sigmoid(zf) * c[t-1] + sigmoid(zi) * tanh(zg)
        h = sigmoid(zo) * tanh(c)
    }
    model A { input x : seq[float, 3]  h = MyLSTM(x, 5)  output h }
    model B { input x : seq[float, 3]  h = lstm(x, 5)  output h }
    """
    program = sg.parse(source)
    mine = sg.compile(program.models["A"], dtype="float64")
    builtin = sg.compile(program.models["B"], dtype="float64")
    for key in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
        mine.params[f"MyLSTM_0.{key}"] = builtin.params[f"lstm_0.{key}"]
    np.testing.assert_allclose(mine.forward({"x": x})["h"], builtin.forward({"x": x})["h"],
                               rtol=0, atol=1e-12)
