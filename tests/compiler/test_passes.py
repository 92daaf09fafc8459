"""Each graph pass alone: what it rewrites, that it is pure, that the graph stays well formed,
and that the program after every prefix of the pipeline computes the reference's numbers."""

import copy

import pytest

import seqgraph as sg
from seqgraph.gradcheck import check_model, random_inputs
from seqgraph.compiler import compile_program
from seqgraph.ir import node_of, nodes_of
from seqgraph.passes import optimize, pipeline
from seqgraph.passes.algebra import (fold_biases_into_products, hoist_time_parallel_terms,
                                     merge_shared_products, split_concat_products, widen_sibling_slices)
from seqgraph.passes.cleanup import (eliminate_common_subexpressions, eliminate_dead_nodes,
                                     eliminate_whole_slices)
from seqgraph.passes.rewrite import core_nodes, is_static

from .conftest import ROOT, USER_LSTM, check_graph, compare_with_reference, language_model, wanted

MODELS = sorted((ROOT / "models").glob("*.sg"))


def _ops(graph, nodes):
    return sorted(node_of(graph, n).op for n in nodes)


def _snapshot(graph):
    return (sorted(graph.nodes), sorted((u, v, repr(d)) for u, v, d in graph.edges(data=True)),
            {n: repr(d) for n, d in nodes_of(graph)})


def _peephole():
    return sg.load(ROOT / "models" / "peephole.sg").model()


def test_split_concat_products_takes_the_input_half_out_of_the_core():
    model = _peephole()
    before = core_nodes(model.graph)
    graph = eliminate_dead_nodes(split_concat_products(model.graph), wanted(model))
    check_graph(graph)
    product = "PeepholeLSTM_0/matmul"
    assert node_of(graph, product).op == "add"
    parts = node_of(graph, product).args
    core = core_nodes(graph)
    assert [p in core for p in parts] == [False, True]
    assert node_of(graph, parts[0]).shape == (256,) and node_of(graph, parts[0]).timed
    assert "PeepholeLSTM_0/concat" not in graph
    assert len(core) == len(before)  # the concat left the core, the product's recurrent half joined it
    weights = [node_of(graph, node_of(graph, p).args[0]) for p in parts]
    assert [w.attrs["start"] for w in weights] == [0, 16] and [w.shape for w in weights] == [(256, 16), (256, 64)]


def test_hoisting_leaves_one_add_per_step_and_adds_the_biases_once():
    model = language_model("lstm")
    graph = hoist_time_parallel_terms(model.graph)
    check_graph(graph)
    core = core_nodes(graph)
    reads_outside = [n for n in core if node_of(graph, n).op == "add"
                     and any(a not in core for a in node_of(graph, n).args)]
    assert len(reads_outside) == 1
    (step_add,) = reads_outside
    outside = next(a for a in node_of(graph, step_add).args if a not in core)
    assert not is_static(graph, outside)
    biases = [n for n, d in nodes_of(graph) if d.op == "add" and is_static(graph, n)]
    assert len(biases) == 1
    assert sorted(node_of(graph, biases[0]).args) == ["lstm_0.bias_hh", "lstm_0.bias_ih"]
    assert sum(1 for n in core if node_of(graph, n).op == "add") == \
        sum(1 for n in core_nodes(model.graph) if node_of(model.graph, n).op == "add") - 1


def test_the_input_projection_and_its_biases_become_one_affine_op():
    model = language_model("lstm")
    graph = fold_biases_into_products(hoist_time_parallel_terms(model.graph))
    check_graph(graph)
    core = core_nodes(graph)
    affine = {n: node_of(graph, n) for n in graph if node_of(graph, n).op == "affine"}
    assert len(affine) == 2 and not set(affine) & core  # the input projection and the output layer
    weights = sorted(d.args[0] for d in affine.values())
    assert weights == ["dense_0.weight", "lstm_0.weight_ih"]
    projection = next(d for d in affine.values() if d.args[0] == "lstm_0.weight_ih")
    assert node_of(graph, projection.args[1]).op == "add" and is_static(graph, projection.args[1])
    assert sum(1 for n in core if node_of(graph, n).op == "matmul") == 1  # the recurrent product stays
    assert not any(node_of(graph, n).op == "matmul" and n not in core for n in graph)


def _in_reverse_order(graph):
    """``graph`` with its nodes stored in the reverse order (a pass walks them in this order)."""
    reordered = graph.__class__(**graph.graph)
    reordered.add_nodes_from(reversed(list(graph.nodes(data=True))))
    reordered.add_edges_from(graph.edges(data=True))
    return reordered


@pytest.mark.parametrize("order", ["as built", "reversed"])
def test_folding_biases_plans_its_folds_before_removing_products(order):
    """``W @ concat(p, x)`` splits into a product of ``x`` and a static product that is its
    bias; folding removes products while the walk goes on, which once visited a removed node.
    In either node order every fold is made, on the original graph, and the graph stays well
    formed."""
    model = sg.parse("cell C(x : [X]) -> s : [H] {\n    param p : [H]\n    param W : [H, H + X]\n"
                     "    param b : [H]\n    state s : [H] = 0.5\n"
                     "    s = tanh(W @ concat(p, x) + b) * s[t-1]\n}\n"
                     "model M {\n    input x : seq[float, 4]\n    target y : [3]\n"
                     "    loss = mse(dense(last(C(x, 3)), 3), y)\n}\n").model()
    split = hoist_time_parallel_terms(split_concat_products(model.graph))
    graph = fold_biases_into_products(split if order == "as built" else _in_reverse_order(split))
    check_graph(graph)
    affine = {n: node_of(graph, n).args for n in graph if node_of(graph, n).op == "affine"}
    assert affine == {"C_0/add": ("C_0.W[3:7]", "C_0/add/grouped", "C_0/x"),  # its bias is W_p @ p + b,
                      "C_0/add/grouped": ("C_0.W[0:3]", "C_0.b", "C_0.p"),  # itself folded
                      "dense_0/add": ("dense_0.weight", "dense_0.bias", "last")}
    assert not any(node_of(graph, n).op == "matmul" for n in graph)
    assert _snapshot(split) == _snapshot(hoist_time_parallel_terms(split_concat_products(model.graph)))


def test_merge_shared_products_makes_one_product_per_operand():
    model = language_model("GateLSTM", extra=USER_LSTM)
    split = split_concat_products(model.graph)
    graph = merge_shared_products(split)
    check_graph(graph)
    products = [n for n, d in nodes_of(graph) if d.op == "matmul" and n.startswith("GateLSTM")]
    assert len([n for n, d in nodes_of(split) if d.op == "matmul" and n.startswith("GateLSTM")]) == 8
    assert len(products) == 2
    assert sorted(node_of(graph, p).shape for p in products) == [(24,), (24,)]
    stacked = node_of(graph, node_of(graph, products[0]).args[0])
    assert stacked.op == "concat" and stacked.attrs["axis"] == -2


SELF_CONCAT = """
cell Two(x : [X]) -> s2 : [H] {
    param W1 : [H, X + H]
    param W4 : [H, 2*H]
    state s1 : [H] = 0.5
    state s2 : [H] = 0.25
    s1 = tanh(W1 @ concat(x, s2[t-1]))
    s2 = s1 * tanh(W4 @ concat(s2[t-1], s2[t-1]))
}
model M {
    input x : seq[float, 2]
    target y : seq[float, 3]
    loss = mse(Two(x, 3), y)
}
"""


def test_a_state_concatenated_with_itself_keeps_its_weight_gradient():
    model = sg.parse(SELF_CONCAT).model()
    merged = merge_shared_products(split_concat_products(model.graph))
    check_graph(merged)
    stacked = [d for _, d in nodes_of(merged) if d.op == "concat" and d.attrs.get("axis") == -2]
    assert len(stacked) == 1 and len(stacked[0].args) == 3  # W1's state half and both halves of W4
    passes = pipeline(wanted(model))
    net = sg.compile(model, dtype="float64", seed=0)
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True, seed=1)
    for count in range(len(passes) + 1):
        net.program = compile_program(model.graph, model.checked, passes[:count])
        compare_with_reference(net)
        assert check_model(net, inputs, lengths).ok(1e-6)


def test_widening_joins_neighbouring_gates():
    lstm = optimize(language_model("lstm").graph, set(), pipeline(wanted(language_model("lstm")))[:5])
    core = core_nodes(lstm)
    sigmoids = [n for n in core if node_of(lstm, n).op == "sigmoid"]
    assert sorted(node_of(lstm, n).shape for n in sigmoids) == [(6,), (12,)]
    gru = language_model("gru")
    graph = optimize(gru.graph, wanted(gru), pipeline(wanted(gru))[:5])
    check_graph(graph)
    sigmoids = [n for n in core_nodes(graph) if node_of(graph, n).op == "sigmoid"]
    assert [node_of(graph, n).shape for n in sigmoids] == [(12,)]


def test_whole_slices_go_after_every_gate_is_widened():
    model = language_model("GateLSTM", extra=USER_LSTM)
    widened = optimize(model.graph, wanted(model), pipeline(wanted(model))[:5])
    whole = [n for n, d in nodes_of(widened) if d.op == "slice" and d.attrs["start"] == 0
             and d.attrs["stop"] == node_of(widened, d.args[0]).shape[-1]]
    assert len(whole) >= 2
    graph = eliminate_whole_slices(widened)
    check_graph(graph)
    assert not any(n in graph for n in whole)
    assert all(node_of(graph, n).op != "slice" or node_of(graph, n).attrs["stop"] -
               node_of(graph, n).attrs["start"] < node_of(graph, node_of(graph, n).args[0]).shape[-1]
               for n in graph)


def test_a_gate_by_gate_cell_s_joined_biases_ride_in_its_input_projection():
    model = language_model("GateLSTM", extra=USER_LSTM)
    graph = optimize(model.graph, wanted(model))
    projection = node_of(graph, "GateLSTM_0/add/grouped/wide")
    assert projection.op == "affine"  # the whole slice went first, so the bias folded
    assert node_of(graph, projection.args[1]).op == "concat"  # bi, bf, bg, bo joined


def test_common_subexpressions_become_one_node():
    model = sg.parse("""
    model M { input x : seq[float, 3]
        a = tanh(x) * tanh(x)
        b = tanh(x) * tanh(x)
        output s = a + b }""").model()
    graph = eliminate_common_subexpressions(model.graph, keep=wanted(model))
    check_graph(graph)
    assert _ops(graph, graph.nodes).count("tanh") == 1
    assert _ops(graph, graph.nodes).count("mul") == 1
    assert _ops(model.graph, model.graph.nodes).count("tanh") == 4


def test_dead_nodes_go_and_leaves_stay():
    model = sg.parse("""
    model M { input x : seq[float, 3]  input unused : seq[float, 3]
        wasted = exp(x)
        output s = tanh(x) }""").model()
    graph = eliminate_dead_nodes(model.graph, wanted(model))
    assert "exp" not in _ops(graph, graph.nodes)
    assert {"x", "unused"} <= set(graph.nodes)


@pytest.mark.parametrize("rewrite", [split_concat_products, hoist_time_parallel_terms, merge_shared_products,
                                     widen_sibling_slices, fold_biases_into_products, eliminate_whole_slices,
                                     eliminate_common_subexpressions])
def test_passes_are_pure(rewrite):
    model = language_model("GateLSTM", extra=USER_LSTM)
    graph = split_concat_products(model.graph) if rewrite is merge_shared_products else model.graph
    before = copy.deepcopy(_snapshot(graph))
    result = rewrite(graph)
    assert _snapshot(graph) == before
    assert result is not graph


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_every_prefix_of_the_pipeline_keeps_the_numbers(path):
    for model in sg.load(path).models.values():
        passes = pipeline(wanted(model))
        net = sg.compile(model, dtype="float64", seed=5)
        for count in range(len(passes) + 1):
            net.program = compile_program(model.graph, model.checked, passes[:count])
            check_graph(net.program.graph)
            compare_with_reference(net, batch=2, steps=3)


def test_user_cells_keep_the_numbers():
    for cell, extra in (("GateLSTM", USER_LSTM), ("gru", ""), ("rnn_relu", "")):
        compare_with_reference(sg.compile(language_model(cell, extra=extra), dtype="float64", seed=1))


def test_new_nodes_keep_the_source_spans_of_what_they_replace():
    model = _peephole()
    graph = optimize(model.graph, wanted(model))
    new = [n for n in graph if n not in model.graph]
    assert len(new) == 4  # weight halves, the recurrent half's product, the grouped bias
    for node in new:
        span = node_of(graph, node).span
        assert span is not None and span.filename.endswith("peephole.sg"), node
