"""A scan's step program: its forward and backward step as typed instructions over typed buffers.

:class:`~seqgraph.compiler.scan.ScanCode` builds, from the folded graph and its plans (which
values are kept, where each cotangent lives, which chains are fused), one :class:`Loop` per
direction: a ``prelude`` run once and a ``body`` run at every step ``t`` (backwards for the
backward loop), each a list of

- :class:`View`: a name bound to part of an array, ``S3[t + 1]``, ``K5[t][..., 128:256]``,
  or to a whole scratch buffer; what the instructions read and write by name;
- :class:`Instruction`: one ufunc call (a :class:`~seqgraph.ops.kernels.Call`, products
  included), one fused chain's kernel, one generic op's callable, a zero fill, or a slice's
  cotangent placed into its input's.

The arrays a loop is handed (or allocates) are :class:`Buffer` records, each with its role:
see :data:`ROLES`. The loop is data, so each backend lowers it its own way and nothing
parses generated code: :func:`python_source` writes the Python function the NumPy and CuPy
paths run, :func:`seqgraph.backends.native_loop.lower` the native C tape, and the CuPy chain
kernels come from the chains the :attr:`Loop.chains` name. ``print(loop)`` shows it, one
instruction a line (``seqgraph graph --program``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional

from .ops.kernels import Call, render

# What each kind of array a loop is handed holds, by the prefix of its name.
ROLES = {
    "S": "state steps",          # (T+1, B, ...): S[0] the initial value, S[t+1] the value at step t
    "K": "kept",                 # (T, B, ...): a value the backward loop (or a caller) reads
    "M": "mask",                 # (T, B, ...): a dropout mask
    "C": "carried cotangent",    # (B, ...): a state's cotangent carried from step t+1 to t
    "G": "cotangent over time",  # (T, B, ...): read after the loop by the deferred weight gradients
    "O": "outside cotangent",    # (T, B, ...): the cotangent handed in from outside the core
    "b": "scratch",              # (B, ...): reused every step, shared by values never alive together
    "X": "sequence input",       # (T, B, ...): a time-parallel input, row t at step t
    "w": "parameter",            # a static input (a weight, a bias), whole every step
    "wt": "transposed weight",   # a weight the forward products multiply by, transposed (or packed)
}


@dataclass(frozen=True)
class Buffer:
    """An array a step loop reads or writes: its ``name`` in the loop, its ``role`` (a key
    of :data:`ROLES`), the ``index`` in step order of the core node whose values it holds
    (None for an input from outside the core) and ``shape``, one row's (or, for a
    parameter, the whole array's)."""
    name: str
    role: str
    index: Optional[int]
    shape: tuple

    @property
    def over_time(self) -> bool:
        """Whether the array has a leading step axis that the loop indexes by ``t``."""
        return self.role in ("S", "K", "M", "G", "O", "X")

    def layout(self) -> str:
        """The whole array's axes: ``T+1`` steps for a state's, ``T`` for others over time,
        then ``B`` rows (a parameter has neither), then the shape."""
        lead = ["T+1"] if self.role == "S" else ["T"] if self.over_time else []
        rows = [] if self.role in ("w", "wt") else ["B"]
        return "[" + ", ".join(lead + rows + [str(n) for n in self.shape]) + "]"


@dataclass(frozen=True)
class View:
    """``name`` bound to ``of`` (a buffer's or another view's name) at step ``t + shift``
    of its leading axis (``shift`` None: all of it), then to ``columns`` ``(start, stop)``
    of its last axis (None: all of them)."""
    name: str
    of: str
    shift: Optional[int] = None
    columns: Optional[tuple] = None

    def __str__(self) -> str:
        index = "" if self.shift is None else "[t]" if self.shift == 0 else f"[t + {self.shift}]"
        span = "" if self.columns is None else f"[..., {self.columns[0]}:{self.columns[1]}]"
        return f"{self.name} = {self.of}{index}{span}"


KINDS = ("ufunc", "chain", "function", "zero", "place")


@dataclass(frozen=True)
class Instruction:
    """One step of a loop.

    - ``ufunc``: ``call`` (a :class:`~seqgraph.ops.kernels.Call`; a product is a ``dot`` or
      ``matmul`` call) writes its output;
    - ``chain``: fused chain kernel ``function`` reads ``inputs`` and writes ``out``;
    - ``function``: generic callable ``function`` of ``inputs`` is written into (``mode``
      "set") or added to ("add") ``out[0]``;
    - ``zero``: ``out[0]`` (its ``columns``, where given) is filled with zeros;
    - ``place``: a slice's cotangent ``inputs[0]`` is written into (or added to) ``columns``
      ``(start, stop, axis)`` of ``out[0]``; "set" zeroes the rest.

    ``out`` and ``inputs`` are names (inputs may be numbers, or nested calls for a ufunc)."""
    kind: str
    out: tuple
    inputs: tuple = ()
    mode: str = "set"
    call: Optional[Call] = None
    function: Optional[str] = None
    columns: Optional[tuple] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown instruction kind {self.kind!r}")

    def names(self) -> list:
        """Every name the instruction reads or writes."""
        read = [n for n in self.inputs if isinstance(n, str)]
        if self.call is not None:
            read = self.call.buffers()
        return list(self.out) + read + ([self.function] if self.function else [])

    def renamed(self, names: dict) -> "Instruction":
        """This instruction with each name in ``names`` replaced by its value there."""
        def name(operand):
            if isinstance(operand, Call):
                return replace(operand, operands=tuple(name(o) for o in operand.operands),
                               out=name(operand.out))
            return names.get(operand, operand) if isinstance(operand, str) else operand
        return replace(self, out=tuple(name(o) for o in self.out), inputs=tuple(name(i) for i in self.inputs),
                       call=name(self.call) if self.call is not None else None)

    def source(self) -> list:
        """The Python lines that run this instruction in a step loop."""
        if self.kind == "ufunc":
            return [render(self.call)]
        if self.kind == "chain":
            outs = "".join(f"{o}, " for o in self.out)
            return [f"{self.function}({', '.join(map(render, self.inputs))}, out=({outs}))"]
        (out,) = self.out
        if self.kind == "function":
            value = f"{self.function}({', '.join(map(render, self.inputs))})"
            return [f"copyto({out}, {value})" if self.mode == "set" else f"add({out}, {value}, {out})"]
        if self.kind == "zero":
            span = "" if self.columns is None else f"[..., {self.columns[0]}:{self.columns[1]}]"
            return [f"{out}{span}.fill(0)"]
        (g,), (start, stop, axis) = self.inputs, self.columns
        after = ", :" * (-axis - 1)
        if self.mode != "set":
            return [f"{out}[..., {start}:{stop}{after}] += {g}"]
        return [f"{out}[..., {start}:{stop}{after}] = {g}", f"{out}[..., :{start}{after}] = 0",
                f"{out}[..., {stop}:{after}] = 0"]

    def __str__(self) -> str:
        return "; ".join(self.source())


def ufunc(call: Call) -> Instruction:
    """The instruction running one ufunc ``call``."""
    return Instruction("ufunc", (call.out,), call=call)


@dataclass(frozen=True)
class Loop:
    """One direction of a scan's step: ``prelude`` (views and instructions run once), then
    ``body`` at every step ``t``, from the last step down when ``reverse``. ``buffers`` are
    the arrays it reads and writes by name, ``functions`` the callables it is handed (fused
    chains' kernels, generic ops), ``chains`` the fused chains run (by function name);
    ``liveness`` the first and last position at which each value held in scratch is alive
    (forward: in the step order of the core's nodes; backward: in the order of the gradient
    contributions), and ``sharing`` the scratch buffer each one got: values alive at once
    never share one."""
    name: str
    prelude: tuple
    body: tuple
    reverse: bool
    buffers: dict
    functions: tuple = ()
    chains: dict = field(default_factory=dict)
    liveness: dict = field(default_factory=dict)
    sharing: dict = field(default_factory=dict)

    def instructions(self) -> list:
        """The prelude's instructions, then the body's."""
        return [item for item in self.prelude + self.body if isinstance(item, Instruction)]

    def parameters(self) -> list:
        """The names the loop is handed: its buffers and its functions, sorted."""
        return sorted(set(self.buffers) | set(self.functions))

    def format(self) -> str:
        """The loop readably: its buffers with their roles, then one item a line."""
        lines = [f"{self.name} ({'for t from T-1 down to 0' if self.reverse else 'for t in 0 .. T-1'})"]
        for name in sorted(self.buffers):
            buffer = self.buffers[name]
            node = "" if buffer.index is None else f" of node {buffer.index}"
            lines.append(f"  buffer {name}: {ROLES[buffer.role]}{node}, {buffer.layout()}")
        lines += ["  once:"] + [f"    {item}" for item in self.prelude]
        lines += ["  every step:"] + [f"    {item}" for item in self.body]
        return "\n".join(lines)

    __str__ = format


@dataclass(frozen=True)
class StepProgram:
    """A scan's forward loop and the backward loop for one set of outside cotangents;
    ``nodes`` are the core's nodes in step order: ``v<i>`` names node ``i``'s value in the
    loops, ``g<i>`` its cotangent."""
    forward: Loop
    backward: Optional[Loop] = None
    nodes: tuple = ()

    def format(self) -> str:
        """The nodes, then both loops readably (see :meth:`Loop.format`)."""
        lines = [f"v{i}, g{i}: {node}" for i, node in enumerate(self.nodes)]
        return "\n".join(lines + [str(loop) for loop in (self.forward, self.backward) if loop is not None])

    __str__ = format


def python_source(loop: Loop) -> str:
    """The source of the Python function that runs ``loop``: its parameters are ``T`` and
    :meth:`Loop.parameters`."""
    header = "for t in range(T - 1, -1, -1):" if loop.reverse else "for t in range(T):"
    lines = [f"def {loop.name}({', '.join(['T'] + loop.parameters())}):"]
    lines += ["    " + line for item in loop.prelude for line in _lines(item)]
    body = [line for item in loop.body for line in _lines(item)]
    lines += ["    " + header] + ["        " + line for line in body or ["pass"]]
    return "\n".join(lines) + "\n"


def _lines(item) -> list:
    return [str(item)] if isinstance(item, View) else item.source()


def ordered_views(views: list) -> list:
    """``views`` ordered so that each is bound after the view it is a part of."""
    bound, pending, result = set(), list(views), []
    defined = {view.name for view in views}
    while pending:
        ready = next((v for v in pending if v.of in bound or v.of not in defined), None)
        if ready is None:
            raise AssertionError(f"cyclic views: {pending}")
        result.append(ready)
        pending.remove(ready)
        bound.add(ready.name)
    return result
