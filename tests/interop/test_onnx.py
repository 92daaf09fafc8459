"""ONNX export checked by ONNX Runtime: every example model, exported, computes seqgraph's
outputs (float32 with ONNX's LSTM/GRU/RNN ops; float64 with Scan) for several batch sizes
and for a padded batch of different lengths, and passes onnx.checker."""

import collections
from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph import onnx_export
from seqgraph.cli import main
from seqgraph.gradcheck import random_inputs
from seqgraph.ir import node_of

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

MODELS = Path(__file__).resolve().parents[2] / "models"
EXAMPLES = sorted(path.stem for path in MODELS.glob("*.sg"))
# (batch, steps per time axis, padded): padding shortens sequence b by b % 3 steps
BATCHES = [(1, {"time": 4, "src": 5, "tgt": 3}, False), (3, {"time": 5, "src": 4, "tgt": 6}, False),
           (4, {"time": 6, "src": 7, "tgt": 5}, True)]
TOLERANCE = {"float32": 1e-5, "float64": 1e-9}
# how each example's recurrences export with recurrent_ops (the default)
RECURRENT_OPS = {
    "bilstm_classifier": {"LSTM": 1}, "char_lstm": {"LSTM": 2}, "cnn_lstm": {"LSTM": 1},
    "digits_cnn": {}, "digits_resnet": {}, "distill": {}, "distill_teacher": {}, "gru_tagger": {"GRU": 1},
    "ln_lstm": {"Scan": 2}, "lstm_adding": {"LSTM": 1}, "peephole": {"Scan": 1}, "rnn_adding": {"RNN": 1},
    "seq2seq_attention": {"LSTM": 2}, "tense_classifier": {"GRU": 1}, "text_cnn": {}, "word_lstm": {"LSTM": 1},
}


def _feed(proto, inputs, lengths, dtype):
    feed = {}
    for declared in proto.graph.input:
        name = declared.name
        if name.endswith(".lengths"):
            feed[name] = lengths[name[: -len(".lengths")]].astype(np.int64)
        else:
            value = np.asarray(inputs[name])
            feed[name] = value.astype(np.int64) if value.dtype.kind in "iu" else value.astype(dtype)
    return feed


def _session(proto):
    return ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])


def _reference_erf():
    """An Erf for onnx's reference evaluator in the input's own precision: the evaluator's
    rounds every result to float32, which a float64 gelu would see."""
    from math import erf
    from onnx.reference.op_run import OpRun

    class Erf(OpRun):
        op_domain = ""

        def _run(self, x):
            return (np.vectorize(erf, otypes=[x.dtype])(x),)
    return Erf


def _runner(proto):
    """ONNX Runtime, or onnx's reference evaluator for a graph ONNX Runtime has no kernel
    for (in float64: Conv, AveragePool, Erf)."""
    try:
        session = _session(proto)
    except Exception as error:  # onnxruntime's NotImplemented
        if "NOT_IMPLEMENTED" not in str(error):
            raise
        from onnx.reference import ReferenceEvaluator
        session = ReferenceEvaluator(proto, new_ops=[_reference_erf()])
    names = [output.name for output in proto.graph.output]
    return lambda feed: dict(zip(names, session.run(None, feed)))


def _valid(net, name, value, lengths):
    """The output's valid entries (the steps inside each sequence's length)."""
    vtype = node_of(net.model.graph, net.model.outputs[name]).type
    if not vtype.is_seq:
        return value
    steps = np.arange(value.shape[0])[:, None] < lengths[vtype.time][None, :]
    return value[steps]


def _check_against_seqgraph(net, proto, dtype):
    onnx.checker.check_model(proto, full_check=True)
    run = _runner(proto)
    for batch, steps, padded in BATCHES:
        inputs, lengths = random_inputs(net.model, batch=batch, steps=steps, seed=batch)
        if padded:
            lengths = {axis: np.maximum(count - np.arange(batch) % 3, 1) for axis, count in lengths.items()}
        expected = net.forward(inputs, lengths=lengths)
        got = run(_feed(proto, inputs, lengths, dtype))
        assert sorted(got) == sorted(k for k in expected if k != "loss")
        for name, value in got.items():
            assert value.dtype == np.dtype(dtype if value.dtype.kind == "f" else value.dtype)
            assert value.shape == expected[name].shape
            np.testing.assert_allclose(_valid(net, name, value, lengths),
                                       _valid(net, name, np.asarray(expected[name]), lengths),
                                       rtol=0, atol=TOLERANCE[dtype], err_msg=f"{name}, batch {batch}")


def _trained_like(model, dtype):
    """A network whose weights are not their initial values (zero biases would hide a
    misplaced bias), with sizes kept small."""
    net = sg.compile(model, dtype=dtype, seed=3)
    rng = np.random.default_rng(0)
    for key, value in net.params.items():
        net.params[key] = (value + rng.normal(scale=0.2, size=value.shape)).astype(dtype)
    return net


def _op_counts(proto):
    return collections.Counter(node.op_type for node in proto.graph.node)


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_exports_with_recurrent_ops_and_matches_in_float32(example):
    net = _trained_like(sg.load(MODELS / f"{example}.sg").model(), "float32")
    proto = net.export_onnx()
    counts = _op_counts(proto)
    assert {op: counts[op] for op in ("LSTM", "GRU", "RNN", "Scan") if counts[op]} == RECURRENT_OPS[example]
    _check_against_seqgraph(net, proto, "float32")


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_example_exports_as_scans_and_matches_in_float64(example):
    net = _trained_like(sg.load(MODELS / f"{example}.sg").model(), "float64")
    proto = net.export_onnx(recurrent_ops=False)
    assert not {"LSTM", "GRU", "RNN"} & set(_op_counts(proto))
    _check_against_seqgraph(net, proto, "float64")


# model body -> the recurrent ops it exports to, with their directions
RECURRENCES = {
    "backward LSTM": ("h = lstm(x, 4, direction = backward)", [("LSTM", "reverse")]),
    "bidirectional GRU": ("h = gru(x, 4, direction = both)", [("GRU", "bidirectional")]),
    "two bidirectional relu layers": ("h = rnn_relu(x, 4, layers = 2, direction = both)",
                                      [("RNN", "bidirectional")] * 2),
    "stacked LSTM": ("h = lstm(x, 4, layers = 2)", [("LSTM", "forward")] * 2),
    "initial states": ("h0 = tanh(dense(last(x), 4))  h = gru(x, 4, init = h0)", [("GRU", "forward")]),
    # ONNX's LSTM hands back the last cell state, not the whole cell sequence: a Scan does
    "cell sequence": ("h, c = lstm(x, 4)  h = c", [("Scan", None)]),
}


@pytest.mark.parametrize("case", sorted(RECURRENCES))
def test_recurrence_options_map_onto_onnx_ops(case):
    body, expected = RECURRENCES[case]
    source = f"model M {{ input x : seq[float, 3]  {body}  output y = tanh(h) }}"
    net = _trained_like(sg.parse(source).model(), "float32")
    proto = net.export_onnx()
    found = []
    for node in proto.graph.node:
        if node.op_type in ("LSTM", "GRU", "RNN", "Scan"):
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            direction = attributes.get("direction")
            found.append((node.op_type, direction.decode() if direction else None))
            if direction:
                assert attributes["layout"] == 0
    assert found == expected
    _check_against_seqgraph(net, proto, "float32")


def test_a_cell_with_two_inputs_and_a_nonzero_start_runs_as_a_scan():
    source = """
    cell Mix(x : [X], u : [U]) -> h : [H] {
        param W : [H, X + U + H]
        state h : [H] = 0.5
        h = tanh(W @ concat(x, u, h[t-1]))
    }
    model M { input x : seq[float, 3]  input u : seq[float, 2]
              output y = mean_over_time(Mix(x, reverse(u), 4)) }
    """
    net = _trained_like(sg.parse(source).model(), "float64")
    proto = net.export_onnx()
    assert [node.op_type for node in proto.graph.node].count("Scan") == 1
    _check_against_seqgraph(net, proto, "float64")


# op -> a small model body over the inputs of OP_INPUTS that uses it (each option once)
OP_INPUTS = "input x : seq[float, 3]  input y : seq[float, 3]  input img : tensor[float, 2, 6, 6]  " \
            "input small : tensor[float, 2, 5, 5]"
OPS = {
    "sqrt": "out = sqrt(exp(x))",
    "abs": "out = abs(x)",
    "pow": "out = pow(x, 3) + pow(sigmoid(y), 1.5)",
    "clamp": "out = clamp(x, min = -0.5, max = 0.5) + clamp(y, min = 0.2)",
    "hardtanh": "out = hardtanh(x) + hardtanh(y, min_val = -0.5, max_val = 2)",
    "min": "out = min(x, y)",
    # ties where x is the clamped value itself, so == and != see both answers
    "comparisons": "c = clamp(x, min = 0)  out = (x > y) + 2 * (x < y) + 4 * (x >= c) + 8 * (x <= c)"
                   " + 16 * (x == c) + 32 * (x != c)",
    "where": "out = where(x > y, x * y, y - 1)",
    "softplus": "out = softplus(x, beta = 2) + softplus(8 * y, threshold = 5)",
    "gelu": "out = gelu(x) + gelu(y, approximate = tanh)",
    "leaky_relu": "out = leaky_relu(x) + leaky_relu(y, negative_slope = 0.3)",
    "layer_norm": "out = layer_norm(x, eps = 0.01) * layer_norm(y, affine = false)",
    "batch_norm": "out = batch_norm(last(x), eps = 0.01)",
    "avgpool_time": "out = avgpool_time(x, 3) + avgpool_time(y, 4, count_include_pad = true)",
    "maxpool_time": "out = maxpool_time(x, 2) + maxpool_time(y, 3, dilation = 2)",
    "conv1d": "out = conv1d(x, 2, 4) + conv1d(y, 2, 2, dilation = 3)",
    "maxpool2d": "out = maxpool2d(img, 2) + maxpool2d(img, 3, stride = 2, pad = 1, dilation = 2, ceil_mode = true)",
    "avgpool2d": "out = avgpool2d(small, 3, stride = 2, pad = 1)"
                 " + avgpool2d(small, 2, ceil_mode = true, count_include_pad = false)",
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", sorted(OPS))
def test_each_op_exports_and_matches(op, dtype):
    source = f"model M {{ {OP_INPUTS}  {OPS[op]}  output out }}"
    net = _trained_like(sg.parse(source).model(), dtype)
    _check_against_seqgraph(net, net.export_onnx(), dtype)


def test_gate_order_is_mapped_to_onnxs(tmp_path):
    """One gate's weights set apart: ONNX's LSTM must find PyTorch's i, f, g, o rows as its
    i, o, f, c (an unmapped order still runs, with other numbers)."""
    net = _trained_like(sg.parse("model M { input x : seq[float, 2]  output h = lstm(x, 3) }").model(),
                        "float32")
    proto = net.export_onnx(tmp_path / "m.onnx")
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    w = net.params["lstm_0.weight_ih"]
    i, f, g, o = np.split(w, 4)
    np.testing.assert_array_equal(weights["lstm_0.W"][0], np.concatenate([i, o, f, g]))
    assert onnx.load(tmp_path / "m.onnx").graph.node  # written to the path as well


def test_the_export_command_writes_a_trained_run(tmp_path, capsys):
    from seqgraph.train.run import run
    trained = run(MODELS / "gru_tagger.sg", epochs=1, out=tmp_path / "run", sizes={"hidden": 6},
                  settings=["steps = 2", "examples = 64"], progress=False, echo=lambda *a: None)
    out = tmp_path / "tagger.onnx"
    assert main(["export", str(tmp_path / "run"), "--format", "onnx", "-o", str(out)]) == 0
    assert "inputs x, time.lengths; outputs pred" in capsys.readouterr().out
    _check_against_seqgraph(trained.net, onnx.load(out), "float32")

    weights = tmp_path / "w.safetensors"
    pytest.importorskip("safetensors")
    assert main(["export", str(tmp_path / "run"), "--format", "safetensors", "-o", str(weights)]) == 0
    again = tmp_path / "again.onnx"
    assert main(["export", str(MODELS / "gru_tagger.sg"), "--weights", str(weights), "--size", "hidden=6",
                 "-o", str(again), "--dtype", "float64", "--scan"]) == 0
    net = sg.compile(trained.net.model, dtype="float64")
    net.params = {k: np.asarray(v, np.float64) for k, v in trained.net.params.items()}
    _check_against_seqgraph(net, onnx.load(again), "float64")


def test_an_op_without_a_translation_is_a_clear_error(monkeypatch, tmp_path):
    source = "model M {\n  input x : seq[float, 3]\n  output h = tanh(dense(x, 2))\n}"
    net = sg.compile(sg.parse(source, "m.sg").model())
    monkeypatch.delitem(onnx_export.TRANSLATIONS, "tanh")
    with pytest.raises(sg.SeqgraphError, match="cannot export op 'tanh' to ONNX") as caught:
        net.export_onnx()
    assert "m.sg:3:14" in caught.value.render()


def test_what_cannot_be_exported_is_a_clear_error(monkeypatch):
    needs_target = sg.parse("model M { input x : [2]  target y : [2]  output e = x - y }").model()
    with pytest.raises(sg.SeqgraphError, match="depends on target 'y'"):
        sg.compile(needs_target).export_onnx()
    only_loss = sg.parse("model M { input x : [2]  target y : [2]  loss = mse(x, y) }").model()
    with pytest.raises(sg.SeqgraphError, match="no output to export besides its loss"):
        sg.compile(only_loss).export_onnx()
    monkeypatch.setitem(__import__("sys").modules, "onnx", None)
    with pytest.raises(sg.SeqgraphError, match="needs the onnx package") as caught:
        sg.compile(needs_target).export_onnx()
    assert "seqgraph[export]" in caught.value.hint
