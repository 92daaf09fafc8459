"""Losses: cross-entropy and mean squared error, each a 0-d mean over the valid entries.

Both take an optional third input ``lengths`` (B,): then the leading axes are ``(T, B)`` and
entries with ``t >= lengths[b]`` are padding, left out of the mean. Padding is replaced by
zeros before any arithmetic, so whatever it holds (even inf) gives exactly zero gradient.
Neither the target nor the lengths get a gradient.
"""

from __future__ import annotations

from ..sizes import format_shape
from .registry import Op, ShapeError, register, unbroadcast
from .sequence import check_lengths, time_mask, zero_where_not


def check_optional_lengths(lengths: tuple) -> None:
    """The shape rule of a loss's optional third input: at most one, a lengths vector."""
    if len(lengths) > 1:
        raise ShapeError("takes 2 or 3 inputs (the third is lengths), got "
                         f"{2 + len(lengths)}", arg=3)
    if lengths:
        check_lengths(lengths[0], 2)


def valid_mask(xp, lengths, steps):
    """The (T, B) validity mask, or None when every entry counts."""
    if lengths is None or (lengths.size and int(lengths.min()) >= steps):
        return None  # nothing is padding
    return time_mask(xp, lengths, steps)


def valid_count(xp, mask, entries: int, like):
    """How many of ``entries`` entries are valid, as a 0-d array of ``like``'s dtype (at least
    1, so an all-padding batch gives 0 rather than NaN)."""
    if mask is None:
        return xp.full((), entries, dtype=like.dtype)
    per_step = entries // mask.size
    return xp.maximum(mask.sum(), 1).astype(like.dtype) * per_step


# --- cross-entropy ----------------------------------------------------------------------


def _shape_cross_entropy(logits, target, *lengths):
    check_optional_lengths(lengths)
    if len(logits) < 1 or tuple(target) != tuple(logits[:-1]):
        raise ShapeError(f"logits are {format_shape(logits)} but the target is "
                         f"{format_shape(target)}", arg=1,
                         hint="logits [V] take one integer class id per example")
    return ()


def _cross_entropy_parts(xp, logits, target, lengths):
    """The per-entry terms: logits less their row maxima (..., V), class ids, mask, valid
    count. A row's log-probabilities are these less the log of their exps' sum."""
    mask = valid_mask(xp, lengths, logits.shape[0])
    if mask is not None:
        logits = zero_where_not(xp, mask, logits)
        target = zero_where_not(xp, mask, target)
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    return shifted, target, mask, valid_count(xp, mask, target.size, logits)


def _forward_cross_entropy(xp, logits, target, lengths=None):
    shifted, target, mask, count = _cross_entropy_parts(xp, logits, target, lengths)
    # -log p[target] = log sum exp - shifted[target]: the full log-softmax is never formed
    nll = xp.log(xp.sum(xp.exp(shifted), axis=-1)) - xp.take_along_axis(shifted, target[..., None], axis=-1)[..., 0]
    if mask is not None:
        nll = zero_where_not(xp, mask, nll)
    return xp.asarray(nll.sum() / count, dtype=logits.dtype)


def _vjp_cross_entropy(xp, g, out, logits, target, lengths=None):
    shifted, target, mask, count = _cross_entropy_parts(xp, logits, target, lengths)
    scale = g / count
    grad = xp.exp(shifted, out=shifted)
    grad *= scale / xp.sum(grad, axis=-1, keepdims=True)  # softmax * g / count
    rows = grad.reshape(-1, grad.shape[-1])
    rows[xp.arange(rows.shape[0]), target.reshape(-1)] -= scale  # less the one-hot target
    if mask is not None:
        grad = zero_where_not(xp, mask, grad)
    return (grad, None) + ((None,) if lengths is not None else ())


register(Op(
    "cross_entropy", shape=_shape_cross_entropy,
    forward=_forward_cross_entropy, vjp=_vjp_cross_entropy,
    rule="g * (softmax - onehot) / n",
    doc="The mean of -log softmax(logits)[target] over the valid entries: logits (..., V) "
        "floats, target (...) integer class ids, optional lengths (B,) for (T, B) leading axes "
        "(PyTorch's reduction='mean'). Takes 2 or 3 inputs.",
    arity=None, nondiff=(1, 2), held=(1,),
))


# --- mean squared error -----------------------------------------------------------------


def _shape_mse(pred, target, *lengths):
    check_optional_lengths(lengths)
    if tuple(pred) != tuple(target):
        raise ShapeError(f"the prediction is {format_shape(pred)} but the target is "
                         f"{format_shape(target)}", arg=1)
    return ()


def _mse_parts(xp, pred, target, lengths):
    """The valid differences pred - target (zero at padding) and how many are valid."""
    mask = valid_mask(xp, lengths, pred.shape[0])
    if mask is not None:
        pred = zero_where_not(xp, mask, pred)
        target = zero_where_not(xp, mask, target)
    diff = pred - target
    return diff, valid_count(xp, mask, diff.size, pred)


def _forward_mse(xp, pred, target, lengths=None):
    diff, count = _mse_parts(xp, pred, target, lengths)
    return xp.asarray((diff * diff).sum() / count, dtype=pred.dtype)


def _vjp_mse(xp, g, out, pred, target, lengths=None):
    diff, count = _mse_parts(xp, pred, target, lengths)
    grad = unbroadcast(xp, diff * (2 * g / count), pred.shape)
    return (grad, None) + ((None,) if lengths is not None else ())


register(Op(
    "mse", shape=_shape_mse, forward=_forward_mse, vjp=_vjp_mse,
    rule="g * 2 (pred - target) / n",
    doc="The mean of (pred - target)**2 over all valid elements (PyTorch's MSELoss mean); "
        "optional lengths (B,) for (T, B) leading axes. Takes 2 or 3 inputs.",
    arity=None, nondiff=(1, 2), held=(1,),
))
