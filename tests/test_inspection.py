"""Text and DOT views of graphs (seqgraph.inspection)."""

import re
import shutil
from pathlib import Path

import pytest

import seqgraph as sg
from seqgraph import SeqgraphError, inspection
from seqgraph.ir import node_of

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def lstm():
    return sg.load(MODELS / "lstm_adding.sg").model()


def statement(source: str, node: str) -> str:
    """The DOT statement that declares ``node``."""
    return next(line.strip() for line in source.splitlines() if line.strip().startswith(f'"{node}" ['))


def lines_of(text: str) -> dict:
    """Node id -> its line in a text view."""
    return {line.split()[0]: line for line in text.splitlines()[1:]}


def test_text_has_one_line_per_node_in_topological_order(lstm):
    text = inspection.text(lstm.graph, roles=inspection.roles(lstm))
    assert text.splitlines()[0] == "# LSTMAdding: folded graph, 2 delay edges, 40 nodes"
    lines = text.splitlines()[1:]
    assert len(lines) == lstm.graph.number_of_nodes()
    position = {line.split()[0]: i for i, line in enumerate(lines)}
    for source, target, data in lstm.graph.edges(data=True):
        if not data["delay"]:
            assert position[source] < position[target]


def test_text_line_shows_op_args_shape_layer_rule_and_name(lstm):
    line = lines_of(inspection.text(lstm.graph))["lstm_0/mul.2"]
    assert re.fullmatch(r"lstm_0/mul\.2 +  = mul\(lstm_0/sigmoid\.2, lstm_0/tanh\.1\)  \[32\] per-step"
                        r"  layer lstm_0  rule: switch  \(h\)", line)


def test_text_marks_delayed_reads(lstm):
    lines = lines_of(inspection.text(lstm.graph))
    assert "= prev(lstm_0/mul.2 @ t-1, lstm_0/h_init)" in lines["lstm_0/h_prev"]
    assert "= prev(lstm_0/add.3 @ t-1, lstm_0/c_init)" in lines["lstm_0/c_prev"]


def test_text_of_an_unrolled_graph_names_steps(lstm):
    lines = lines_of(inspection.text(lstm.unroll(2)))
    assert "= prev(lstm_0/mul.2@0)" in lines["lstm_0/h_prev@1"]
    assert "[32] step 1" in lines["lstm_0/mul.2@1"]
    assert "rule: distribute" in lines["lstm_0/add.3@0"]


def test_text_marks_loss_outputs_targets_and_params(lstm):
    lines = lines_of(inspection.text(lstm.graph, roles=inspection.roles(lstm)))
    assert lines["mse"].endswith("[loss]")
    assert lines["dense_0/add"].endswith("[output pred]")
    assert lines["y"].endswith("[target]")
    assert "= param  [128, 2]  layer lstm_0  init uniform_fan(32)" in lines["lstm_0.weight_ih"]


def test_text_narrowed_to_one_layer(lstm):
    text = inspection.text(lstm.unroll(3), layer="dense_0")
    assert sorted(lines_of(text)) == ["dense_0.bias", "dense_0.weight", "dense_0/add", "dense_0/matmul"]


def test_an_unknown_layer_suggests_a_known_one(lstm):
    with pytest.raises(SeqgraphError) as info:
        inspection.text(lstm.graph, layer="lstm0")
    assert info.value.message == "no layer 'lstm0' in this graph"
    assert info.value.hint == "did you mean 'lstm_0'?"


def test_dot_colours_kinds_and_labels_gate_rules(lstm):
    source = inspection.dot(lstm.graph, roles=inspection.roles(lstm))
    assert source.startswith('digraph "LSTMAdding" {') and source.rstrip().endswith("}")
    fill = {kind: style[0] for kind, style in inspection.KIND_STYLE.items()}
    for node, kind in [("lstm_0.weight_ih", "param"), ("x", "input"), ("y", "target"),
                       ("lstm_0/h_prev", "state"), ("lstm_0/h_init", "state"),
                       ("lstm_0/mul.2", "op"), ("mse", "loss"), ("dense_0/add", "output")]:
        assert f'fillcolor="{fill[kind]}"' in statement(source, node), node
    mul = statement(source, "lstm_0/mul.2")
    assert mul.startswith(r'"lstm_0/mul.2" [label="mul  (h)\nlstm_0/mul.2\n[32] per-step\nrule: switch"')
    assert r'\nrule: distribute"' in statement(source, "lstm_0/add.3")
    assert "rule:" not in statement(source, "lstm_0/tanh")
    assert 'subgraph "cluster_layer_lstm_0"' in source


def test_dot_draws_delay_edges_dashed_and_labelled(lstm):
    source = inspection.dot(lstm.graph)
    delay = re.findall(r'"([^"]+)" -> "([^"]+)" \[style=dashed[^\]]*label="t-1"', source)
    assert sorted(delay) == [("lstm_0/add.3", "lstm_0/c_prev"), ("lstm_0/mul.2", "lstm_0/h_prev")]


def test_dot_groups_unrolled_steps_in_clusters(lstm):
    source = inspection.dot(lstm.unroll(3))
    for step in range(3):
        assert f'subgraph "cluster_t{step}" {{' in source
        assert f'label="t = {step}"' in source
    cluster = source.split('subgraph "cluster_t1" {')[1].split("}")[0]
    assert '"lstm_0/mul.2@1"' in cluster and '"lstm_0/mul.2@0"' not in cluster
    assert '"lstm_0.weight_ih"' not in cluster  # parameters live outside the steps
    assert re.search(r'"lstm_0/mul.2@0" -> "lstm_0/h_prev@1" \[style=dashed', source)


def test_dot_narrowed_to_a_layer_shows_its_neighbours_dashed(lstm):
    source = inspection.dot(lstm.graph, layer="dense_0")
    assert '"dense_0/matmul"' in source
    assert 'style="rounded,filled,dashed"' in statement(source, "last")  # it feeds the layer
    assert '"lstm_0/mul.2"' not in source


def test_dot_escapes_quotes():
    assert inspection._quote('a"b\\c') == '"a\\"b\\\\c"'


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_svg_is_drawn_by_graphviz(lstm):
    svg = inspection.view(lstm.unroll(2), "svg", roles=inspection.roles(lstm))
    assert b"<svg" in svg and b"lstm_0/mul.2@1" in svg


def test_without_graphviz_svg_is_a_clear_error(lstm, monkeypatch):
    monkeypatch.setattr(inspection.shutil, "which", lambda name: None)
    with pytest.raises(SeqgraphError) as info:
        inspection.view(lstm.graph, "png")
    assert "needs Graphviz" in info.value.message
    assert "apt-get install graphviz" in info.value.hint and "brew install graphviz" in info.value.hint


# --- the gradient graph beside the forward one ---------------------------------------------------

@pytest.fixture(scope="module")
def rnn():
    return sg.load(MODELS / "rnn_adding.sg").model()


def test_gradient_view_folds_the_backward_graph_with_t_plus_1_edges(lstm):
    graph = inspection.with_gradients(lstm)
    # c_t's gradient sums what tanh(c_t) hands back and what step t+1's c[t-1] hands back
    assert set(node_of(graph, "grad:lstm_0/add.3").args) == {"vjp:lstm_0/tanh.1", "vjp:lstm_0/c_prev"}
    assert graph.edges["vjp:lstm_0/c_prev", "grad:lstm_0/add.3"]["delay"] == 1
    assert not graph.edges["vjp:lstm_0/tanh.1", "grad:lstm_0/add.3"]["delay"]
    assert node_of(graph, "vjp:lstm_0/add.3").rule == "distribute"
    assert node_of(graph, "vjp:lstm_0/mul.2").rule == "switch"
    lines = lines_of(inspection.text(graph))
    assert "= grad(vjp:lstm_0/tanh.1, vjp:lstm_0/c_prev @ t+1)" in lines["grad:lstm_0/add.3"]
    assert "= grad(1)" in lines["grad:mse"]
    assert "grad:y" not in graph  # a loss's target gets no gradient


def test_unrolled_gradient_view_sums_a_weight_over_steps(rnn):
    graph = inspection.with_gradients(rnn, 3)
    assert node_of(graph, "grad:rnn_0.weight_hh").args == tuple(f"vjp:rnn_0/matmul.1@{t}" for t in (2, 1, 0))
    assert graph.edges["vjp:rnn_0/h_prev@2", "grad:rnn_0/tanh@1"]["carry"]
    assert node_of(graph, "grad:rnn_0/tanh@1").step == 1
    assert set(node_of(graph, "grad:rnn_0/h_init").args) == {"vjp:rnn_0/h_prev@0"}


def test_gradient_dot_puts_forward_and_backward_side_by_side(rnn):
    source = inspection.dot(inspection.with_gradients(rnn, 2), roles=inspection.roles(rnn))
    assert source.index('subgraph "cluster_forward" {') < source.index('subgraph "cluster_backward" {')
    backward = source.split('subgraph "cluster_backward" {')[1]
    assert 'subgraph "cluster_backward_t1" {' in backward and '"grad:rnn_0/tanh@1" [' in backward
    assert '"rnn_0/tanh@1" [' not in backward
    fill = {kind: style[0] for kind, style in inspection.KIND_STYLE.items()}
    grad = statement(source, "grad:rnn_0.weight_hh")
    assert grad.startswith(r'"grad:rnn_0.weight_hh" [label="d loss\ngrad:rnn_0.weight_hh\n[32, 32]'
                           r'\nsum of 2 contributions"')
    assert f'fillcolor="{fill["grad"]}"' in grad
    vjp = statement(source, "vjp:rnn_0/add.2@1")
    assert r'label="vjp of add\nvjp:rnn_0/add.2@1\n[32] step 1\nrule: distribute"' in vjp
    assert f'fillcolor="{fill["vjp"]}"' in vjp
    assert re.search(r'"vjp:rnn_0/h_prev@1" -> "grad:rnn_0/tanh@0" \[color="#7c3aed", style=dashed, '
                     r'fontcolor="#7c3aed", label="t\+1"\]', source)
    assert re.search(r'"mse" -> "grad:mse" \[style=dotted[^\]]*label="seed 1"', source)


def test_gradient_view_narrowed_to_a_layer(rnn):
    lines = lines_of(inspection.text(inspection.with_gradients(rnn), layer="dense_0"))
    assert sorted(lines) == ["dense_0.bias", "dense_0.weight", "dense_0/add", "dense_0/matmul",
                             "grad:dense_0.bias", "grad:dense_0.weight", "grad:dense_0/add",
                             "grad:dense_0/matmul", "vjp:dense_0/add", "vjp:dense_0/matmul"]


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("fmt, magic", [("svg", b"<svg"), ("png", b"\x89PNG")])
def test_gradient_view_is_drawn_by_graphviz(rnn, fmt, magic):
    image = inspection.view(inspection.with_gradients(rnn, 2), fmt, layer="rnn_0", roles=inspection.roles(rnn))
    assert magic in image[:1000]
    if fmt == "svg":
        assert b"grad:rnn_0/tanh@1" in image and b"t = 1" in image


def test_graph_command_draws_the_gradient_graph(capsys):
    from seqgraph import cli
    assert cli.main(["graph", str(MODELS / "rnn_adding.sg"), "--grad", "--layer", "rnn_0"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# RNNAdding: folded graph, 1 delay edge, with its gradient graph, layer rnn_0,")
    assert re.search(r"\ngrad:rnn_0/tanh +  = grad\(vjp:rnn_0/h_seq, vjp:rnn_0/h_prev @ t\+1\)", out)
    assert cli.main(["graph", str(MODELS / "rnn_adding.sg"), "--grad", "--layer", "rnn0"]) == 1
    assert capsys.readouterr().err.startswith("error: no layer 'rnn0' in this graph\nhint: did you mean 'rnn_0'?")
