"""Every layer and built-in passes a float64 whole-model gradient check, and the compiled
executor agrees with the reference executor on it.

The built-ins are checked through the very examples the language reference shows
(``seqgraph.library.EXAMPLES``); the recurrent layers with each of their options."""

import pytest

import seqgraph as sg
from seqgraph.gradcheck import check_model, random_inputs, reference_differences
from seqgraph.ir import node_of
from seqgraph.library import EXAMPLES, example_source

RECURRENT = {
    "rnn": "out = rnn(x, 4)",
    "rnn_relu": "out = rnn_relu(x, 4)",
    "lstm": "out = lstm(x, 4)",
    "gru": "out = gru(x, 4)",
    "lstm_backward": "out = lstm(x, 4, direction = backward)",
    "gru_both_stacked": "out = gru(x, 3, direction = both, layers = 2)",
    "rnn_stacked_dropout": "out = rnn(x, 4, layers = 2, dropout = 0.3)",
    "lstm_init": "out = lstm(x, 4, init = (dense(v, 4), tanh(v)))",
    "rnn_init": "out = rnn(x, 4, init = v)",
}


def _trainable(source_of_out: str) -> sg.Model:
    """The model with a loss on ``out``: out itself when it is one number (or one per example
    or step, averaged), else mse to a target."""
    model = sg.parse(source_of_out).model()
    out_type = node_of(model.graph, model.outputs["out"]).type
    loss = "loss = out" if not out_type.shape else f"target y : {out_type}\nloss = mse(out, y)"
    return sg.parse(source_of_out.replace("    output out\n", "".join(
        f"    {line}\n" for line in loss.splitlines()))).model()


def _recurrent_source(body: str) -> str:
    return ("model Example() {\n    input x : seq[float, 3]\n    input v : [4]\n"
            f"    {body}\n    output out\n}}\n")


CASES = {**{name: example_source(name) for name in EXAMPLES},
         **{name: _recurrent_source(body) for name, body in RECURRENT.items()}}


def _compiled_case(name: str, seed: int) -> tuple:
    """The trainable model of case ``name`` compiled in float64, and a ragged random batch."""
    model = _trainable(CASES[name])
    net = sg.compile(model, dtype="float64", seed=seed)
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True, seed=seed)
    return net, inputs, lengths


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradient_check(name):
    result = check_model(*_compiled_case(name, seed=4))
    assert result.worst_error < 1e-7, (result.worst_name, result.worst_error, result.culprit)
    assert len(result.errors) >= 1


@pytest.mark.parametrize("name", sorted(CASES))
def test_compiled_matches_reference(name):
    differences = reference_differences(*_compiled_case(name, seed=6))
    assert "loss" in differences and max(differences.values()) < 1e-12, differences
