"""Text and DOT views of graphs (seqgraph.inspect)."""

import re
import shutil
from pathlib import Path

import pytest

import seqgraph as sg
from seqgraph import SeqgraphError, inspect

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
    text = inspect.text(lstm.graph, roles=inspect.roles(lstm))
    assert text.splitlines()[0] == "# LSTMAdding: folded graph, 2 delay edges, 40 nodes"
    lines = text.splitlines()[1:]
    assert len(lines) == lstm.graph.number_of_nodes()
    position = {line.split()[0]: i for i, line in enumerate(lines)}
    for source, target, data in lstm.graph.edges(data=True):
        if not data["delay"]:
            assert position[source] < position[target]


def test_text_line_shows_op_args_shape_layer_rule_and_name(lstm):
    line = lines_of(inspect.text(lstm.graph))["lstm_0/mul.2"]
    assert re.fullmatch(r"lstm_0/mul\.2 +  = mul\(lstm_0/sigmoid\.2, lstm_0/tanh\.1\)  \[32\] per-step"
                        r"  layer lstm_0  rule: switch  \(h\)", line)


def test_text_marks_delayed_reads(lstm):
    lines = lines_of(inspect.text(lstm.graph))
    assert "= prev(lstm_0/mul.2 @ t-1, lstm_0/h_init)" in lines["lstm_0/h_prev"]
    assert "= prev(lstm_0/add.3 @ t-1, lstm_0/c_init)" in lines["lstm_0/c_prev"]


def test_text_of_an_unrolled_graph_names_steps(lstm):
    lines = lines_of(inspect.text(lstm.unroll(2)))
    assert "= prev(lstm_0/mul.2@0)" in lines["lstm_0/h_prev@1"]
    assert "[32] step 1" in lines["lstm_0/mul.2@1"]
    assert "rule: distribute" in lines["lstm_0/add.3@0"]


def test_text_marks_loss_outputs_targets_and_params(lstm):
    lines = lines_of(inspect.text(lstm.graph, roles=inspect.roles(lstm)))
    assert lines["mse"].endswith("[loss]")
    assert lines["dense_0/add"].endswith("[output pred]")
    assert lines["y"].endswith("[target]")
    assert "= param  [128, 2]  layer lstm_0  init uniform_fan(32)" in lines["lstm_0.weight_ih"]


def test_text_narrowed_to_one_layer(lstm):
    text = inspect.text(lstm.unroll(3), layer="dense_0")
    assert sorted(lines_of(text)) == ["dense_0.bias", "dense_0.weight", "dense_0/add", "dense_0/matmul"]


def test_an_unknown_layer_suggests_a_known_one(lstm):
    with pytest.raises(SeqgraphError) as info:
        inspect.text(lstm.graph, layer="lstm0")
    assert info.value.message == "no layer 'lstm0' in this graph"
    assert info.value.hint == "did you mean 'lstm_0'?"


def test_dot_colours_kinds_and_labels_gate_rules(lstm):
    source = inspect.dot(lstm.graph, roles=inspect.roles(lstm))
    assert source.startswith('digraph "LSTMAdding" {') and source.rstrip().endswith("}")
    fill = {kind: style[0] for kind, style in inspect.KIND_STYLE.items()}
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
    source = inspect.dot(lstm.graph)
    delay = re.findall(r'"([^"]+)" -> "([^"]+)" \[style=dashed[^\]]*label="t-1"', source)
    assert sorted(delay) == [("lstm_0/add.3", "lstm_0/c_prev"), ("lstm_0/mul.2", "lstm_0/h_prev")]


def test_dot_groups_unrolled_steps_in_clusters(lstm):
    source = inspect.dot(lstm.unroll(3))
    for step in range(3):
        assert f'subgraph "cluster_t{step}" {{' in source
        assert f'label="t = {step}"' in source
    cluster = source.split('subgraph "cluster_t1" {')[1].split("}")[0]
    assert '"lstm_0/mul.2@1"' in cluster and '"lstm_0/mul.2@0"' not in cluster
    assert '"lstm_0.weight_ih"' not in cluster  # parameters live outside the steps
    assert re.search(r'"lstm_0/mul.2@0" -> "lstm_0/h_prev@1" \[style=dashed', source)


def test_dot_narrowed_to_a_layer_shows_its_neighbours_dashed(lstm):
    source = inspect.dot(lstm.graph, layer="dense_0")
    assert '"dense_0/matmul"' in source
    assert 'style="rounded,filled,dashed"' in statement(source, "last")  # it feeds the layer
    assert '"lstm_0/mul.2"' not in source


def test_dot_escapes_quotes():
    assert inspect._quote('a"b\\c') == '"a\\"b\\\\c"'


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_svg_is_drawn_by_graphviz(lstm):
    svg = inspect.view(lstm.unroll(2), "svg", roles=inspect.roles(lstm))
    assert b"<svg" in svg and b"lstm_0/mul.2@1" in svg


def test_without_graphviz_svg_is_a_clear_error(lstm, monkeypatch):
    monkeypatch.setattr(inspect.shutil, "which", lambda name: None)
    with pytest.raises(SeqgraphError) as info:
        inspect.view(lstm.graph, "png")
    assert "needs Graphviz" in info.value.message
    assert "apt-get install graphviz" in info.value.hint and "brew install graphviz" in info.value.hint
