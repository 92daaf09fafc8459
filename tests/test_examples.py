"""Every example model in models/ loads, checks, and documents itself."""

from pathlib import Path

import pytest

import seqgraph as sg
from seqgraph.ir import node_of, nodes_of

MODELS = Path(__file__).resolve().parents[1] / "models"
MODEL_FILES = sorted(MODELS.glob("*.sg"))
EXPECTED = {"bilstm_classifier", "char_lstm", "cnn_lstm", "digits_cnn", "gru_tagger", "lstm_adding",
            "peephole", "rnn_adding", "seq2seq_attention", "ln_lstm", "digits_resnet", "text_cnn", "distill", "distill_teacher"}


def test_the_examples_are_all_there():
    assert EXPECTED <= {path.stem for path in MODEL_FILES}


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.stem for p in MODEL_FILES])
def test_example_loads_and_checks(path):
    program = sg.load(path)
    assert program.models
    for model in program.models.values():
        assert model.require_loss() == model.outputs["loss"]
        assert model.params
        assert model.train is not None, "every example has a train block"
        settings = {setting.name for setting in model.train.settings}
        assert {"data", "optimizer", "epochs"} <= settings


@pytest.mark.parametrize("path", MODEL_FILES, ids=[p.stem for p in MODEL_FILES])
def test_example_starts_with_a_header_saying_how_to_run_it(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    assert len(header) >= 3
    assert header[0].startswith(f"# {path.name} ")
    assert any(f"seqgraph check models/{path.name}" in line for line in header)
    assert any("seqgraph run" in line for line in header)


def test_char_lstm_is_two_stacked_lstms_of_realistic_size():
    model = sg.load(MODELS / "char_lstm.sg").model()
    assert model.sizes == {"vocab": 45, "embed": 32, "hidden": 128}
    assert {"lstm_0.weight_hh", "lstm_1.weight_hh"} <= set(model.params)
    assert set(model.outputs) == {"loss", "probs"}


def test_seq2seq_uses_two_time_axes():
    model = sg.load(MODELS / "seq2seq_attention.sg").model()
    assert set(model.checked.time_axes) == {"src", "tgt"}


def test_ln_lstm_has_a_residual_connection_around_its_second_layer():
    model = sg.load(MODELS / "ln_lstm.sg").model()
    assert {"LayerNormLSTM_0.gx", "LayerNormLSTM_1.gc"} <= set(model.params)
    graph = model.graph
    adds = [n for n, d in nodes_of(graph) if d.op == "add" and d.name == "h"]
    assert adds and any("LayerNormLSTM_0" in arg for arg in node_of(graph, adds[0]).args)


def test_digits_resnet_evaluates_with_running_statistics():
    import numpy as np

    model = sg.load(MODELS / "digits_resnet.sg").model()
    assert {"batch_norm_0.running_mean", "batch_norm_2.running_var"} <= set(model.params)
    net = sg.compile(model, dtype="float64", seed=0)
    img = np.random.default_rng(0).normal(size=(4, 1, 8, 8))
    feed = {"img": img, "label": np.arange(4)}
    evaluated = net.forward(feed)["probs"]
    net.forward(feed, training=True)
    assert not np.allclose(net.params["batch_norm_0.running_mean"], 0.0)
    assert "batch_norm_0.running_mean" not in net.backward()
    assert not np.allclose(net.forward(feed)["probs"], evaluated)  # the running statistics moved


def test_text_cnn_convolves_along_time_on_the_inputs_time_axis():
    model = sg.load(MODELS / "text_cnn.sg").model()
    ops = [data.op for _, data in nodes_of(model.graph)]
    assert ops.count("time_conv1d") == 2 and "time_maxpool" in ops
    assert model.params["conv1d_1.weight"][0] == (16, 16, 3)
