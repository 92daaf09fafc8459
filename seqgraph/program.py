"""Programs and models: what ``seqgraph.load`` and ``seqgraph.parse`` hand back."""

from __future__ import annotations

import functools
from importlib import resources
from pathlib import Path
from typing import Optional

import networkx as nx

from . import check, graph
from .errors import Collector, SeqgraphError, decode_utf8, did_you_mean
from .ir import CheckedModel, node_of
from .syntax import ast, parse_source


@functools.lru_cache(maxsize=1)
def prelude_cells() -> dict:
    """The cells shipped with seqgraph (``seqgraph/prelude/*.sg``): lstm, gru, rnn, rnn_relu."""
    cells: dict = {}
    folder = resources.files("seqgraph").joinpath("prelude")
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sg"):
            program = parse_source(entry.read_text("utf-8"), f"prelude/{entry.name}")
            cells.update(check.check_cells(program, cells))
    return cells


class Model:
    """One checked model of a program, at given sizes.

    ``graph`` is its folded graph; ``unroll(steps)`` its unrolled graph.
    """

    def __init__(self, program: "Program", node: ast.Model, sizes: Optional[dict] = None):
        self.program = program
        self.ast = node
        self.name = node.name
        self.overrides = dict(sizes or {})  # the sizes given, not defaulted
        self.checked: CheckedModel = check.check_model(program.ast, node, program.cells, sizes)
        self.graph: nx.DiGraph = graph.build_graph(self.checked)

    @property
    def sizes(self) -> dict:
        """The model's size parameters as used here."""
        return dict(self.checked.sizes)

    @property
    def inputs(self) -> dict:
        """Input name → node id (targets included)."""
        return {**self.checked.inputs, **self.checked.targets}

    @property
    def outputs(self) -> dict:
        """Output name → node id (``loss`` among them when the model has one)."""
        return dict(self.checked.outputs)

    @property
    def params(self) -> dict:
        """Parameter key → (shape, initialiser)."""
        return {key: (node_of(self.graph, n).shape, node_of(self.graph, n).init)
                for key, n in self.checked.params.items()}

    @property
    def train(self) -> Optional[ast.Train]:
        """The train block that applies to this model, if the file has one."""
        return self.program.train_block(self.name)

    def with_sizes(self, **sizes) -> "Model":
        """The same model with other sizes (``hidden=256``), keeping those given before; a
        size not given either way still follows its default (which may read other sizes)."""
        return Model(self.program, self.ast, {**self.overrides, **sizes})

    def batch_of(self, inputs: dict) -> int:
        """The batch size of ``inputs`` (by input name): the second axis of the first one where
        it is a sequence, else its first axis."""
        name, array = next(iter(inputs.items()))
        return int(array.shape[1] if node_of(self.graph, self.inputs[name]).type.is_seq else array.shape[0])

    def unroll(self, steps: int) -> nx.DiGraph:
        """The acyclic graph of ``steps`` time steps."""
        return graph.unroll(self.graph, steps)

    def require_loss(self) -> str:
        """The loss node; a model trained without one is a user error."""
        if self.checked.loss is None:
            raise SeqgraphError(f"model {self.name} has no loss to train", self.ast.span,
                                "assign one, e.g. loss = cross_entropy(logits, y)")
        return self.checked.loss

    def __repr__(self) -> str:
        return f"<seqgraph model {self.name} {self.sizes}>"


def _prelude_seen_by(tree: ast.Program) -> dict:
    """The prelude cells a file can use: all of them, except that a prelude file itself
    (``seqgraph check seqgraph/prelude/lstm.sg``) is checked without its own shipped copies."""
    cells = prelude_cells()
    folder = Path(str(resources.files("seqgraph").joinpath("prelude"))).resolve()
    try:
        is_prelude_file = Path(tree.source.filename).resolve().parent == folder
    except (OSError, ValueError):
        is_prelude_file = False
    if not is_prelude_file:
        return cells
    own = {cell.name for cell in tree.cells}
    return {name: cell for name, cell in cells.items() if name not in own}


class Program:
    """A parsed and checked ``.sg`` file: its models, cells and train blocks."""

    def __init__(self, tree: ast.Program):
        self.ast = tree
        self.filename = tree.source.filename
        self.cells = check.check_cells(tree, _prelude_seen_by(tree))
        collector = Collector()
        self.models: dict = {}
        for node in tree.models:
            if node.name in self.models:
                collector.add(SeqgraphError(f"model '{node.name}' is defined twice", node.span))
                continue
            try:
                self.models[node.name] = Model(self, node)
            except SeqgraphError as error:
                collector.add(error)
        for train in tree.trains:
            if train.model is not None and train.model not in {m.name for m in tree.models}:
                collector.add(SeqgraphError(f"train block names unknown model '{train.model}'", train.span,
                                            did_you_mean(train.model, [m.name for m in tree.models])))
        collector.raise_if_any()

    def model(self, name: Optional[str] = None) -> Model:
        """The model called ``name``, or the only one."""
        if name is None:
            if len(self.models) != 1:
                raise SeqgraphError(f"{self.filename} holds {len(self.models)} models; name one",
                                    hint="models: " + ", ".join(self.models) if self.models else None)
            return next(iter(self.models.values()))
        if name not in self.models:
            raise SeqgraphError(f"no model '{name}' in {self.filename}", None, did_you_mean(name, self.models))
        return self.models[name]

    def train_block(self, model_name: str) -> Optional[ast.Train]:
        """The train block naming ``model_name``, else an unnamed one."""
        named = [t for t in self.ast.trains if t.model == model_name]
        unnamed = [t for t in self.ast.trains if t.model is None]
        return (named or unnamed or [None])[0]


def parse(text: str, filename: str = "<string>") -> Program:
    """Parse and check seqgraph source text."""
    return Program(parse_source(text, filename))


def load(path) -> Program:
    """Read, parse and check a ``.sg`` file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SeqgraphError(f"no such file: {path}", hint="check the path") from None
    except OSError as error:
        raise SeqgraphError(f"cannot read {path}: {error.strerror}") from None
    return parse(decode_utf8(raw, str(path), f"model file {path}"), str(path))
