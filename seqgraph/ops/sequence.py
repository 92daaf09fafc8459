"""Sequence ops: embeddings, time-step access, per-sequence reversal, pooling over time,
attention.

Unlike every other family, these ops see the time axis: their sequence inputs carry explicit
leading ``(T, B)`` axes (time-major), and ``lengths`` inputs are ``(B,)`` integer arrays of
valid steps, ``lengths[b] >= 1``. Steps ``t >= lengths[b]`` are padding: no output depends on
them and they get zero gradient. Shape rules still see feature shapes only (a lengths input
has feature shape ``()``).
"""

from __future__ import annotations

from ..sizes import format_shape
from .registry import Op, ShapeError, register


def time_mask(xp, lengths, steps: int):
    """The ``(T, B)`` boolean mask of valid steps: ``mask[t, b] = t < lengths[b]``."""
    return xp.arange(steps)[:, None] < lengths[None, :]


def expand_right(mask, ndim: int):
    """``mask`` with trailing axes of size 1 added until it has ``ndim`` axes."""
    return mask.reshape(mask.shape + (1,) * (ndim - mask.ndim))


def zero_where_not(xp, mask, a):
    """``a`` where ``mask`` holds, else 0 (``mask`` broadcast from the left; no NaN leaks)."""
    return xp.where(expand_right(mask, a.ndim), a, xp.zeros((), dtype=a.dtype))


def check_lengths(shape, arg: int) -> None:
    """Raise a ShapeError unless ``shape`` is the feature shape of a lengths input, ()."""
    if tuple(shape) != ():
        raise ShapeError(f"lengths must hold one integer per sequence, got feature shape "
                         f"{format_shape(shape)}", arg=arg)


def _shape_with_lengths(x, lengths):
    check_lengths(lengths, 1)
    return tuple(x)


def _placed(xp, g, x, index):
    """Zeros shaped like ``x`` with ``g`` written at ``index``: the vjp of ``x[index]``."""
    gx = xp.zeros(x.shape, dtype=g.dtype)
    gx[index] = g
    return gx


# --- embedding --------------------------------------------------------------------------


def _shape_embedding(ids, table):
    if len(table) != 2:
        raise ShapeError(f"the table must be [vocab, dim], got {format_shape(table)}",
                         arg=1)
    return tuple(ids) + (table[1],)


def _vjp_embedding(xp, g, out, ids, table):
    gtable = xp.zeros(table.shape, dtype=g.dtype)
    xp.add.at(gtable, ids.reshape(-1), g.reshape(-1, table.shape[1]))
    return None, gtable


register(Op(
    "embedding", shape=_shape_embedding,
    forward=lambda xp, ids, table: table[ids],
    vjp=_vjp_embedding,
    rule="scatter-add g into table rows",
    doc="Row ids of an [V, E] table: ids (...) of ints, e.g. (T, B), give (..., E). A row "
        "used several times gets the sum of its gradients.",
    arity=2, nondiff=(0,),
))


# --- access to time steps -----------------------------------------------------------------

register(Op(
    "step", shape=lambda x, t: tuple(x),
    forward=lambda xp, x, t: x[t],
    vjp=lambda xp, g, out, x, t: (_placed(xp, g, x, t),),
    rule="g placed at step t",
    doc="x[t]: time step ``t`` (an int attribute) of a sequence x (T, B, ...).",
    arity=1, attrs=("t",),
))


def _shape_stack(*xs):
    if not xs:
        raise ShapeError("needs at least one step")
    for i, x in enumerate(xs):
        if tuple(x) != tuple(xs[0]):
            raise ShapeError(f"step {i} is {format_shape(x)} but step 0 is "
                             f"{format_shape(xs[0])}", arg=i)
    return tuple(xs[0])


register(Op(
    "stack", shape=_shape_stack,
    forward=lambda xp, *xs: xp.stack(xs, axis=0),
    vjp=lambda xp, g, out, *xs: tuple(g[i] for i in range(len(xs))),
    rule="unstack g",
    doc="Stack per-step arrays (B, ...) into a sequence (T, B, ...) along a new leading "
        "time axis.",
    arity=None,
))

register(Op(
    "first", shape=lambda x: tuple(x),
    forward=lambda xp, x: x[0],
    vjp=lambda xp, g, out, x: (_placed(xp, g, x, 0),),
    rule="g placed at step 0",
    doc="x[0]: the first step of a sequence x (T, B, ...).",
    arity=1,
))


def _last_index(xp, lengths):
    return lengths - 1, xp.arange(lengths.shape[0])


register(Op(
    "last", shape=_shape_with_lengths,
    forward=lambda xp, x, lengths: x[_last_index(xp, lengths)],
    vjp=lambda xp, g, out, x, lengths: (_placed(xp, g, x, _last_index(xp, lengths)), None),
    rule="g placed at step lengths-1",
    doc="The last valid step of each sequence: out[b] = x[lengths[b] - 1, b] for x (T, B, ...).",
    arity=2, nondiff=(1,),
))


def _forward_reverse(xp, x, lengths):
    steps, batch = x.shape[0], x.shape[1]
    source = lengths[None, :] - 1 - xp.arange(steps)[:, None]  # (T, B)
    valid = source >= 0
    gathered = x[xp.where(valid, source, 0), xp.arange(batch)[None, :]]
    return zero_where_not(xp, valid, gathered)


register(Op(
    "reverse", shape=_shape_with_lengths,
    forward=_forward_reverse,
    vjp=lambda xp, g, out, x, lengths: (_forward_reverse(xp, g, lengths), None),
    rule="reverse g",
    doc="Reverse each sequence of x (T, B, ...) within its own length: out[t, b] = "
        "x[lengths[b] - 1 - t, b] for t < lengths[b], and 0 at padded steps.",
    arity=2, nondiff=(1,),
))


# --- pooling over time ------------------------------------------------------------------


def _masked_for_max(xp, x, lengths):
    """x with padded steps set to -inf, so they never win a max."""
    valid = expand_right(time_mask(xp, lengths, x.shape[0]), x.ndim)
    return xp.where(valid, x, xp.full((), -xp.inf, dtype=x.dtype))


def _forward_max_over_time(xp, x, lengths):
    return xp.max(_masked_for_max(xp, x, lengths), axis=0)


def _vjp_max_over_time(xp, g, out, x, lengths):
    # Tie rule: argmax picks the first maximal step, and only that step gets the gradient.
    best = xp.argmax(_masked_for_max(xp, x, lengths), axis=0)
    hit = xp.arange(x.shape[0]).reshape((-1,) + (1,) * best.ndim) == best[None]
    return xp.where(hit, g[None], xp.zeros((), dtype=g.dtype)), None


register(Op(
    "max_over_time", shape=_shape_with_lengths,
    forward=_forward_max_over_time, vjp=_vjp_max_over_time,
    rule="route g to the max step",
    doc="The max over the valid steps of x (T, B, ...), giving (B, ...). Tie rule: the first "
        "maximal step gets the whole gradient.",
    arity=2, nondiff=(1,),
))


def _per_sequence(lengths, like):
    """``lengths`` as a (B, 1, ...) array of ``like``'s float dtype, to divide ``like``
    (B, ...) by."""
    return expand_right(lengths.astype(like.dtype), like.ndim)


def _forward_mean_over_time(xp, x, lengths):
    total = zero_where_not(xp, time_mask(xp, lengths, x.shape[0]), x).sum(axis=0)
    return total / _per_sequence(lengths, total)


def _vjp_mean_over_time(xp, g, out, x, lengths):
    spread = xp.broadcast_to((g / _per_sequence(lengths, g))[None], x.shape)
    return zero_where_not(xp, time_mask(xp, lengths, x.shape[0]), spread), None


register(Op(
    "mean_over_time", shape=_shape_with_lengths,
    forward=_forward_mean_over_time, vjp=_vjp_mean_over_time,
    rule="spread g / lengths over valid steps",
    doc="The mean over the valid steps of x (T, B, ...), giving (B, ...): "
        "out[b] = sum(x[t, b] for t < lengths[b]) / lengths[b].",
    arity=2, nondiff=(1,),
))


# --- attention --------------------------------------------------------------------------


def _shape_attention(query, memory, lengths):
    if len(query) != 1:
        raise ShapeError(f"the query must be a vector [D], got {format_shape(query)}",
                         arg=0)
    if tuple(memory) != tuple(query):
        raise ShapeError(f"query is {format_shape(query)} but memory is "
                         f"{format_shape(memory)}", arg=1,
                         hint="the query and each memory step must have the same size")
    check_lengths(lengths, 2)
    return tuple(query)


def _attention_weights(xp, query, memory, lengths):
    """The memory as (B, Tm, D) with padded steps zeroed, its validity (B, Tm), and the
    masked softmax weights (..., B, Tm) of the query over it."""
    valid = time_mask(xp, lengths, memory.shape[0]).T  # (B, Tm)
    mem = zero_where_not(xp, valid, xp.transpose(memory, (1, 0, 2)))
    scores = (query[..., None, :] @ xp.transpose(mem, (0, 2, 1)))[..., 0, :]
    scores = xp.where(valid, scores, xp.full((), -xp.inf, dtype=scores.dtype))
    e = xp.exp(scores - xp.max(scores, axis=-1, keepdims=True))
    return mem, valid, e / xp.sum(e, axis=-1, keepdims=True)


def _forward_attention(xp, query, memory, lengths):
    mem, _, weights = _attention_weights(xp, query, memory, lengths)
    return (weights[..., None, :] @ mem)[..., 0, :]


def _summed_outer(xp, left, right):
    """sum over leading axes of left[..., b, s] * right[..., b, d], giving (B, S, D), as one
    batched matmul."""
    left2 = left.reshape((-1,) + left.shape[-2:])
    right2 = right.reshape((-1,) + right.shape[-2:])
    return xp.transpose(left2, (1, 2, 0)) @ xp.transpose(right2, (1, 0, 2))


def _vjp_attention(xp, g, out, query, memory, lengths):
    mem, valid, weights = _attention_weights(xp, query, memory, lengths)
    g_weights = (g[..., None, :] @ xp.transpose(mem, (0, 2, 1)))[..., 0, :]
    g_scores = weights * (g_weights - xp.sum(g_weights * weights, axis=-1, keepdims=True))
    g_query = (g_scores[..., None, :] @ mem)[..., 0, :]
    g_mem = _summed_outer(xp, weights, g) + _summed_outer(xp, g_scores, query)  # (B, Tm, D)
    g_memory = zero_where_not(xp, valid, g_mem)
    return g_query, xp.transpose(g_memory, (1, 0, 2)), None


register(Op(
    "attention", shape=_shape_attention,
    forward=_forward_attention, vjp=_vjp_attention,
    rule="softmax-weighted sum, backward",
    doc="Dot-product attention of query (..., B, D) (any leading axes, e.g. (Tq, B, D)) over "
        "memory (Tm, B, D): weights = softmax over valid steps s < lengths[b] of q . m[s, b], "
        "out = sum_s weights[s] m[s, b]; same shape as the query.",
    arity=3, nondiff=(2,),
))
