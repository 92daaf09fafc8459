"""The checked model: a flat list of typed values, each one op applied to earlier values.

This is what the checker hands to :mod:`seqgraph.graph`. Every value knows its op, its
arguments, its type (dtype, feature shape, whether it is a sequence, per-step or batched),
the layer it belongs to and the source span it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from .errors import Span
from .sizes import format_shape

# Ops that are not in the registry because the graph and executors give them meaning:
LEAF_OPS = {
    "input": "an input or target array fed by the caller",
    "param": "a trainable parameter",
    "lengths": "the valid length of each sequence of one time axis, shape (B,)",
    "state_init": "the initial value of a recurrent state (zeros unless the caller passes one)",
}
PREV = "prev"  # v[t-1]: args (v, initial value); the edge from v is a delay edge


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
