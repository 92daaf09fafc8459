"""The op registry: one record per primitive op holding its shape rule, forward and vjp.

Conventions every op follows (so one rule serves the checker, both executors and every
backend):

- **Feature shapes.** The shape rule sees only *feature* shapes: the trailing axes that
  belong to one example. Leading axes (batch, and time for sequences) are not part of it.
  Entries are sizes (``int`` or :class:`seqgraph.sizes.Size`); rules use ``==`` and plain
  arithmetic on them and raise :class:`ShapeError` on a mismatch.
- **Runtime arrays** may carry any number of leading axes in front of the feature axes;
  parameters carry none. Elementwise ops broadcast like NumPy. Every ``axis`` attribute is
  a negative integer counted from the last axis, so leading axes never shift it.
- **forward(xp, *inputs, **attrs)** returns one array, written against the array namespace
  ``xp`` (NumPy or CuPy) only.
- **vjp(xp, g, out, *inputs, **attrs)** returns one gradient per input (``None`` for inputs
  listed in ``nondiff``). It is local: it never sums over fan-out; the autodiff driver does.
  Gradients of broadcast inputs are reduced back with :func:`unbroadcast`.
- **Selective vjps.** An op whose inputs' gradients cost work apart (``matmul``, ``add``,
  ``sub``, ``mul``, ...) sets ``selective=True`` and accepts a keyword ``wanted``: one bool
  per input; it computes only the wanted gradients and returns ``None`` for the rest.
  Callers go through :meth:`Op.partial_vjp`, which serves every op alike (the compiler
  uses it to leave weight gradients out of the per-step loop and do them once after it).
- **kernel** (elementwise ops only): the same forward and gradient for the compiler's step
  loops, as in-place ufunc calls and as formulas a backend fuses into one kernel (a
  :class:`seqgraph.ops.kernels.Kernel`, derived from the formulas the op is stated by; see
  :func:`seqgraph.ops.elementwise.pointwise`). An op without one runs its forward and vjp in
  the loops as they are.
- **in_place**: the ufunc of the array namespace that computes the op from its inputs into a
  given array (``add(a, b, out=c)``), or None. The compiler runs such an op over a dying
  input's array instead of a new one where no gradient reads that input.
- **broadcasting** ops (the elementwise binary ones) broadcast their inputs' feature shapes
  right-aligned, as the shape rule :func:`seqgraph.ops.elementwise.broadcast_shapes` does.
  Runtime arrays broadcast the same way only when every input with leading axes has all
  the result's feature axes, so the checker gives a batched input with fewer of them
  leading 1s first (``x - mean(x)``: ``(T, B)`` becomes ``(T, B, 1)``, not ``(1, T, B)``).
- **rule** is a short label of the gradient rule shown in graph views: ``distribute`` (add),
  ``route`` (max), ``switch`` (mul), or a formula.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from ..errors import SeqgraphError, did_you_mean


class ShapeError(Exception):
    """A shape rule's complaint; ``arg`` is the index of the offending input, if one is."""

    def __init__(self, message: str, arg: Optional[int] = None, hint: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.arg = arg
        self.hint = hint


@dataclass(frozen=True)
class Op:
    """One primitive op: what shape it makes, how it computes, how its gradient flows back."""

    name: str
    shape: Callable[..., tuple]
    forward: Callable
    vjp: Callable
    rule: str
    doc: str
    arity: Optional[int] = None
    nondiff: tuple = ()
    dtype: str = "float"
    random: bool = False
    attrs: tuple = field(default=())
    selective: bool = False
    kernel: Optional[object] = None
    broadcasting: bool = False
    held: tuple = ()  # nondiff inputs the output depends on, taken as constants (a loss's target)
    in_place: Optional[str] = None
    updates: tuple = ()  # inputs the forward writes new values into (state such as running statistics)
    fresh: bool = False  # the result is always a new array of its own, never a view of an input

    def __call__(self, xp, *inputs, **attrs):
        return self.forward(xp, *inputs, **attrs)

    def partial_vjp(self, xp, g, out, *inputs, wanted=None, **attrs) -> tuple:
        """The vjp for the inputs flagged in ``wanted`` only (``None`` for the others);
        ``wanted=None`` asks for all of them. A selective op skips the unwanted work."""
        if wanted is None:
            return tuple(self.vjp(xp, g, out, *inputs, **attrs))
        wanted = tuple(bool(w) for w in wanted)
        if self.selective:
            return tuple(self.vjp(xp, g, out, *inputs, wanted=wanted, **attrs))
        grads = self.vjp(xp, g, out, *inputs, **attrs)
        return tuple(grad if want else None for grad, want in zip(grads, wanted))


REGISTRY: dict = {}


def register(op: Op) -> Op:
    """Add ``op`` to the registry (each name once)."""
    if op.name in REGISTRY:
        raise ValueError(f"op {op.name!r} registered twice")
    REGISTRY[op.name] = op
    return op


def get_op(name: str, span=None) -> Op:
    """The op called ``name``; an unknown name is a SeqgraphError listing close names."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise SeqgraphError(f"unknown op '{name}'", span, did_you_mean(name, REGISTRY)) from None


def unbroadcast(xp, grad, shape):
    """Sum ``grad`` down to ``shape``: the gradient of a NumPy broadcast from ``shape``."""
    shape = tuple(shape)
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    kept = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if kept:
        grad = grad.sum(axis=kept, keepdims=True)
    return grad.reshape(shape)
