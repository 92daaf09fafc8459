"""Normalisation: layer_norm (over each example's features) and batch_norm (over the batch),
both before their affine part, which the built-ins add as ordinary parameters.

``batch_norm`` behaves as PyTorch's BatchNorm: while training (its input ``training`` is 1,
fed by the runtime: :func:`seqgraph.runtime.prepare_feed`) it normalises with the batch's
statistics and moves the running statistics toward them, in place; while evaluating
(``training`` 0) it normalises with the running statistics. It is the one op whose forward
writes into inputs, and says so (``Op.updates``): the running statistics are state, not
trained, and get no gradient. A network hands it arrays of its own for them
(:meth:`seqgraph.runtime.Network.forward`), never one a caller put into ``net.params``.
"""

from __future__ import annotations

from .registry import Op, ShapeError, register


# --- layer_norm -------------------------------------------------------------------------


def _shape_layer_norm(x, eps=1e-5):
    if not x:
        raise ShapeError("layer_norm needs features to normalise, got a single number", arg=0)
    return tuple(x)


def _normalised(xp, x, axes, eps):
    """(x - mean) / sqrt(var + eps) over ``axes`` (biased variance), and 1 / sqrt(var + eps)."""
    centred = x - x.mean(axis=axes, keepdims=True)
    scale = 1 / xp.sqrt((centred * centred).mean(axis=axes, keepdims=True) + eps)
    return centred * scale, scale


def _normalised_vjp(g, y, scale, axes):
    # d/dx of (x - mean) * scale: scale (g - mean(g) - y mean(g y)) over the normalised axes
    return scale * (g - g.mean(axis=axes, keepdims=True) - y * (g * y).mean(axis=axes, keepdims=True))


register(Op(
    "layer_norm", shape=_shape_layer_norm,
    forward=lambda xp, x, eps=1e-5: _normalised(xp, x, -1, eps)[0],
    vjp=lambda xp, g, out, x, eps=1e-5: (_normalised_vjp(g, out, _normalised(xp, x, -1, eps)[1], -1),),
    rule="scale (g - mean(g) - y mean(g y))",
    doc="(x - mean) / sqrt(var + ``eps``) over the last axis, the variance biased (torch.nn."
        "functional.layer_norm without weight and bias).",
    arity=1, attrs=("eps",),
))


# --- batch_norm -------------------------------------------------------------------------


def _shape_batch_norm(x, running_mean, running_var, training, eps=1e-5, momentum=0.1):
    channels = x[0] if x else None
    if not x or tuple(running_mean) != (channels,) or tuple(running_var) != (channels,):
        raise ShapeError(f"batch_norm needs features [C] or [C, ...] and running statistics [C], got "
                         f"{tuple(x)}, {tuple(running_mean)}, {tuple(running_var)}", arg=0)
    if tuple(training) != ():
        raise ShapeError("batch_norm's training flag is one number", arg=3)
    return tuple(x)


def _batch_axes(x):
    """The axes statistics are taken over: the batch (axis 0) and every axis after the channel."""
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(stat, x):
    """A statistic [C] shaped to broadcast against x (B, C, ...)."""
    return stat.reshape((stat.shape[0],) + (1,) * (x.ndim - 2))


def _forward_batch_norm(xp, x, running_mean, running_var, training, eps=1e-5, momentum=0.1):
    if not float(training):
        return (x - _per_channel(running_mean, x)) / xp.sqrt(_per_channel(running_var, x) + eps)
    axes = _batch_axes(x)
    y, scale = _normalised(xp, x, axes, eps)
    count = x.size // running_mean.size
    centred = x - x.mean(axis=axes, keepdims=True)
    batch_mean, unbiased = x.mean(axis=axes), (centred * centred).sum(axis=axes) / max(count - 1, 1)
    running_mean *= 1 - momentum
    running_mean += momentum * batch_mean
    running_var *= 1 - momentum
    running_var += momentum * unbiased
    return y


def _vjp_batch_norm(xp, g, out, x, running_mean, running_var, training, eps=1e-5, momentum=0.1):
    if not float(training):
        return g / xp.sqrt(_per_channel(running_var, x) + eps), None, None, None
    axes = _batch_axes(x)
    _, scale = _normalised(xp, x, axes, eps)
    return _normalised_vjp(g, out, scale, axes), None, None, None


register(Op(
    "batch_norm", shape=_shape_batch_norm, forward=_forward_batch_norm, vjp=_vjp_batch_norm,
    rule="training: scale (g - mean(g) - y mean(g y)); else g / sqrt(var + eps)",
    doc="Batch normalisation of x (B, C, ...) per channel C, without weight and bias: while "
        "``training`` (input 3) is 1, (x - mean) / sqrt(var + ``eps``) with the batch's mean and "
        "biased variance over the batch and the axes after C, and the running statistics (inputs 1 "
        "and 2) move toward the batch's by ``momentum``, in place (the variance unbiased, as "
        "torch.nn.BatchNorm); while it is 0, the running statistics normalise. Only x gets a "
        "gradient.",
    arity=4, nondiff=(1, 2, 3), attrs=("eps", "momentum"), updates=(1, 2),
))


register(Op(
    "training_flag", shape=lambda dtype="float32": (),
    forward=lambda xp, dtype="float32": xp.zeros((), dtype=dtype),
    vjp=lambda xp, g, out, **attrs: (),
    rule="none",
    doc="1 while a network trains, 0 while it evaluates: the runtime feeds it (its forward, "
        "0, is what a run outside training sees).",
    arity=0, attrs=("dtype",),
))
