"""Convolution and pooling along the time axis of a sequence x (T, B, C), lengths respected.

Each sequence is treated as if it were alone: its steps ``t >= lengths[b]`` are padding, read
as zeros by a convolution and as nothing by pooling (-inf for a max, left out of a mean's
count unless ``count_include_pad``), and the output's padded steps are 0. The output stays on
the input's time axis: stride 1 and PyTorch's ``padding='same'`` (the ``dilation * (k - 1)``
padding split with the smaller half before), so step t's window is centred on step t.
The windows are :mod:`seqgraph.ops.conv`'s over a height-1 image (B, C, 1, T).
"""

from __future__ import annotations

from .conv import forward_conv2d, vjp_conv2d, scatter_windows, windows
from .registry import Op, ShapeError, register
from .sequence import check_lengths, time_mask, zero_where_not


def same_padding(kernel: int, dilation: int = 1) -> tuple:
    """The padding (before, after) that keeps a stride-1 window op's length: PyTorch's 'same'."""
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def _as_image(xp, x, lengths, fill):
    """x (T, B, C) with its padding set to ``fill``, as (B, C, 1, T)."""
    mask = time_mask(xp, lengths, x.shape[0])
    x = xp.where(mask[..., None], x, xp.asarray(fill, dtype=x.dtype))
    return xp.moveaxis(x, 0, -1)[:, :, None, :]


def _as_sequence(xp, image, lengths):
    """The adjoint of :func:`_as_image`'s layout, padding zeroed: (B, C, 1, T) to (T, B, C)."""
    x = xp.moveaxis(image[:, :, 0, :], -1, 0)
    return xp.ascontiguousarray(zero_where_not(xp, time_mask(xp, lengths, x.shape[0]), x))


# --- convolution over time ----------------------------------------------------------------


def _shape_time_conv1d(x, w, b, lengths, dilation=1):
    check_lengths(lengths, 3)
    if len(x) != 1 or len(w) != 3 or w[1] != x[0]:
        raise ShapeError(f"a sequence of [C] and a kernel [out, C, k] are needed, got {tuple(x)} "
                         f"and {tuple(w)}", arg=1)
    if tuple(b) != (w[0],):
        raise ShapeError(f"the bias is {tuple(b)} but the kernel has {w[0]} output channels", arg=2)
    return (w[0],)


def _geometry(w, dilation):
    before, after = same_padding(w.shape[2], dilation)
    return dict(stride=(1, 1), pad=(0, before), dilation=(1, dilation), after=(0, after))


def _forward_time_conv1d(xp, x, w, b, lengths, dilation=1):
    image = _as_image(xp, x, lengths, 0.0)
    out = forward_conv2d(xp, image, w[:, :, None, :], b, **_geometry(w, dilation))
    return _as_sequence(xp, out, lengths)


def _vjp_time_conv1d(xp, g, out, x, w, b, lengths, dilation=1):
    image = _as_image(xp, x, lengths, 0.0)
    g_image = _as_image(xp, g, lengths, 0.0)
    gx, gw, gb = vjp_conv2d(xp, g_image, None, image, w[:, :, None, :], b, **_geometry(w, dilation))
    return _as_sequence(xp, gx, lengths), gw[:, :, 0, :], gb, None


register(Op(
    "time_conv1d", shape=_shape_time_conv1d, forward=_forward_time_conv1d, vjp=_vjp_time_conv1d,
    rule="gx = scatter(g . w), gw = g . windows, gb = sum g (valid steps)",
    doc="Cross-correlation along time of x (T, B, C) with w (O, C, k) plus b (O,), giving (T, B, O): "
        "out[t, b, o] = b[o] + sum_{c,i} w[o, c, i] x[t - before + i * dilation, b, c], steps "
        "outside 0..lengths[b]-1 read as 0 (before: see same_padding); padded output steps are 0.",
    arity=4, nondiff=(3,), attrs=("dilation",),
))


# --- pooling over time windows ------------------------------------------------------------


def _shape_time_pool(x, lengths, kernel, dilation=1, count_include_pad=False):
    check_lengths(lengths, 1)
    if len(x) != 1:
        raise ShapeError(f"pooling over time needs a sequence of [C], got {tuple(x)}", arg=0)
    return tuple(x)


def _pool_windows(xp, x, lengths, kernel, dilation, fill):
    before, after = same_padding(kernel, dilation)
    image = _as_image(xp, x, lengths, fill)
    return windows(xp, image, (1, kernel), (1, 1), (0, before), fill, (1, dilation), (0, after)), (before, after)


def _forward_time_maxpool(xp, x, lengths, kernel, dilation=1):
    win, _ = _pool_windows(xp, x, lengths, kernel, dilation, -xp.inf)
    return _as_sequence(xp, win.max(axis=(-2, -1)), lengths)


def _vjp_time_maxpool(xp, g, out, x, lengths, kernel, dilation=1):
    win, (before, after) = _pool_windows(xp, x, lengths, kernel, dilation, -xp.inf)
    winner = win[..., 0, :].argmax(axis=-1)  # the first maximal step of each window: the tie rule
    g_image = _as_image(xp, g, lengths, 0.0)
    zero = xp.zeros((), dtype=g.dtype)
    gx = scatter_windows(xp, lambda i, j: xp.where(winner == j, g_image, zero), g_image.shape,
                         (1, kernel), (1, 1), (0, before), g.dtype, (1, dilation), (0, after))
    return _as_sequence(xp, gx, lengths), None


register(Op(
    "time_maxpool", shape=_shape_time_pool, forward=_forward_time_maxpool, vjp=_vjp_time_maxpool,
    rule="route g to each window's max",
    doc="The max over each window of ``kernel`` steps (``dilation`` apart, centred, stride 1) of "
        "x (T, B, C), padding and steps past each length never chosen; padded output steps are "
        "0. Tie rule: the first maximal step of a window gets the gradient.",
    arity=2, nondiff=(1,), attrs=("kernel", "dilation"),
))


def _count(xp, x, lengths, kernel, count_include_pad):
    """How many steps each window averages: ``kernel``, or its valid steps alone (at least 1:
    a padded step's window may hold none)."""
    if count_include_pad:
        return kernel
    ones = xp.ones(x.shape[:2] + (1,), dtype=x.dtype)
    win, _ = _pool_windows(xp, ones, lengths, kernel, 1, 0.0)
    return xp.maximum(win.sum(axis=(-2, -1)), 1)


def _forward_time_avgpool(xp, x, lengths, kernel, count_include_pad=False):
    win, _ = _pool_windows(xp, x, lengths, kernel, 1, 0.0)
    return _as_sequence(xp, win.sum(axis=(-2, -1)) / _count(xp, x, lengths, kernel, count_include_pad), lengths)


def _vjp_time_avgpool(xp, g, out, x, lengths, kernel, count_include_pad=False):
    before, after = same_padding(kernel)
    share = _as_image(xp, g, lengths, 0.0) / _count(xp, x, lengths, kernel, count_include_pad)
    gx = scatter_windows(xp, lambda i, j: share, share.shape, (1, kernel), (1, 1), (0, before), g.dtype,
                         (1, 1), (0, after))
    return _as_sequence(xp, gx, lengths), None


register(Op(
    "time_avgpool", shape=_shape_time_pool, forward=_forward_time_avgpool, vjp=_vjp_time_avgpool,
    rule="spread g / count over each window",
    doc="The mean over each window of ``kernel`` steps (centred, stride 1) of x (T, B, C): the "
        "divisor is the window's steps inside its sequence, or ``kernel`` with "
        "``count_include_pad``; padded output steps are 0.",
    arity=2, nondiff=(1,), attrs=("kernel", "count_include_pad"),
))
