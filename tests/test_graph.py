"""The folded and unrolled graphs: sizes, cycles, delay edges, fan-out, rules, spans, names."""

import copy
import dataclasses
import pickle
from pathlib import Path

import networkx as nx
import pytest

import seqgraph as sg
from seqgraph.graph import delay_edges
from seqgraph.ir import FEED_OPS, LEAF_OPS, NODE, base_of, node_of, nodes_of
from seqgraph.ops import REGISTRY

MODELS = Path(__file__).resolve().parents[1] / "models"
MODEL_FILES = sorted(MODELS.glob("*.sg"))

TINY = """\
model Tiny {
    input x : seq[float, 3]
    target y : [1]
    h = rnn(x, 4)
    loss = mse(dense(last(h), 1), y)
}
"""

GATES = """\
model Gates(hidden = 6) {
    input a : [4]
    input b : [4]
    target y : [1]
    m = max(a, b) * (a + b)
    loss = mse(dense(m, 1), y)
}
"""


def model_of(text: str, filename: str = "model.sg"):
    return sg.parse(text, filename).model()


def all_models() -> list:
    return [pytest.param(model, id=f"{path.stem}:{model.name}")
            for path in MODEL_FILES for model in sg.load(path).models.values()]


def timed_count(graph) -> int:
    return sum(1 for _, data in nodes_of(graph) if data.timed)


# --- sizes -----------------------------------------------------------------------------------

def test_tiny_rnn_nodes_exactly():
    model = model_of(TINY)
    timed = sorted(data.op for _, data in nodes_of(model.graph) if data.timed)
    assert timed == ["add", "add", "add", "matmul", "matmul", "prev", "step", "tanh"]
    static = sorted(data.op for _, data in nodes_of(model.graph) if not data.timed)
    assert static == ["add", "input", "input", "last", "last", "lengths", "matmul", "mse", "param",
                      "param", "param", "param", "param", "param", "stack", "state_init"]
    for steps in (1, 2, 3, 7):
        assert model.unroll(steps).number_of_nodes() == 16 + 8 * steps


@pytest.mark.parametrize("model", all_models())
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_unrolled_size_is_static_plus_steps_times_timed(model, steps):
    graph = model.graph
    timed = timed_count(graph)
    static = graph.number_of_nodes() - timed
    unrolled = model.unroll(steps)
    assert unrolled.number_of_nodes() == static + steps * timed
    copies = [n for n, data in nodes_of(unrolled) if data.step is not None]
    assert len(copies) == steps * timed
    assert {node_of(unrolled, n).step for n in copies} <= set(range(steps))


def test_unroll_rejects_a_non_positive_step_count():
    with pytest.raises(ValueError):
        model_of(TINY).unroll(0)


# --- cycles and delay edges ------------------------------------------------------------------

@pytest.mark.parametrize("model", all_models())
def test_unrolled_graph_is_acyclic_and_folded_cycles_go_through_delays(model):
    assert nx.is_directed_acyclic_graph(model.unroll(3))
    without_delays = model.graph.copy()
    without_delays.remove_edges_from(delay_edges(model.graph))
    assert nx.is_directed_acyclic_graph(without_delays)
    if model.checked.states:
        assert not nx.is_directed_acyclic_graph(model.graph)


@pytest.mark.parametrize("model", all_models())
def test_one_delay_edge_per_state_into_its_prev_node(model):
    graph = model.graph
    edges = delay_edges(graph)
    assert len(edges) == len(model.checked.states)
    assert sorted(target for _, target in edges) == sorted(model.checked.states.values())
    for source, target in edges:
        assert node_of(graph, target).op == "prev"
        assert node_of(graph, target).args[0] == source
        assert graph.edges[source, target]["ports"] == [0]
        assert node_of(graph, source).timed and node_of(graph, target).timed


def test_lstm_layers_have_two_states_each():
    model = sg.load(MODELS / "char_lstm.sg").model()
    assert sorted(model.checked.states) == ["lstm_0.c", "lstm_0.h", "lstm_1.c", "lstm_1.h"]
    assert len(delay_edges(model.graph)) == 4
    assert sorted(model.checked.final_states) == sorted(model.checked.states)


def test_unrolled_prev_reads_the_previous_step_or_the_initial_state():
    unrolled = model_of(TINY).unroll(3)
    assert node_of(unrolled, "rnn_0/h_prev@0").args == ("rnn_0/h_init",)
    assert node_of(unrolled, "rnn_0/h_prev@1").args == ("rnn_0/tanh@0",)
    assert node_of(unrolled, "rnn_0/h_prev@2").args == ("rnn_0/tanh@1",)
    assert node_of(unrolled, "rnn_0/h_seq").args == ("rnn_0/tanh@0", "rnn_0/tanh@1", "rnn_0/tanh@2")
    assert not delay_edges(unrolled)


# --- fan-out ---------------------------------------------------------------------------------

@pytest.mark.parametrize("steps", [1, 4, 9])
def test_a_recurrent_weight_feeds_every_step(steps):
    model = sg.load(MODELS / "lstm_adding.sg").model()
    unrolled = model.unroll(steps)
    for key in ("lstm_0.weight_ih", "lstm_0.weight_hh", "lstm_0.bias_ih", "lstm_0.bias_hh"):
        consumers = list(unrolled.successors(key))
        assert len(consumers) == steps
        assert sorted(node_of(unrolled, c).step for c in consumers) == list(range(steps))
    # a weight outside the recurrence is used once, by the time-parallel dense layer
    assert len(list(unrolled.successors("dense_0.weight"))) == 1


# --- gradient rules --------------------------------------------------------------------------

def test_gate_nodes_carry_their_gradient_rule():
    graph = model_of(GATES).graph
    rules = {data.op: data.rule for _, data in nodes_of(graph)}
    assert rules["add"] == "distribute"
    assert rules["mul"] == "switch"
    assert rules["maximum"] == "route"
    assert rules["param"].startswith("leaf")


def test_every_lstm_add_and_mul_is_labelled():
    graph = sg.load(MODELS / "char_lstm.sg").model().graph
    for _, data in nodes_of(graph):
        if data.op == "add":
            assert data.rule == "distribute"
        if data.op == "mul":
            assert data.rule == "switch"


def test_a_rewritten_node_takes_the_rule_of_its_new_op():
    model = sg.load(MODELS / "char_lstm.sg").model()
    optimized = sg.compile(model).program.graph
    affine = [node for node, data in nodes_of(optimized) if data.op == "affine"]
    assert affine and all(node_of(optimized, n).rule == REGISTRY["affine"].rule for n in affine)
    assert all(node_of(model.graph, n).rule == "distribute" for n in affine if n in model.graph)


# --- the node records ------------------------------------------------------------------------

def test_nodes_are_frozen_records():
    graph = model_of(TINY).graph
    record = next(data for _, data in nodes_of(graph) if data.op == "state_init")
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.op = "add"
    with pytest.raises(TypeError):
        record.attrs["value"] = 1.0
    assert copy.deepcopy(record) == record and pickle.loads(pickle.dumps(record)) == record
    assert all(set(attributes) == {NODE} for _, attributes in graph.nodes(data=True))


def test_unrolled_copies_name_their_folded_node_and_step():
    model = model_of(TINY)
    unrolled = model.unroll(3)
    assert base_of(unrolled, "rnn_0/tanh@2") == "rnn_0/tanh" and node_of(unrolled, "rnn_0/tanh@2").step == 2
    assert base_of(model.graph, "rnn_0/tanh") == "rnn_0/tanh" and node_of(model.graph, "rnn_0/tanh").step is None
    assert FEED_OPS == ("input", "lengths", "state_init") and set(FEED_OPS) | {"param"} == set(LEAF_OPS)


# --- spans -----------------------------------------------------------------------------------

def line_of(text: str, fragment: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if fragment in line)


def test_spans_point_at_the_statement_that_made_the_node():
    path = MODELS / "char_lstm.sg"
    text = path.read_text()
    graph = sg.load(path).model().graph
    assert node_of(graph, "dense_0/matmul").span.line == line_of(text, "logits = dense(h, vocab)")
    assert node_of(graph, "cross_entropy").span.line == line_of(text, "loss   = cross_entropy")
    assert node_of(graph, "softmax").span.line == line_of(text, "output probs = softmax")
    assert node_of(graph, "x").span.line == line_of(text, "input  x : seq[int, vocab]")
    assert node_of(graph, "embedding_0/embedding").span.filename == str(path)


def test_spans_inside_a_prelude_cell_point_into_the_prelude():
    graph = sg.load(MODELS / "lstm_adding.sg").model().graph
    span = node_of(graph, "lstm_0/mul.2").span  # h = sigmoid(o) * tanh(c)
    assert span.filename == "prelude/lstm.sg"
    assert "h = sigmoid(o) * tanh(c)" in span.source.line(span.line)


def test_spans_inside_a_user_cell_point_into_the_users_file():
    path = MODELS / "peephole.sg"
    text = path.read_text()
    graph = sg.load(path).model().graph
    f_gate = next(n for n, data in nodes_of(graph) if data.name == "f")
    assert node_of(graph, f_gate).span.line == line_of(text, "f = sigmoid(zf + pf * c[t-1])")
    assert node_of(graph, f_gate).span.filename == str(path)


def test_unrolled_copies_keep_their_span():
    model = model_of(TINY)
    unrolled = model.unroll(3)
    for step in range(3):
        assert node_of(unrolled, f"rnn_0/tanh@{step}").span == node_of(model.graph, "rnn_0/tanh").span


# --- layer names and parameter keys ------------------------------------------------------------

def test_layers_are_numbered_per_function_in_order():
    graph = sg.load(MODELS / "char_lstm.sg").model().graph
    layers = {data.layer for _, data in nodes_of(graph)} - {None}
    assert layers == {"embedding_0", "lstm_0", "lstm_1", "dense_0"}
    # every op inside a cell belongs to the layer that called it
    assert node_of(graph, "lstm_1/mul.2").layer == "lstm_1"


def test_name_argument_overrides_the_layer_name():
    model = sg.load(MODELS / "seq2seq_attention.sg").model()
    layers = {data.layer for _, data in nodes_of(model.graph)} - {None}
    assert {"encoder", "decoder", "dense_0", "dense_1"} <= layers
    assert "encoder.weight_ih" in model.params and "decoder.weight_hh" in model.params
    assert not any(key.startswith("lstm_") for key in model.params)


def recurrent(function: str, extra: str = "", hidden: int = 5, features: int = 3):
    return model_of(f"""\
model R(hidden = {hidden}) {{
    input x : seq[float, {features}]
    target y : [1]
    h = {function}(x, hidden{extra})
    loss = mse(dense(last(h), 1), y)
}}
""")


def shapes(model, prefix: str) -> dict:
    return {key: shape for key, (shape, _) in model.params.items() if key.startswith(prefix)}


@pytest.mark.parametrize("function, gates", [("lstm", 4), ("gru", 3), ("rnn", 1), ("rnn_relu", 1)])
def test_recurrent_parameters_use_pytorch_layout(function, gates):
    model = recurrent(function, hidden=5, features=3)
    layer = f"{function}_0"
    assert shapes(model, layer + ".") == {
        f"{layer}.weight_ih": (gates * 5, 3),
        f"{layer}.weight_hh": (gates * 5, 5),
        f"{layer}.bias_ih": (gates * 5,),
        f"{layer}.bias_hh": (gates * 5,),
    }


def test_bidirectional_layers_add_reverse_parameters():
    model = recurrent("lstm", ", direction = both", hidden=5, features=3)
    assert shapes(model, "lstm_0.") == {
        "lstm_0.weight_ih": (20, 3), "lstm_0.weight_hh": (20, 5),
        "lstm_0.bias_ih": (20,), "lstm_0.bias_hh": (20,),
        "lstm_0.weight_ih_reverse": (20, 3), "lstm_0.weight_hh_reverse": (20, 5),
        "lstm_0.bias_ih_reverse": (20,), "lstm_0.bias_hh_reverse": (20,),
    }
    graph = model.graph
    out = next(n for n, data in nodes_of(graph) if data.op == "last" and data.name is None
               and node_of(graph, data.args[0]).op == "concat")
    assert node_of(graph, out).shape == (10,)  # forward and backward outputs joined


def test_stacked_layers_number_their_parameters():
    model = recurrent("gru", ", layers = 2", hidden=5, features=3)
    assert shapes(model, "gru_0.") == {
        "gru_0.weight_ih_l0": (15, 3), "gru_0.weight_hh_l0": (15, 5),
        "gru_0.bias_ih_l0": (15,), "gru_0.bias_hh_l0": (15,),
        "gru_0.weight_ih_l1": (15, 5), "gru_0.weight_hh_l1": (15, 5),
        "gru_0.bias_ih_l1": (15,), "gru_0.bias_hh_l1": (15,),
    }
    assert len(model.checked.states) == 2


def test_stacked_bidirectional_layers_see_both_directions():
    model = recurrent("rnn", ", layers = 2, direction = both", hidden=4, features=3)
    params = shapes(model, "rnn_0.")
    assert params["rnn_0.weight_ih_l0"] == (4, 3)
    assert params["rnn_0.weight_ih_l0_reverse"] == (4, 3)
    assert params["rnn_0.weight_ih_l1"] == (4, 8)
    assert params["rnn_0.weight_ih_l1_reverse"] == (4, 8)
    assert len(params) == 16


def test_with_sizes_rebuilds_the_model_at_new_sizes():
    model = sg.load(MODELS / "char_lstm.sg").model()
    small = model.with_sizes(hidden=7)
    assert small.sizes == {**model.sizes, "hidden": 7}
    assert small.params["lstm_0.weight_hh"][0] == (28, 7)
    assert small.params["lstm_1.weight_ih"][0] == (28, 7)
    assert small.params["dense_0.weight"][0] == (45, 7)
    assert model.params["lstm_0.weight_hh"][0] == (512, 128)  # the original is untouched
    assert small.graph.number_of_nodes() == model.graph.number_of_nodes()


def test_dense_and_conv_parameter_shapes():
    model = sg.load(MODELS / "digits_cnn.sg").model()
    assert shapes(model, "") == {
        "conv2d_0.weight": (8, 1, 3, 3), "conv2d_0.bias": (8,),
        "conv2d_1.weight": (16, 8, 3, 3), "conv2d_1.bias": (16,),
        "dense_0.weight": (10, 64), "dense_0.bias": (10,),
    }
