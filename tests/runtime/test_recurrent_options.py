"""The recurrent layers' options: proj_size, bias = false, init = learned,
recurrent_dropout and merge. Each against its equations in NumPy, the compiled program
against the reference executor, gradients against central differences, and (with torch)
against torch.nn.LSTM/GRU/RNN."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph import cli
from seqgraph.gradcheck import check_model, reference_differences
from seqgraph.weights import load_torch_state_dict

from .test_recurrences import gru_reference, rnn_reference, sigmoid

SOURCE = """
model M(features = 3, hidden = 5) {
    input  x : seq[float, features]
    target y : seq[float, %d]
    h = %s
    loss = mse(h, y)
    output h
}
"""
LENGTHS = {"time": np.array([6, 4])}


def _net(call, width=5, seed=3):
    return sg.compile(sg.parse(SOURCE % (width, call)).model(), dtype="float64", seed=seed)


def _batch(width, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(6, 2, 3)), "y": rng.normal(size=(6, 2, width))}


def _perturb(net, seed=1):
    """Move every parameter off its initial value (learned initial states start at 0)."""
    rng = np.random.default_rng(seed)
    for key, value in net.params.items():
        net.params[key] = value + 0.3 * rng.normal(size=value.shape)


def lstm_projected(x, w_ih, w_hh, b_ih, b_hh, w_hr):
    """torch.nn.LSTM(proj_size = P)'s equations: h = w_hr (o * tanh(c))."""
    h = np.zeros((x.shape[1], w_hr.shape[0]))
    c = np.zeros((x.shape[1], w_hr.shape[1]))
    out = []
    for t in range(x.shape[0]):
        i, f, g, o = np.split(x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh, 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h = (sigmoid(o) * np.tanh(c)) @ w_hr.T
        out.append(h)
    return np.stack(out)


CALLS = [
    ("lstm(x, hidden, proj_size = 2)", 2),
    ("lstm(x, hidden, proj_size = 2, layers = 2, direction = both)", 4),
    ("lstm(x, hidden, bias = false)", 5),
    ("gru(x, hidden, bias = false, direction = both)", 10),
    ("lstm(x, hidden, init = learned)", 5),
    ("gru(x, hidden, init = learned, layers = 2, direction = both, merge = sum)", 5),
    ("rnn(x, hidden, direction = both, merge = mean)", 5),
    ("lstm(x, hidden, direction = both, merge = sum, proj_size = 3, init = learned, bias = false)", 3),
]


@pytest.mark.parametrize("call, width", CALLS)
def test_compiled_matches_reference_and_gradients_match_differences(call, width):
    net = _net(call, width)
    _perturb(net)
    batch = _batch(width)
    differences = reference_differences(net, batch, LENGTHS)
    assert max(differences.values()) < 1e-12, differences
    result = check_model(net, batch, LENGTHS)
    assert result.worst_error < 1e-6, (result.worst_name, result.worst_error)


def test_proj_size_follows_the_projected_equations():
    net = _net("lstm(x, hidden, proj_size = 2)", 2)
    p = net.params
    assert p["lstm_0.weight_hh"].shape == (20, 2) and p["lstm_0.weight_hr"].shape == (2, 5)
    assert np.abs(p["lstm_0.weight_hr"]).max() <= 1 / np.sqrt(5)  # PyTorch's bound: 1/sqrt(hidden)
    x = _batch(2)["x"]
    expected = lstm_projected(x, *(p[f"lstm_0.{k}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh",
                                                               "weight_hr")))
    np.testing.assert_allclose(net.forward(_batch(2))["h"], expected, rtol=0, atol=1e-12)
    assert net.final_states["lstm_0.h"].shape == (2, 2) and net.final_states["lstm_0.c"].shape == (2, 5)


@pytest.mark.parametrize("cell, reference", [("gru", gru_reference), ("rnn", rnn_reference)])
def test_bias_false_has_no_biases_and_is_the_cell_with_zero_biases(cell, reference):
    net = _net(f"{cell}(x, hidden, bias = false)")
    assert sorted(net.params) == [f"{cell}_0.weight_hh", f"{cell}_0.weight_ih"]
    gates = net.params[f"{cell}_0.weight_ih"].shape[0]
    x = _batch(5)["x"]
    expected = reference(x, net.params[f"{cell}_0.weight_ih"], net.params[f"{cell}_0.weight_hh"],
                         np.zeros(gates), np.zeros(gates))
    np.testing.assert_allclose(net.forward(_batch(5))["h"], expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("merge, join", [("sum", lambda f, b: f + b), ("mean", lambda f, b: (f + b) / 2),
                                         ("concat", lambda f, b: np.concatenate([f, b], axis=-1))])
def test_merge_modes_join_the_two_directions(merge, join):
    width = 10 if merge == "concat" else 5
    net = _net(f"rnn(x, hidden, direction = both, merge = {merge})", width)
    p = net.params
    x = _batch(width)["x"]
    forward = rnn_reference(x, *(p[f"rnn_0.{k}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")))
    backward = rnn_reference(x[::-1], *(p[f"rnn_0.{k}_reverse"] for k in ("weight_ih", "weight_hh", "bias_ih",
                                                                          "bias_hh")))[::-1]
    np.testing.assert_allclose(net.forward(_batch(width))["h"], join(forward, backward), rtol=0, atol=1e-12)


def test_learned_initial_states_start_each_sequence_and_give_way_to_carried_ones():
    net = _net("lstm(x, hidden, init = learned)")
    plain = _net("lstm(x, hidden)")
    plain.params.update({k: v.copy() for k, v in net.params.items() if k in plain.params})
    assert net.params["lstm_0.h0"].shape == (5,) and not net.params["lstm_0.c0"].any()
    batch = _batch(5)
    np.testing.assert_array_equal(net.forward(batch)["h"], plain.forward(batch)["h"])  # zeros at first
    h0, c0 = np.linspace(-1, 1, 5), np.linspace(0.5, -0.5, 5)
    net.params["lstm_0.h0"], net.params["lstm_0.c0"] = h0, c0
    start = {"lstm_0.h": np.tile(h0, (2, 1)), "lstm_0.c": np.tile(c0, (2, 1))}
    np.testing.assert_allclose(net.forward(batch)["h"], plain.forward(batch, state=start)["h"], rtol=0, atol=1e-14)
    carried = {"lstm_0.h": np.full((2, 5), 0.2), "lstm_0.c": np.full((2, 5), -0.1)}
    np.testing.assert_allclose(net.forward(batch, state=carried)["h"], plain.forward(batch, state=carried)["h"],
                               rtol=0, atol=1e-14)
    net.forward(batch)
    grads = net.backward()
    assert np.abs(grads["lstm_0.h0"]).max() > 1e-4 and np.abs(grads["lstm_0.c0"]).max() > 1e-4


def _training(net, batch, seed=7):
    net._rng = np.random.default_rng(seed)  # the same masks at every call
    return float(net.forward(batch, LENGTHS, training=True)["loss"])


def test_recurrent_dropout_draws_one_mask_per_sequence():
    p_drop = 0.5
    net = _net(f"rnn(x, hidden, recurrent_dropout = {p_drop})")
    batch = _batch(5)
    net._rng = np.random.default_rng(7)
    out = net.forward(batch, training=True)["h"]
    mask = (np.random.default_rng(7).random((2, 5)) >= p_drop) / (1 - p_drop)  # (batch, hidden): every step
    assert 0 < mask.mean() < 2
    w_ih, w_hh, b_ih, b_hh = (net.params[f"rnn_0.{k}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
    h, expected = np.zeros((2, 5)), []
    for t in range(6):
        h = np.tanh(batch["x"][t] @ w_ih.T + b_ih + (h * mask) @ w_hh.T + b_hh)
        expected.append(h)
    np.testing.assert_allclose(out, np.stack(expected), rtol=0, atol=1e-12)
    plain = rnn_reference(batch["x"], w_ih, w_hh, b_ih, b_hh)
    np.testing.assert_allclose(net.forward(batch)["h"], plain, rtol=0, atol=1e-12)  # off outside training


@pytest.mark.parametrize("call", ["lstm(x, hidden, recurrent_dropout = 0.4)",
                                  "gru(x, hidden, recurrent_dropout = 0.4, direction = both, merge = sum)"])
def test_recurrent_dropout_compiled_matches_reference_and_differences(call):
    net = _net(call)
    _perturb(net)
    batch = _batch(5)
    loss = _training(net, batch)
    grads = net.backward()
    reference = net.reference()
    expected = reference.forward(batch, LENGTHS, training=True, rng=np.random.default_rng(7))
    assert abs(float(expected["loss"]) - loss) < 1e-12
    for key, value in reference.backward().items():
        np.testing.assert_allclose(grads[key], value, rtol=0, atol=1e-12, err_msg=key)
    rng, eps = np.random.default_rng(2), 1e-5
    for key in ("lstm_0.weight_hh", "gru_0.weight_hh_reverse", "lstm_0.bias_ih", "gru_0.bias_hh"):
        if key not in net.params:
            continue
        direction, base = rng.normal(size=net.params[key].shape), net.params[key].copy()
        losses = []
        for shift in (eps, -eps):
            net.params[key] = base + shift * direction
            losses.append(_training(net, batch))
        net.params[key] = base
        numeric = (losses[0] - losses[1]) / (2 * eps)
        assert numeric == pytest.approx(float((grads[key] * direction).sum()), rel=1e-7)


@pytest.mark.parametrize("call, message", [
    ("gru(x, hidden, proj_size = 2)", "gru has no argument 'proj_size'"),
    ("lstm(x, hidden, merge = sum)", "merge= joins the two directions of direction = both"),
    ("lstm(x, hidden, recurrent_dropout = 1.0)", "recurrent_dropout must be in [0, 1)"),
    ("lstm(x, hidden, bias = no)", "'bias' must be one of true, false"),
    ("lstm(x, hidden, direction = both, merge = max)", "'merge' must be one of concat, sum, mean"),
])
def test_option_mistakes_are_errors_at_the_call(call, message):
    with pytest.raises(sg.SeqgraphError) as error:
        sg.parse(SOURCE % (5, call)).model()
    assert message in error.value.message and error.value.span.line == 5


def test_a_model_with_every_option_trains_from_seqgraph_run(tmp_path):
    (tmp_path / "m.sg").write_text("""
model Options(vocab = 5, classes = 2, embed = 8, hidden = 12) {
    input  x     : seq[int, vocab]
    target label : int[classes]
    e = embedding(x, vocab, embed)
    h = lstm(e, hidden, proj_size = 6, direction = both, merge = mean, init = learned,
             recurrent_dropout = 0.2, layers = 2, dropout = 0.1)
    loss = cross_entropy(dense(max_over_time(h), classes), label)
}
train { data = builtin("majority")  examples = 600  batch = 32  epochs = 3  optimizer = adam(lr = 0.01) }
""")
    assert cli.main(["run", str(tmp_path / "m.sg"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 4


# --- against PyTorch ---------------------------------------------------------------------------

def _torch_case(module, call, width):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = _net(call, width)
    layer = call.split("(")[0] + "_0"
    load_torch_state_dict(net, layer, {k: v.detach().numpy() for k, v in module.state_dict().items()})
    x = _batch(width)["x"]
    with torch.no_grad():
        expected = module(torch.from_numpy(x))[0].numpy()
    return net.forward(_batch(width))["h"], expected


@pytest.mark.parametrize("options, call, width", [
    (dict(proj_size=2), "lstm(x, hidden, proj_size = 2)", 2),
    (dict(proj_size=2, num_layers=2, bidirectional=True),
     "lstm(x, hidden, proj_size = 2, layers = 2, direction = both)", 4),
    (dict(bias=False), "lstm(x, hidden, bias = false)", 5),
    (dict(bias=False, proj_size=3, bidirectional=True), "lstm(x, hidden, bias = false, proj_size = 3, direction = both)", 6),
])
def test_lstm_options_match_torch(options, call, width):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 5, dtype=torch.float64, **options)
    ours, theirs = _torch_case(module, call, width)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["GRU", "RNN"])
def test_bias_false_matches_torch_gru_and_rnn(kind):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = getattr(torch.nn, kind)(3, 5, bias=False, dtype=torch.float64)
    ours, theirs = _torch_case(module, f"{kind.lower()}(x, hidden, bias = false)", 5)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("merge, join", [("sum", lambda f, b: f + b), ("mean", lambda f, b: (f + b) / 2)])
def test_merge_modes_match_torch_bidirectional_halves(merge, join):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 5, bidirectional=True, dtype=torch.float64)
    ours, theirs = _torch_case(module, f"lstm(x, hidden, direction = both, merge = {merge})", 5)
    np.testing.assert_allclose(ours, join(theirs[..., :5], theirs[..., 5:]), rtol=0, atol=1e-12)


def test_torch_state_dict_leaves_learned_initial_states_alone():
    torch = pytest.importorskip("torch")
    module = torch.nn.LSTM(3, 5, dtype=torch.float64)
    net = _net("lstm(x, hidden, init = learned)")
    net.params["lstm_0.h0"] = np.full(5, 0.25)
    load_torch_state_dict(net, "lstm_0", {k: v.detach().numpy() for k, v in module.state_dict().items()})
    np.testing.assert_array_equal(net.params["lstm_0.h0"], np.full(5, 0.25))
    np.testing.assert_array_equal(net.params["lstm_0.weight_ih"], module.weight_ih_l0.detach().numpy())
