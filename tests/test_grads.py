"""Gradient flow through time (seqgraph.grads and `seqgraph grads`).

The norms ||dL/ds_t|| are checked against central differences of the loss with respect to
the state at step t, computed without any backward pass: run the sequence up to step t,
take its final states, then restart the rest of the sequence from those states, perturbed
one component at a time."""

import math
from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.weights import save_params
from seqgraph import SeqgraphError, cli, grads
from seqgraph.gradcheck import random_inputs
from seqgraph.grads import GradientFlow

MODELS = Path(__file__).resolve().parents[1] / "models"


def network(name: str, seed: int = 0, **sizes):
    return sg.compile(sg.load(MODELS / name).model(), dtype="float64", seed=seed, **sizes)


def loss_from_step(net, inputs: dict, step: int, states: dict) -> float:
    """The loss when the sequence is restarted after ``step`` from ``states``."""
    rest = {"x": inputs["x"][step + 1:], "y": inputs["y"]}
    return float(net.forward(rest, state=states)["loss"])


def state_gradient_by_differences(net, inputs: dict, step: int, key: str, eps: float = 1e-6):
    """dL/ds_step for state ``key``, by central differences (steps before the last one).

    An LSTM's h_t = o_t * tanh(c_t) reads c_t too, so moving c_t moves h_t with it; o_t is
    recovered from the step's own states as h_t / tanh(c_t)."""
    net.forward({"x": inputs["x"][:step + 1], "y": inputs["y"]})
    states = {k: v.copy() for k, v in net.final_states.items()}

    def moved(index, shift) -> dict:
        result = {k: v.copy() for k, v in states.items()}
        result[key][index] += shift
        if key == "lstm_0.c":
            result["lstm_0.h"] = states["lstm_0.h"] / np.tanh(states["lstm_0.c"]) * np.tanh(result[key])
        return result

    grad = np.zeros_like(states[key])
    for index in np.ndindex(grad.shape):
        plus = loss_from_step(net, inputs, step, moved(index, eps))
        minus = loss_from_step(net, inputs, step, moved(index, -eps))
        grad[index] = (plus - minus) / (2 * eps)
    return grad


@pytest.mark.parametrize("name, keys", [("rnn_adding.sg", ["rnn_0.h"]),
                                        ("lstm_adding.sg", ["lstm_0.h", "lstm_0.c"])])
def test_state_gradient_norms_equal_finite_differences(name, keys):
    net = network(name, hidden=3)
    inputs, _ = random_inputs(net.model, batch=2, steps=5, seed=3)
    norms = grads.state_gradient_norms(net, inputs)
    assert list(norms) == keys
    for key in keys:
        assert len(norms[key]) == 5
        for step in range(4):
            expected = np.linalg.norm(state_gradient_by_differences(net, inputs, step, key))
            assert norms[key][step] == pytest.approx(expected, rel=1e-7), (key, step)


def test_the_last_state_gradient_is_what_the_output_layer_hands_back():
    net = network("rnn_adding.sg", hidden=3)
    inputs, _ = random_inputs(net.model, batch=2, steps=5, seed=3)
    pred = net.forward(inputs)["pred"]
    expected = 2 * (pred - inputs["y"]) / inputs["y"].size @ net.params["dense_0.weight"]
    norms = grads.state_gradient_norms(net, inputs)
    assert norms["rnn_0.h"][-1] == pytest.approx(np.linalg.norm(expected), rel=1e-12)


def test_parameter_norms_are_those_of_the_network_gradients():
    net = network("lstm_adding.sg", hidden=4)
    inputs, lengths = random_inputs(net.model, batch=3, steps=6, seed=1, ragged=True)
    flow = grads.gradient_flow(net, inputs, lengths)
    net.forward(inputs, lengths)
    expected = net.backward()
    assert list(flow.params) == list(net.params)
    for key, (shape, norm) in flow.params.items():
        assert shape == net.params[key].shape
        assert norm == pytest.approx(np.linalg.norm(expected[key]), rel=1e-10)
    assert flow.loss == pytest.approx(float(net.forward(inputs, lengths)["loss"]), rel=1e-12)
    assert (flow.batch, flow.steps) == (3, {"time": 6})


def decays(seed: int, forget_bias: float = 0.0) -> dict:
    """Each state's ||dL/ds_0|| / ||dL/ds_49|| on the shipped adding models (hidden 32)."""
    result = {}
    for name in ("rnn_adding.sg", "lstm_adding.sg"):
        net = network(name, seed=seed)
        if "lstm_0.bias_ih" in net.params:  # gates i, f, g, o: f is the second quarter
            net.params["lstm_0.bias_ih"][32:64] += forget_bias
        inputs, _ = random_inputs(net.model, batch=8, steps=50, seed=seed)
        flow = grads.gradient_flow(net, inputs)
        result.update({key: flow.decay(key) for key in flow.states})
    return result


def test_at_initialisation_the_lstm_cell_keeps_more_gradient_than_the_rnn_on_average():
    # With PyTorch's initialisation the forget gates sit near sigmoid(0) = 1/2, so the LSTM's
    # gradient decays too; over several seeds its cell state still keeps ten times more.
    logs = [{key: math.log10(value) for key, value in decays(seed).items()} for seed in range(4)]
    rnn = np.mean([row["rnn_0.h"] for row in logs])
    cell = np.mean([row["lstm_0.c"] for row in logs])
    assert rnn < -10 and rnn < cell - 1


@pytest.mark.parametrize("seed", [0, 1])
def test_with_open_forget_gates_the_lstm_gradient_survives_and_the_rnn_vanishes(seed):
    found = decays(seed, forget_bias=1.0)
    assert found["rnn_0.h"] < 1e-8
    assert found["lstm_0.c"] > 1e-5 and found["lstm_0.h"] > 1e-6
    assert found["rnn_0.h"] < 1e-4 * found["lstm_0.h"] < found["lstm_0.c"]


# --- the report ----------------------------------------------------------------------------------

@pytest.fixture
def flow():
    return GradientFlow(states={"rnn_0.h": [2e-9, 3e-4, 0.5], "rnn_0.c": [4e3, 1.0, 0.0]},
                        params={"rnn_0.weight": ((2, 3), 1.5e-7), "dense_0.bias": ((1,), 2e4)},
                        loss=0.25, batch=4, steps={"time": 3})


def test_flags_exploding_and_vanishing_by_threshold():
    assert grads.flag(2e3) == "exploding" and grads.flag(float("nan")) == "exploding"
    assert grads.flag(5e-7) == "vanishing" and grads.flag(1e-3) is None
    assert grads.flag(0.5, explode=0.1) == "exploding" and grads.flag(0.5, vanish=1.0) == "vanishing"


def test_decay_is_first_over_last(flow):
    assert flow.decay("rnn_0.h") == pytest.approx(4e-9)
    assert flow.decay("rnn_0.c") == math.inf


def test_state_table_has_steps_down_and_states_across(flow):
    assert grads.state_table(flow).splitlines() == [
        "      step     rnn_0.h     rnn_0.c",
        "         0   2.00e-09 v   4.00e+03 !",
        "         1   3.00e-04     1.00e+00",
        "         2   5.00e-01     0.00e+00 v",
        "first/last   4.00e-09          inf",
    ]


def test_report_lists_parameters_and_flags(flow):
    report = grads.format_report(flow)
    assert report.startswith("loss 0.25 on a batch of 4, 3 steps\n")
    assert "rnn_0.weight  [2, 3]   1.50e-07  vanishing\n" in report
    assert "dense_0.bias  [1]      2.00e+04  exploding\n" in report
    assert report.endswith(
        "flags (exploding above 1000 (!), vanishing below 1e-06 (v)):\n"
        "  vanishing: rnn_0.h at step 0\n"
        "  exploding: rnn_0.c at step 0\n"
        "  vanishing: rnn_0.c at step 2\n"
        "  vanishing: rnn_0.weight (1.50e-07)\n"
        "  exploding: dense_0.bias (2.00e+04)\n")
    assert grads.flagged(flow, explode=1e5, vanish=1e-10) == ["vanishing: rnn_0.c at step 2"]


def test_step_ranges_are_compact():
    assert grads._ranges([0, 1, 2, 5, 7, 8]) == "steps 0-2, 5, 7-8"


def test_plot_is_a_png(flow, tmp_path):
    grads.plot(flow, tmp_path / "flow.png")
    assert (tmp_path / "flow.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the command --------------------------------------------------------------------------------

def test_grads_command_prints_the_table_and_draws_the_plot(tmp_path, capsys):
    out = tmp_path / "lstm.png"
    assert cli.main(["grads", str(MODELS / "lstm_adding.sg"), "--steps", "6", "--batch", "2", "--inputs",
                     "random", "--size", "hidden=4", "--out", str(out), "--threshold-vanish", "1e-3"]) == 0
    text = capsys.readouterr().out
    net = network("lstm_adding.sg", hidden=4)
    inputs, lengths = random_inputs(net.model, batch=2, steps=6, seed=0)
    expected = grads.gradient_flow(net, inputs, lengths)
    assert text.startswith(f"{MODELS / 'lstm_adding.sg'}: model LSTMAdding, random inputs (seed 0), "
                           "initial weights (seed 0), float64\nloss ")
    assert grads.state_table(expected, vanish=1e-3) in text
    assert "lstm_0.weight_hh  [16, 4]" in text
    assert "flags (exploding above 1000 (!), vanishing below 0.001 (v)):" in text
    assert text.endswith(f"plot: {out}\n")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_grads_command_reads_saved_weights_and_a_batch_of_the_models_data(tmp_path, capsys):
    trained = network("rnn_adding.sg", hidden=5)
    trained.params["rnn_0.weight_hh"] *= 3.0
    save_params(trained, tmp_path / "weights.npz")
    argv = ["grads", str(MODELS / "rnn_adding.sg"), "--weights", str(tmp_path / "weights.npz"),
            "--batch", "3", "--out", str(tmp_path / "rnn.png")]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert f"a batch of its training data, weights of {tmp_path / 'weights.npz'}, float64" in text
    inputs, lengths = grads.data_batch(trained.model, MODELS / "rnn_adding.sg", batch=3)
    assert inputs["x"].shape == (50, 3, 2) and inputs["y"].shape == (3, 1)
    expected = grads.gradient_flow(trained, inputs, lengths)
    assert grads.state_table(expected) in text
    assert "rnn_0.weight_hh  [5, 5]" in text


def test_grads_command_without_recurrence_draws_no_plot(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["grads", str(MODELS / "digits_cnn.sg"), "--batch", "2"]) == 0
    text = capsys.readouterr().out
    assert "no recurrent states: nothing flows through time" in text and "plot:" not in text
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "error: --steps needs a positive number, got 0"),
    (["--threshold-vanish", "-1"], "error: --threshold-vanish needs a positive number, got -1.0"),
    (["--size", "hiden=3"], "error: model RNNAdding has no size 'hiden'"),
])
def test_grads_command_mistakes(argv, message, capsys):
    assert cli.main(["grads", str(MODELS / "rnn_adding.sg")] + argv) == 1
    assert message in capsys.readouterr().err


def test_grads_of_a_model_without_loss_is_an_error():
    net = sg.compile(sg.parse("model M { input x : seq[float, 2]\n output h = rnn(x, 3) }").model(),
                     dtype="float64")
    inputs, _ = random_inputs(net.model, batch=1, steps=2)
    with pytest.raises(SeqgraphError, match="has no loss"):
        grads.gradient_flow(net, inputs)
