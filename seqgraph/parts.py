"""Parts of a model compiled on their own: what inference and generation run.

A :class:`Part` is the piece of a model's folded graph that computes some of its values,
with chosen nodes cut off and fed from outside as inputs, compiled like a whole model. It
looks like a :class:`~seqgraph.program.Model` to :func:`seqgraph.runtime.prepare_feed`.

``net.predict`` runs the part that computes the outputs no target is needed for; a decoder
(:mod:`seqgraph.generate`) runs a *context* part once per batch (an encoder, an image's
features) and a *step* part once per generated token: the decoder's recurrence at one time
step, with its states cut off as inputs and handed back as outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import networkx as nx

from .compiler import Program, compile_program
from .ir import CheckedModel, node_of, set_node


@dataclass
class Part:
    """A compiled piece of a model: ``graph`` (its nodes, cut ones turned into ``input``
    leaves), ``checked`` (inputs, outputs and time axes of the piece) and ``program``."""
    name: str
    graph: nx.DiGraph
    checked: CheckedModel
    program: Program


def compile_part(model, outputs: dict, cut=(), renamed_args=None) -> Part:
    """The part of ``model`` that computes ``outputs`` (name -> node id), with every node of
    ``cut`` an input leaf fed by its node id. ``renamed_args`` (node -> {port: new leaf id})
    points some arguments at new input leaves of the same type as the node they replace."""
    graph = model.graph.copy()
    for node in cut:
        graph.remove_edges_from(list(graph.in_edges(node)))
        _make_leaf(graph, node, node)
    for node, ports in (renamed_args or {}).items():
        args = list(node_of(graph, node).args)
        for port, leaf in ports.items():
            _make_leaf(graph, leaf, args[port])
            args[port] = leaf
            graph.add_edge(leaf, node, ports=[port], delay=0)
        set_node(graph, node, replace(node_of(graph, node), args=args))
        for source in set(graph.predecessors(node)) - set(args):
            graph.remove_edge(source, node)
    wanted = set(outputs.values())
    needed = wanted.union(*(nx.ancestors(graph, n) for n in wanted))
    # removed from a copy, not taken as a subgraph: the nodes keep their order (a small
    # subgraph of networkx iterates in the order of the set it was made from)
    part = graph.copy()
    part.remove_nodes_from([n for n in graph if n not in needed])
    checked = model.checked
    declared = {**checked.inputs, **checked.targets}
    sub = replace(checked, inputs={name: node for name, node in declared.items() if node in part},
                  targets={}, outputs=dict(outputs), loss=None,
                  params={k: n for k, n in checked.params.items() if n in part},
                  states={k: n for k, n in checked.states.items() if n in part}, final_states={})
    return Part(model.name, part, sub, compile_program(part, sub))


def _make_leaf(graph: nx.DiGraph, leaf, like) -> None:
    """Make ``leaf`` an input fed with the value of ``like`` (a node no longer computed here)."""
    set_node(graph, leaf, replace(node_of(graph, like), op="input", args=()))
