"""Random ops: forward takes an extra keyword ``rng`` (a ``numpy.random.Generator``-like
object with ``.random(shape)``), supplied by the executor, never by the model."""

from __future__ import annotations

from .registry import Op, ShapeError, register


def _shape_dropout_mask(x, p, per_sequence=False):
    if not 0 <= p < 1:
        raise ShapeError(f"the drop probability must be in [0, 1), got {p}", arg=0)
    return tuple(x)


def _forward_dropout_mask(xp, x, p, rng, per_sequence=False):
    # per_sequence: x is (T, B, ...) and one mask (B, ...) serves every step (variational
    # dropout), repeated so each step's slice is a plain contiguous array
    shape = x.shape[1:] if per_sequence else x.shape
    keep = xp.asarray(rng.random(shape), dtype=x.dtype) >= p
    mask = keep.astype(x.dtype) * (1 / (1 - p))
    return xp.ascontiguousarray(xp.broadcast_to(mask, x.shape)) if per_sequence else mask


register(Op(
    "dropout_mask", shape=_shape_dropout_mask, forward=_forward_dropout_mask,
    vjp=lambda xp, g, out, x, **attrs: (None,),
    rule="none",
    doc="A mask shaped like x: 0 with probability p, else 1 / (1 - p) (inverted dropout). "
        "dropout(x, p) is mul(x, dropout_mask(x, p)); the mask itself gets no gradient. With "
        "per_sequence the same mask serves every step of a sequence (variational dropout).",
    arity=1, nondiff=(0,), random=True, attrs=("p", "per_sequence"),
))
