"""How an elementwise op is restated for the compiler's step loops: the :class:`Kernel`
an op of the registry carries (``Op.kernel``), derived from the op's formulas.

Every elementwise op is stated once, by its forward formula and one gradient formula per
differentiable input, in the language of :mod:`seqgraph.ops.formula` over ``{0}``, ``{1}``,
... (the inputs), ``{out}`` and ``{g}`` (:func:`seqgraph.ops.elementwise.pointwise`).
:func:`formula_kernel` derives the kernel from them; an op whose formulas depend on its
attributes (a leaky ReLU's slope) carries a function of those attributes that gives its
kernel, and :func:`node_kernel` finds a graph node's. Inside a scan every value has a
preallocated buffer, so the kernel writes the op as

- **in-place ufunc calls** (the NumPy path): ``multiply(a, b, out)`` writes straight into a
  buffer, with no allocation and no Python function of ours in between. Forward emitters
  take ``(out, ins)``, the names of the output buffer and of the inputs, and return a list
  of :class:`Call` records (:func:`render` writes one as the source line it stands for).
  Gradient emitters take ``(dst, mode, g, out, ins, tmp)`` and write one input's
  contribution into ``dst``: ``mode`` is ``"set"`` for the first contribution of a step and
  ``"add"`` for the rest; ``tmp`` names a scratch buffer shaped like that input. How a
  formula becomes calls is :func:`in_place_calls`;
- **formulas**, the data a fused chain is described by, from which a backend writes one
  elementwise C or CUDA kernel per chain (:func:`seqgraph.ops.formula.cuda_statements`).

``needs`` says which values each gradient reads (``"out"`` or an input index): the
variables of its formula, which decide what the forward loop must keep for the backward
one. The tests check every kernel against its op's forward and vjp. The names called are
ufuncs NumPy and CuPy share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional, Union

from .formula import Node, function, parse_formula, ufunc_name, variables

# The functions generated code may call; the scan binds each name to the backend's ufunc.
UFUNCS = ("add", "subtract", "multiply", "divide", "negative", "exp", "log", "tanh", "reciprocal",
          "maximum", "greater", "matmul", "dot", "copyto", "minimum", "less", "greater_equal",
          "less_equal", "equal", "not_equal", "where", "sqrt", "absolute", "power", "log1p", "erf")


def namespace(xp) -> dict:
    """The names of :data:`UFUNCS` bound to namespace ``xp``'s functions."""
    return {name: function(xp, name) for name in UFUNCS}


@dataclass(frozen=True)
class Call:
    """One call of a ufunc of :data:`UFUNCS`: ``ufunc(*operands, out)``.

    An operand is a buffer's name, a number, or a nested call (an expression temporary,
    ``out`` None, whose result the enclosing call reads). ``keyword`` passes the output as
    ``out=`` (as ``matmul`` wants it). ``copyto`` copies its one operand into ``out``."""
    ufunc: str
    operands: tuple
    out: Optional[str] = None
    keyword: bool = False

    def __post_init__(self):
        if self.ufunc not in UFUNCS:
            raise ValueError(f"{self.ufunc!r} is not one of the step loops' ufuncs")

    def buffers(self) -> list:
        """The names of the buffers this call reads (nested calls' included), in order."""
        found = []
        for operand in self.operands:
            if isinstance(operand, Call):
                found += operand.buffers()
            elif isinstance(operand, str):
                found.append(operand)
        return found


Operand = Union[str, float, Call]


def render(call: Operand) -> str:
    """The Python source of ``call`` (or of one operand) as a step loop runs it."""
    if isinstance(call, str):
        return call
    if not isinstance(call, Call):
        return repr(call)
    operands = [render(operand) for operand in call.operands]
    if call.ufunc == "copyto":
        operands.insert(0, call.out)  # numpy.copyto(dst, src) takes its output first
    elif call.out is not None:
        operands.append(f"out={call.out}" if call.keyword else call.out)
    return f"{call.ufunc}({', '.join(operands)})"


@dataclass(frozen=True)
class Kernel:
    """One elementwise op, in place and as formulas (see the module docstring)."""
    forward: object
    gradients: dict
    formula: str
    gradient_formulas: dict
    needs: dict
    passed: frozenset = frozenset()  # the inputs whose gradient is the upstream one itself

    def passes(self, port: int) -> bool:
        """Whether input ``port``'s gradient is the upstream gradient itself (add's on both
        inputs, sub's on the first), so its cotangent may share its consumer's buffer."""
        return port in self.passed


def formula_slots(arity: int) -> list:
    """The variables an op's formulas are parsed with: ``x0 ..`` its inputs, then its output."""
    return [f"x{k}" for k in range(arity + 1)]


def formula_tree(text: str, arity: int) -> Node:
    """An op's formula parsed: ``{k}`` read as ``x{k}``, ``{out}`` as ``x{arity}``, ``{g}`` as ``g0``."""
    slots = formula_slots(arity)
    return parse_formula(text.format(*slots[:arity], g="g0", out=slots[arity]))


def formula_kernel(arity: int, formula: str, gradient_formulas: dict) -> Kernel:
    """The :class:`Kernel` of an op stated by its formulas: the in-place forward and
    gradients are the formulas lowered to ufunc calls (:func:`in_place_calls`), and what
    each gradient reads is what its formula names."""
    slots = formula_slots(arity)
    inputs, output = slots[:arity], slots[arity]
    forward = _forward_calls(formula_tree(formula, arity), inputs, output)
    trees = {port: formula_tree(text, arity) for port, text in gradient_formulas.items()}
    gradients = {port: {mode: _gradient_calls(tree, mode) for mode in ("set", "add")} for port, tree in trees.items()}

    def emit_forward(out, ins):
        return _bound_calls(forward, dict(zip(slots, list(ins) + [out])))

    def emitter(calls):
        return lambda dst, mode, g, out, ins, tmp: _bound_calls(
            calls[mode], dict(zip(slots, list(ins) + [out]), g0=g, dst=dst, tmp=tmp))

    return Kernel(emit_forward, {port: emitter(calls) for port, calls in gradients.items()}, formula,
                  gradient_formulas, {port: _reads(tree, arity) for port, tree in trees.items()},
                  frozenset(port for port, tree in trees.items() if tree == Node("var", "g0")))


def _reads(tree: Node, arity: int) -> tuple:
    """What a gradient formula reads: the inputs it names (by index), then ``"out"``."""
    named = variables(tree)
    return tuple(k for k in range(arity) if f"x{k}" in named) + (("out",) if f"x{arity}" in named else ())


def in_place_ufunc(formula: str, arity: int) -> Optional[str]:
    """The ufunc that computes forward ``formula`` from the inputs alone, writing into a
    given buffer (``add`` for ``{0} + {1}``), or None where the formula is not one such call."""
    tree = formula_tree(formula, arity)
    if tree.leaf or (tree.kind == "call" and tree.op == "where") or not all(a.kind == "var" for a in tree.args):
        return None
    return ufunc_name(tree)


# -- lowering a formula to in-place calls -------------------------------------------------------
#
# The calls name formula variables (``x0``, ``g0``) and scratch buffers (``dst``, ``tmp``);
# an emitter binds those names to the step loop's buffers (:func:`_bound_calls`).


def in_place_calls(tree: Node, target: str, scratch: tuple) -> Optional[list]:
    """Calls leaving the value of ``tree`` in buffer ``target``, computing sub-expressions in
    ``target`` and the ``scratch`` buffers, with no new arrays; None where that cannot be
    done (``where`` has no in-place form; a sum or product of several computed terms needs
    a scratch buffer per term after the first).

    Operands keep the formula's order; a sum or a product is regrouped only where its
    terms would need more buffers as written (``g * y * (1 - y)`` with no scratch buffer
    computes ``1 - y`` first, then multiplies ``g`` and ``y`` in)."""
    if _plain(tree) is not None:
        return [_call("copyto", (_plain(tree),), target)]
    ufunc, operands = _ufunc_form(tree)
    if ufunc is None:
        return None
    computed = [k for k, a in enumerate(operands) if _plain(a) is None]
    if len(computed) < 2:
        first = [] if not computed else in_place_calls(operands[computed[0]], target, scratch)
        if first is None:
            return None
        return first + [_call(ufunc, tuple(target if _plain(a) is None else _plain(a) for a in operands), target)]
    for order in (computed, computed[::-1]):
        calls = _two_computed(ufunc, operands, order, target, scratch)
        if calls is not None:
            return calls
    return _regrouped(tree, target, scratch)


def _ufunc_form(tree: Node) -> tuple:
    """``(ufunc, operands)`` computing ``tree`` in one call (``1 / x`` is ``reciprocal(x)``),
    or ``(None, ())`` where it has none."""
    if tree.kind == "call" and tree.op == "where":
        return None, ()
    if tree.kind == "bin" and tree.op == "/" and tree.args[0] == Node("num", 1):
        return "reciprocal", (tree.args[1],)
    return ufunc_name(tree), tree.args


def _two_computed(ufunc: str, operands: tuple, order: list, target: str, scratch: tuple) -> Optional[list]:
    """Both computed operands of a binary call, the one at ``order[0]`` into ``target`` and
    the other into the first scratch buffer."""
    if not scratch:
        return None
    first = in_place_calls(operands[order[0]], target, scratch)
    second = in_place_calls(operands[order[1]], scratch[0], scratch[1:])
    if first is None or second is None:
        return None
    names = {order[0]: target, order[1]: scratch[0]}
    return first + second + [_call(ufunc, (names[0], names[1]), target)]


def _regrouped(tree: Node, target: str, scratch: tuple) -> Optional[list]:
    """A sum or a product with its computed terms first, each after the first in a scratch
    buffer, and then its plain terms (variables and numbers) one by one."""
    if tree.kind != "bin" or tree.op not in ("+", "*"):
        return None
    ufunc, terms = ufunc_name(tree), _terms(tree, tree.op)
    computed = [t for t in terms if _plain(t) is None]
    plain = [_plain(t) for t in terms if _plain(t) is not None]
    if not computed:
        return [_call(ufunc, tuple(plain[:2]), target)] + [_call(ufunc, (target, p), target) for p in plain[2:]]
    calls = in_place_calls(computed[0], target, scratch)
    for term in computed[1:]:
        more = in_place_calls(term, scratch[0], scratch[1:]) if scratch and calls is not None else None
        if more is None:
            return None
        calls += more + [_call(ufunc, (target, scratch[0]), target)]
    return None if calls is None else calls + [_call(ufunc, (target, p), target) for p in plain]


def _terms(tree: Node, op: str) -> list:
    """The terms of a chain of ``op`` (``+`` or ``*``), left to right."""
    if tree.kind == "bin" and tree.op == op:
        return _terms(tree.args[0], op) + _terms(tree.args[1], op)
    return [tree]


def _plain(tree: Node):
    """The operand ``tree`` is without computing anything: a variable's name, or a number
    (a negated number folded), else None."""
    if tree.kind == "var":
        return tree.op
    if tree.kind == "num":
        return float(tree.op)
    inner = _plain(tree.args[0]) if tree.kind == "neg" else None
    return -inner if isinstance(inner, float) else None


def _call(ufunc: str, operands: tuple, out: str) -> Call:
    # NumPy deprecates a third positional argument to maximum and minimum
    return Call(ufunc, operands, out, keyword=ufunc in ("maximum", "minimum"))


def formula_call(tree: Node, names: dict = None) -> Operand:
    """Parsed formula ``tree`` as one nested ufunc call over new arrays, ``names`` giving the
    buffer each variable is read from (by default its own name; ``where`` tests its
    condition against 0, as the kernels do)."""
    if tree.kind == "num":
        return tree.op
    if tree.kind == "var":
        return names[tree.op] if names else tree.op
    args = tuple(formula_call(a, names) for a in tree.args)
    if tree.kind == "call" and tree.op == "where":
        return Call("where", (Call("not_equal", (args[0], 0)),) + args[1:])
    return Call(ufunc_name(tree), args)


def _forward_calls(tree: Node, inputs: list, output: str) -> list:
    """The in-place forward: ``tree`` computed in the output buffer, or, where that would
    read an input after writing the output (which may share the input's buffer), one
    expression over new arrays copied into it."""
    calls = in_place_calls(tree, output, ())
    if calls is None or any(name in inputs for call in calls[1:] for name in call.buffers()):
        return [Call("copyto", (formula_call(tree),), output)]
    return calls


def _gradient_calls(tree: Node, mode: str) -> list:
    """One input's gradient ``tree``: written into ``dst`` (mode "set", with ``dst`` and
    ``tmp`` to compute in), or added to it (mode "add": computed in ``tmp``; a negated
    gradient is subtracted instead)."""
    if mode == "set":
        return in_place_calls(tree, "dst", ("tmp",)) or [Call("copyto", (formula_call(tree),), "dst")]
    combine, term = ("subtract", tree.args[0]) if tree.kind == "neg" else ("add", tree)
    if _plain(term) is not None:
        return [Call(combine, ("dst", _plain(term)), "dst")]
    calls = in_place_calls(term, "tmp", ())
    if calls is None:
        return [Call(combine, ("dst", formula_call(term)), "dst")]
    return calls + [Call(combine, ("dst", "tmp"), "dst")]


def _bound_calls(calls: list, names: dict) -> list:
    """``calls`` with every variable and scratch buffer named as ``names`` has it."""
    return [_named(call, names) for call in calls]


def _named(operand, names: dict):
    if isinstance(operand, str):
        return names[operand]
    if not isinstance(operand, Call):
        return operand
    out = names[operand.out] if operand.out is not None else None
    return Call(operand.ufunc, tuple(_named(o, names) for o in operand.operands), out, operand.keyword)


def node_kernel(node) -> Kernel:
    """The :class:`Kernel` of a graph node (``node``: its :class:`~seqgraph.ir.Node`)."""
    return _kernel(node.op, tuple(sorted(node.attrs.items())))


def _kernel(name: str, attrs: tuple = ()) -> Kernel:
    from .registry import REGISTRY

    op = REGISTRY.get(name)
    if op is None or op.kernel is None:
        raise KeyError(name)
    return op.kernel if isinstance(op.kernel, Kernel) else _bound(op.kernel, attrs)


@lru_cache(maxsize=None)
def _bound(make, attrs: tuple) -> Kernel:
    return make(**dict(attrs))


class _Kernels(Mapping):
    """Op name -> its :class:`Kernel` (with its attributes' defaults), read from the
    registry each time, for the ops that have one (so a test that replaces an op replaces
    its kernel too)."""

    def __getitem__(self, name: str) -> Kernel:
        return _kernel(name)

    def __iter__(self):
        from .registry import REGISTRY

        return (name for name, op in REGISTRY.items() if op.kernel is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)


KERNELS = _Kernels()


def needs(op: str, port: int, arity: int, attrs: dict = None) -> tuple:
    """What the gradient for input ``port`` of ``op`` (with attributes ``attrs``) reads:
    ``"out"`` and input indices (everything, for an op without a kernel here)."""
    if op in KERNELS:
        return _kernel(op, tuple(sorted((attrs or {}).items()))).needs.get(port, ())  # () where no gradient
    if op == "matmul":
        return (1 - port,)
    if op == "affine":  # (W, b, x): W's gradient reads x, x's reads W, b's reads neither
        return {0: (2,), 1: (), 2: (0,)}[port]
    if op == "slice":
        return ()
    return ("out",) + tuple(range(arity))
