"""Saving and loading parameters, and PyTorch-style state dicts."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.weights import load_params, load_torch_state_dict, save_params

from .test_recurrences import gru_reference, lstm_reference, rnn_reference

SOURCE = "model M { input x : seq[float, 3]  h = lstm(x, 4%s)  output h }"


def test_save_then_load_round_trip(tmp_path):
    model = sg.parse(SOURCE % "").model()
    a, b = sg.compile(model, seed=1), sg.compile(model, seed=2)
    save_params(a, tmp_path / "w.npz")
    load_params(b, tmp_path / "w.npz")
    assert all(np.array_equal(a.params[k], b.params[k]) for k in a.params)


def test_load_refuses_other_shapes(tmp_path):
    small = sg.compile(sg.parse(SOURCE % "").model())
    other = sg.compile(sg.parse(SOURCE.replace("4", "5") % "").model())
    save_params(small, tmp_path / "w.npz")
    with pytest.raises(sg.SeqgraphError, match="has shape"):
        load_params(other, tmp_path / "w.npz")


def test_pickled_file_is_refused(tmp_path):
    np.savez(tmp_path / "evil.npz", **{"lstm_0.weight_ih": np.array([object()], dtype=object)})
    net = sg.compile(sg.parse(SOURCE % "").model())
    with pytest.raises(sg.SeqgraphError, match="pickled"):
        load_params(net, tmp_path / "evil.npz")


def test_truncated_file_is_a_clear_error(tmp_path):
    net = sg.compile(sg.parse(SOURCE % "").model())
    save_params(net, tmp_path / "w.npz")
    data = (tmp_path / "w.npz").read_bytes()
    (tmp_path / "w.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(sg.SeqgraphError, match="corrupt or truncated"):
        load_params(net, tmp_path / "w.npz")


# cell -> (gate rows per hidden unit, its output sequence from the published equations)
CELLS = {
    "lstm": (4, lambda x, *w: lstm_reference(x, *w)[0]),
    "gru": (3, gru_reference),
    "rnn": (1, rnn_reference),
    "rnn_relu": (1, lambda x, *w: rnn_reference(x, *w, act=lambda z: np.maximum(z, 0))),
}


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_torch_state_dict_bidirectional_stacked(cell):
    gates, reference = CELLS[cell]
    source = SOURCE.replace("lstm(", f"{cell}(") % ", direction = both, layers = 2"
    net = sg.compile(sg.parse(source).model(), dtype="float64")
    rng = np.random.default_rng(0)
    state = {}
    for index in range(2):
        features = 3 if index == 0 else 8
        for reverse in ("", "_reverse"):
            state[f"weight_ih_l{index}{reverse}"] = rng.normal(size=(gates * 4, features)) / 2
            state[f"weight_hh_l{index}{reverse}"] = rng.normal(size=(gates * 4, 4)) / 2
            state[f"bias_ih_l{index}{reverse}"] = rng.normal(size=gates * 4)
            state[f"bias_hh_l{index}{reverse}"] = rng.normal(size=gates * 4)
    load_torch_state_dict(net, f"{cell}_0", state)
    x = rng.normal(size=(5, 2, 3))
    layer_input = x
    for index in range(2):
        weights = [state[f"{k}_l{index}"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        reverse = [state[f"{k}_l{index}_reverse"] for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        forward = reference(layer_input, *weights)
        backward = reference(layer_input[::-1], *reverse)
        layer_input = np.concatenate([forward, backward[::-1]], axis=-1)
    np.testing.assert_allclose(net.forward({"x": x})["h"], layer_input, rtol=0, atol=1e-10)


def test_torch_state_dict_errors():
    net = sg.compile(sg.parse(SOURCE % "").model())
    with pytest.raises(sg.SeqgraphError, match="not a recurrent-layer parameter"):
        load_torch_state_dict(net, "lstm_0", {"weight": np.zeros(3)})
    with pytest.raises(sg.SeqgraphError, match="lacks"):
        load_torch_state_dict(net, "lstm_0", {"weight_ih_l0": np.zeros((16, 3))})
