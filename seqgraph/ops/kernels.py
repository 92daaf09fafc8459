"""How an elementwise op is restated for the compiler's step loops: the :class:`Kernel`
an op of the registry carries (``Op.kernel``), and the helpers that write one.

Each elementwise op a recurrent cell is made of (add, sub, mul, div, neg, exp, log, relu,
sigmoid, tanh) is defined in :mod:`seqgraph.ops.elementwise` with its shape rule, forward
and vjp, and beside them its kernel (the ops of :mod:`seqgraph.ops.pointwise` are stated by formulas alone, and
:func:`formula_kernel` writes their in-place form from them). An op whose formulas depend on
its attributes (a leaky ReLU's slope) carries a function of those attributes that gives its
kernel; :func:`node_kernel` finds a graph node's. Inside a scan every value has a preallocated buffer,
so the kernel writes the op as

- **in-place ufunc calls** (the NumPy path): ``multiply(a, b, out)`` writes straight into a
  buffer, with no allocation and no Python function of ours in between. Forward emitters
  take ``(out, ins)``, the names of the output buffer and of the inputs, and return source
  lines. Gradient emitters take ``(dst, mode, g, out, ins, tmp)`` and write one input's
  contribution into ``dst``: ``mode`` is ``"set"`` for the first contribution of a step and
  ``"add"`` for the rest; ``tmp`` names a scratch buffer shaped like that input;
- **formulas** over ``{0}``, ``{1}`` (inputs), ``{out}`` and ``{g}``, the data a fused chain
  is described by, from which a GPU backend can write one elementwise kernel per chain.

``needs`` says which values each gradient reads (``"out"`` or an input index), which decides
what the forward loop must keep for the backward one. The tests check every kernel against
its op's forward and vjp. The names called are ufuncs NumPy and CuPy share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from functools import lru_cache

from ..backends.cuda_kernels import function, parse_formula, ufunc_expression

# The functions generated code may call; the scan binds each name to the backend's ufunc.
UFUNCS = ("add", "subtract", "multiply", "divide", "negative", "exp", "log", "tanh", "reciprocal",
          "maximum", "greater", "matmul", "dot", "copyto", "minimum", "less", "greater_equal",
          "less_equal", "equal", "not_equal", "where", "sqrt", "absolute", "power", "log1p", "erf")


def namespace(xp) -> dict:
    """The names of :data:`UFUNCS` bound to namespace ``xp``'s functions."""
    return {name: function(xp, name) for name in UFUNCS}


@dataclass(frozen=True)
class Kernel:
    """One elementwise op, in place and as formulas (see the module docstring)."""
    forward: object
    gradients: dict
    formula: str
    gradient_formulas: dict
    needs: dict


def ufunc_call(ufunc):
    """The forward ``ufunc(inputs..., out)``: one call writing into the output buffer."""
    return lambda out, ins: [f"{ufunc}({', '.join(ins)}, {out})"]


def into(dst, mode, tmp, compute):
    """Lines writing ``compute(target)`` into ``dst`` (set) or adding it (add)."""
    if mode == "set":
        return compute(dst)
    return compute(tmp) + [f"add({dst}, {tmp}, {dst})"]


def passed(dst, mode, g, out, ins, tmp):
    """The gradient ``g`` itself (add's, on both inputs)."""
    return [f"copyto({dst}, {g})"] if mode == "set" else [f"add({dst}, {g}, {dst})"]


def negated(dst, mode, g, out, ins, tmp):
    """The gradient ``-g``."""
    return [f"negative({g}, {dst})"] if mode == "set" else [f"subtract({dst}, {g}, {dst})"]


def times(factor):
    """The gradient ``g * factor(out, ins)``."""
    return lambda dst, mode, g, out, ins, tmp: into(
        dst, mode, tmp, lambda t: [f"multiply({g}, {factor(out, ins)}, {t})"])


def over(divisor):
    """The gradient ``g / divisor(out, ins)``."""
    return lambda dst, mode, g, out, ins, tmp: into(
        dst, mode, tmp, lambda t: [f"divide({g}, {divisor(out, ins)}, {t})"])


def slope_times(lines):
    """The gradient ``g * s`` where ``lines(t, out, ins)`` compute the slope ``s`` into ``t``."""
    def emit(dst, mode, g, out, ins, tmp):
        body = lines(tmp, out, ins) + [f"multiply({g}, {tmp}, {tmp})"]
        return body[:-1] + [f"multiply({g}, {tmp}, {dst})"] if mode == "set" else \
            body + [f"add({dst}, {tmp}, {dst})"]
    return emit


def formula_slots(arity: int) -> list:
    """The variables an op's formulas are parsed with: ``x0 ..`` its inputs, then its output."""
    return [f"x{k}" for k in range(arity + 1)]


def formula_tree(text: str, arity: int):
    """An op's formula parsed: ``{k}`` read as ``x{k}``, ``{out}`` as ``x{arity}``, ``{g}`` as ``g0``."""
    slots = formula_slots(arity)
    return parse_formula(text.format(*slots[:arity], g="g0", out=slots[arity]))


def formula_kernel(arity: int, formula: str, gradient_formulas: dict) -> Kernel:
    """The :class:`Kernel` of an op stated by its formulas alone: the in-place form is each
    formula written as ufunc calls (:func:`~seqgraph.backends.cuda_kernels.ufunc_expression`),
    and what each gradient reads is what its formula names."""
    slots = formula_slots(arity)

    def expression(node, out, ins, g="g"):
        return ufunc_expression(node, dict(zip(slots, list(ins) + [out]), g0=g))

    value = formula_tree(formula, arity)
    slopes = {port: formula_tree(text, arity) for port, text in gradient_formulas.items()}

    def gradient(node):
        def emit(dst, mode, g, out, ins, tmp):
            if mode == "set":
                return [f"copyto({dst}, {expression(node, out, ins, g)})"]
            return [f"add({dst}, {expression(node, out, ins, g)}, {dst})"]
        return emit

    reads = {port: tuple(k for k in range(arity) if "{%d}" % k in text) + (("out",) if "{out}" in text else ())
             for port, text in gradient_formulas.items()}
    return Kernel(lambda out, ins: [f"copyto({out}, {expression(value, out, ins)})"],
                  {port: gradient(node) for port, node in slopes.items()}, formula, gradient_formulas, reads)


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
