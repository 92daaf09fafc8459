"""The checked model and the graph nodes made from it.

The checker hands :mod:`seqgraph.graph` a flat list of typed values, each one op applied to
earlier values. Every value knows its op, its arguments, its type (dtype, feature shape,
whether it is a sequence, per-step or batched), the layer it belongs to and the source span
it came from. Each node of a graph holds one frozen :class:`Node` record of the same facts
(:func:`node_of`, :func:`nodes_of`); a pass changes a node by storing a new record
(:func:`set_node`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterator, Optional

from .errors import Span
from .ops import REGISTRY
from .sizes import format_shape

# Ops that are not in the registry because the graph and executors give them meaning:
LEAF_OPS = {
    "input": "an input or target array fed by the caller",
    "param": "a trainable parameter",
    "lengths": "the valid length of each sequence of one time axis, shape (B,)",
    "state_init": "the initial value of a recurrent state (zeros unless the caller passes one)",
}
FEED_OPS = tuple(op for op in LEAF_OPS if op != "param")  # the leaves fed anew at every run
PREV = "prev"  # v[t-1]: args (v, initial value); the edge from v is a delay edge
PREV_RULE = "identity (reads the previous step)"


def gradient_rule(op: str) -> str:
    """The gradient rule of ``op``: the registry's, or what a leaf does."""
    if op in REGISTRY:
        return REGISTRY[op].rule
    if op == PREV:
        return PREV_RULE
    return "leaf: " + LEAF_OPS.get(op, op)


@dataclass(frozen=True)
class VType:
    """The type of a value.

    ``shape`` holds the feature axes only. At run time a value has shape
    ``(T, B) + shape`` when it is a whole sequence (``time`` names its time axis),
    ``(B,) + shape`` when it is per example or per step (``timed``: inside a recurrence),
    and ``shape`` alone when it is not batched (parameters, constants, losses).
    ``bound`` is the number of classes for integer values.
    """

    dtype: str
    shape: tuple
    time: Optional[str] = None
    batched: bool = True
    timed: bool = False
    bound: object = None

    @property
    def is_seq(self) -> bool:
        """A whole sequence, ``(T, B, ...)`` at run time."""
        return self.time is not None and not self.timed

    def with_shape(self, shape, dtype: str = "float") -> "VType":
        """The same kind of value with other features."""
        return replace(self, shape=tuple(shape), dtype=dtype, bound=None)

    def __str__(self) -> str:
        dims = ", ".join(str(d) for d in self.shape)
        if self.dtype == "int":
            inner = f"int, {self.bound}" if self.bound is not None else "int"
            return f"seq[{inner}]" if self.is_seq else f"int[{self.bound}]"
        if self.is_seq:
            return f"seq[float, {dims}]" if dims else "seq[float]"
        if not self.batched and not self.shape:
            return "scalar"
        return format_shape(self.shape)


@dataclass
class Value:
    """One op applied to earlier values (by id), with everything later stages need."""

    id: str
    op: str
    args: tuple
    type: VType
    span: Optional[Span]
    attrs: dict = field(default_factory=dict)
    layer: Optional[str] = None
    name: Optional[str] = None
    key: Optional[str] = None
    init: Optional[tuple] = None


@dataclass(frozen=True)
class Feedback:
    """``input x : seq[int, V] = feedback(logits, start = 1, end = 2, max_length = 20)``:
    when generating, ``x`` at step t is the token chosen from ``source`` at step t-1 (at step
    0 the ``start`` token); a sequence is done once it emits ``end`` or has ``max_length``
    tokens. ``input`` and ``source`` are node ids; ``source`` holds scores over the ``V`` ids
    (logits, or the probabilities of a softmax). Without a ``start`` token generating needs a
    prefix (a language model's prime); without an ``end`` every sequence runs to
    ``max_length``."""

    input: str
    source: str
    start: Optional[int]
    end: Optional[int]
    max_length: int
    span: Optional[Span] = None


@dataclass
class CheckedModel:
    """A model after checking: its values in order and what they mean to the outside."""

    name: str
    sizes: dict
    values: dict
    inputs: dict
    targets: dict
    outputs: dict
    params: dict
    states: dict
    final_states: dict
    loss: Optional[str]
    time_axes: dict
    span: Optional[Span] = None
    feedback: dict = field(default_factory=dict)  # input name -> Feedback


class Builder:
    """Appends values with unique readable ids; the checker's only way to make values."""

    def __init__(self):
        self.values: dict = {}
        self._taken: dict = {}

    def fresh_id(self, stem: str) -> str:
        """``stem`` if unused, else ``stem.1``, ``stem.2`` ..."""
        count = self._taken.get(stem, 0)
        self._taken[stem] = count + 1
        return stem if count == 0 else f"{stem}.{count}"

    def add(self, op: str, args, vtype: VType, span, *, scope: Optional[str] = None,
            stem: Optional[str] = None, **fields) -> Value:
        """Make and keep a new value; its id is ``scope/stem`` made unique."""
        stem = stem or op
        value_id = self.fresh_id(f"{scope}/{stem}" if scope else stem)
        value = Value(value_id, op, tuple(a.id if isinstance(a, Value) else a for a in args),
                      vtype, span, **fields)
        self.values[value_id] = value
        return value


class Attrs(dict):
    """A node's op attributes: a read-only dict (a pass that changes them makes a new node)."""

    def _read_only(self, *args, **kwargs):
        raise TypeError("node attributes are read-only; make a new Node with dataclasses.replace")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _read_only

    def __reduce__(self):
        return Attrs, (dict(self),)


@dataclass(frozen=True)
class Node:
    """What one graph node computes: ``op`` applied to the nodes ``args`` (ids, in order).

    ``time`` is the time axis the node runs over (a timed node a pass makes takes it from
    the node it stands in for); ``layer``, ``span`` and ``name`` say where it came from in
    the user's source, ``key`` is a parameter's or state's key (a ``lengths`` node's: its time
    axis) and ``init`` a parameter's initializer. In an unrolled graph ``base`` is the folded node a
    node copies and ``step`` its time step (None for a node outside the recurrence).
    """

    op: str
    args: tuple
    type: VType
    time: Optional[str] = None
    span: Optional[Span] = None
    attrs: Attrs = field(default_factory=Attrs)
    layer: Optional[str] = None
    name: Optional[str] = None
    key: Optional[str] = None
    init: Optional[tuple] = None
    base: Optional[str] = None
    step: Optional[int] = None

    def __post_init__(self):
        object.__setattr__(self, "args", tuple(self.args))
        if not isinstance(self.attrs, Attrs):
            object.__setattr__(self, "attrs", Attrs(self.attrs))

    @property
    def shape(self) -> tuple:
        """The feature axes (see :class:`VType`)."""
        return self.type.shape

    @property
    def dtype(self) -> str:
        """``"float"`` or ``"int"``."""
        return self.type.dtype

    @property
    def timed(self) -> bool:
        """Evaluated once per time step, inside a recurrence."""
        return self.type.timed

    @property
    def rule(self) -> str:
        """The gradient rule of the node's op, read from the op registry."""
        return gradient_rule(self.op)


NODE = "node"  # the one networkx attribute of a graph node: its Node


def identifier(name) -> str:
    """``name`` (a node id, a group) with every character that cannot be in a Python or C
    identifier (or a Graphviz cluster name) made ``_``."""
    return "".join(ch if ch.isalnum() else "_" for ch in str(name))


def node_of(graph, node) -> Node:
    """The :class:`Node` record of ``node`` in ``graph``."""
    return graph.nodes[node][NODE]


def nodes_of(graph) -> Iterator:
    """``(id, Node)`` for every node of ``graph``, in the graph's order."""
    return iter(graph.nodes(data=NODE))


def base_of(graph, node):
    """The folded node that ``node`` copies (in an unrolled graph), else ``node`` itself."""
    base = node_of(graph, node).base
    return node if base is None else base


def set_node(graph, node, record: Node) -> None:
    """Make ``record`` what ``node`` computes (adding ``node`` when it is new)."""
    graph.add_node(node, **{NODE: record})
