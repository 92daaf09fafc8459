"""Shared models and checks for the compiler tests."""

from pathlib import Path

import networkx as nx

import seqgraph as sg
from seqgraph.gradcheck import random_inputs, reference_differences
from seqgraph.ir import PREV, Node, node_of, nodes_of
from seqgraph.ops import REGISTRY

ROOT = Path(__file__).resolve().parents[2]
USER_LSTM = (ROOT / "benchmarks" / "user_lstm.sg").read_text()


def language_model(cell: str, hidden: int = 6, extra: str = ""):
    """A model running ``cell`` over float inputs, a dense layer and a loss at every step."""
    return sg.parse(extra + f"""
    model M(hidden = {hidden}) {{
        input x : seq[float, 5]
        target y : seq[int, 7]
        h = {cell}(x, hidden)
        loss = cross_entropy(dense(h, 7), y)
    }}""").model()


def wanted(model) -> set:
    """The nodes a compiled model must still compute."""
    return set(model.checked.outputs.values()) | set(model.checked.final_states.values())


def check_graph(graph: nx.DiGraph) -> None:
    """The folded graph's invariants: args and edges agree, only delay edges close cycles,
    every op node's shape is what its shape rule says, every node has every attribute."""
    keys = {"op", "args", "type", "shape", "dtype", "timed", "time", "layer", "span", "rule", "attrs"}
    for node, data in nodes_of(graph):
        assert isinstance(data, Node) and all(hasattr(data, key) for key in keys), node
        for port, arg in enumerate(data.args):
            assert port in graph.edges[arg, node]["ports"], (node, port)
        assert sum(len(graph.edges[u, node]["ports"]) for u in graph.predecessors(node)) == len(data.args)
        op = data.op
        if op in REGISTRY and op not in ("const", "step") and data.args:
            shapes = [node_of(graph, a).shape for a in data.args]
            assert tuple(REGISTRY[op].shape(*shapes, **data.attrs)) == tuple(data.shape), node
        if op == PREV:
            assert graph.edges[data.args[0], node]["delay"] == 1
    acyclic = graph.copy()
    acyclic.remove_edges_from([(u, v) for u, v, d in graph.edges(data=True) if d.get("delay")])
    assert nx.is_directed_acyclic_graph(acyclic)


def compare_with_reference(net, batch=3, steps=4, seed=2, atol=1e-12):
    """Outputs and every gradient of the compiled program equal the reference executor's."""
    inputs, lengths = random_inputs(net.model, batch=batch, steps=steps, ragged=True, seed=seed)
    differences = reference_differences(net, inputs, lengths)
    assert max(differences.values()) <= atol, differences