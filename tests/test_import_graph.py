"""The package's layers, read from its own import statements: ops import no backend and the
backends import no compiler, runtime or training code (imports inside functions count
too), and no backend module imports itself around a loop as the modules load."""

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parents[1] / "seqgraph"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = PACKAGE.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imported(module: str, is_package: bool, node) -> list:
    """The seqgraph modules one import statement of ``module`` names."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = module if is_package else module.rpartition(".")[0]
    for _ in range(node.level - 1):
        base = base.rpartition(".")[0]
    source = ".".join(p for p in (base if node.level else "", node.module or "") if p)
    named = [f"{source}.{alias.name}" for alias in node.names]
    return [name for name in named if _is_module(name)] or [source]


def import_graph(loading_only: bool = False) -> nx.DiGraph:
    """``module -> module`` for every import of a seqgraph module by a seqgraph module (with
    ``loading_only``, those a module makes as it loads, not those inside its functions)."""
    graph = nx.DiGraph()
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        graph.add_node(module)
        tree = ast.parse(path.read_text(), str(path))
        for node in (tree.body if loading_only else ast.walk(tree)):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _imported(module, path.name == "__init__.py", node):
                    if target.startswith("seqgraph") and target != module:
                        graph.add_edge(module, target)
    return graph


def _edges(graph, source_prefix: str, target_prefixes: tuple) -> set:
    return {(a, b) for a, b in graph.edges
            if (a == source_prefix or a.startswith(source_prefix + "."))
            and any(b == p or b.startswith(p + ".") for p in target_prefixes)}


def test_the_graph_sees_known_imports():
    graph = import_graph()
    assert graph.has_edge("seqgraph.backends.numpy_backend", "seqgraph.backends.native_ops")
    assert graph.has_edge("seqgraph.runtime", "seqgraph.backends")
    assert graph.has_edge("seqgraph.backends.native_ops", "seqgraph.ops.loss")


def test_ops_import_no_backend():
    assert _edges(import_graph(), "seqgraph.ops", ("seqgraph.backends",)) == set()


def test_backends_import_no_compiler_runtime_or_training():
    layers_above = ("seqgraph.compiler", "seqgraph.runtime", "seqgraph.train", "seqgraph.passes")
    assert _edges(import_graph(), "seqgraph.backends", layers_above) == set()


def test_backend_modules_load_without_import_cycles():
    graph = import_graph(loading_only=True)
    backends = graph.subgraph(n for n in graph if n == "seqgraph.backends" or n.startswith("seqgraph.backends."))
    assert list(nx.simple_cycles(backends)) == []
