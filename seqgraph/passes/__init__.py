"""Optimisation passes: graph → graph rewrites, each a pure function, run from a plain list.

:data:`PIPELINE` is the order :func:`optimize` applies them in. Every pass keeps the numbers:
the program compiled after any prefix of the list computes what the reference executor
computes. Planning passes that work on one recurrent core rather than the whole graph
(:mod:`.fusion`, :mod:`.buffers`) are called by the compiler.
"""

from __future__ import annotations

from functools import partial

import networkx as nx

from .algebra import (fold_biases_into_products, hoist_time_parallel_terms, merge_shared_products,
                      split_concat_products, widen_sibling_slices)
from .cleanup import eliminate_common_subexpressions, eliminate_dead_nodes, eliminate_whole_slices


def pipeline(wanted) -> list:
    """The graph passes in order, ready to call with a graph (``wanted``: nodes to keep)."""
    return [
        partial(eliminate_dead_nodes, wanted=wanted),
        split_concat_products,
        hoist_time_parallel_terms,
        merge_shared_products,
        widen_sibling_slices,
        partial(eliminate_whole_slices, keep=wanted),
        partial(eliminate_dead_nodes, wanted=wanted),
        fold_biases_into_products,
        partial(eliminate_common_subexpressions, keep=wanted),
        partial(eliminate_dead_nodes, wanted=wanted),
    ]


def optimize(graph: nx.DiGraph, wanted, passes=None) -> nx.DiGraph:
    """``graph`` after every pass of :func:`pipeline` (or the given list of passes)."""
    for apply in pipeline(wanted) if passes is None else passes:
        graph = apply(graph)
    return graph
