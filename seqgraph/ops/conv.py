"""Convolution and pooling over the last one or two axes, by gathering windows (im2col).

A window view ``(..., H', W', kH, kW)`` of the padded input is built with
``sliding_window_view`` (no copy) and then reduced: one tensordot with the kernel for a
convolution, a max or a mean for pooling. Backward scatters window gradients back with one
strided add per kernel offset (kH * kW adds). Any leading axes pass straight through.
Output size on each spatial axis: ``(size + 2 * pad - kernel) // stride + 1``.
"""

from __future__ import annotations

from ..sizes import SizeError, format_shape
from .registry import Op, ShapeError, register


def pair(value) -> tuple:
    """An int or a pair of ints, as a pair."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def out_size(size, kernel: int, stride: int, pad: int):
    """The number of windows along one axis; a ShapeError when none fit or when a symbolic
    size does not divide evenly by the stride."""
    try:
        n = (size + 2 * pad - kernel) // stride + 1
    except SizeError:
        raise ShapeError(f"cannot tell how many windows of size {kernel} (stride {stride}, "
                         f"pad {pad}) fit along a size-{size} axis", arg=0,
                         hint=f"choose sizes so that {size + 2 * pad - kernel} is a multiple of "
                              f"{stride}, or use stride 1") from None
    if isinstance(n, int) and n < 1:
        raise ShapeError(f"a window of {kernel} (pad {pad}) does not fit in size {size}",
                         arg=0)
    return n


def _spatial_shape(x, kernel, stride, pad):
    """The output (H', W') of a 2-d window op on feature shape ``x`` (..., H, W)."""
    if len(x) < 2:
        raise ShapeError(f"needs at least [H, W], got {format_shape(x)}", arg=0)
    return tuple(out_size(x[-2 + i], kernel[i], stride[i], pad[i]) for i in range(2))


def windows(xp, x, kernel, stride, pad, fill=0.0, dilation=(1, 1), after=None):
    """The strided windows of ``x`` (..., H, W) padded by ``fill``: (..., H', W', kH, kW).

    ``pad`` is the padding before each axis, ``after`` the padding after it (``pad`` unless
    given); a window's elements are ``dilation`` apart."""
    after = pad if after is None else after
    if any(pad) or any(after):
        widths = [(0, 0)] * (x.ndim - 2) + [(pad[0], after[0]), (pad[1], after[1])]
        x = xp.pad(x, widths, mode="constant", constant_values=fill)
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
    view = xp.lib.stride_tricks.sliding_window_view(x, span, axis=(-2, -1))
    return view[..., ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]]


def scatter_windows(xp, part, shape, kernel, stride, pad, dtype, dilation=(1, 1), after=None):
    """The adjoint of :func:`windows`: sum window gradients back onto an input of ``shape``.

    ``part(i, j)`` is the gradient (..., H', W') of every window's element at offset (i, j).
    """
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel, stride, pad, dilation
    after = pad if after is None else after
    grad = xp.zeros(tuple(shape[:-2]) + (shape[-2] + ph + after[0], shape[-1] + pw + after[1]), dtype=dtype)
    for i in range(kh):
        for j in range(kw):
            g = part(i, j)
            rows, cols = g.shape[-2], g.shape[-1]
            grad[..., i * dh:i * dh + sh * (rows - 1) + 1:sh, j * dw:j * dw + sw * (cols - 1) + 1:sw] += g
    return grad[..., ph:ph + shape[-2], pw:pw + shape[-1]]


# --- convolution ------------------------------------------------------------------------


def _check_conv_operands(x, w, b, spatial: int):
    """The kernel w must be [out, in, k...] with ``spatial`` kernel axes, x [in, size...] and
    b [out]: a ShapeError naming the operand otherwise."""
    axes = ", ".join(["L"] if spatial == 1 else ["H", "W"])
    if len(w) != spatial + 2:
        layout = "k" if spatial == 1 else "kH, kW"
        raise ShapeError(f"the kernel must be [out, in, {layout}], got {format_shape(w)}", arg=1)
    if len(x) < spatial + 1 or x[-spatial - 1] != w[1]:
        raise ShapeError(f"input {format_shape(x)} does not match kernel {format_shape(w)}", arg=0,
                         hint=f"the input must be [C, {axes}] with C = {w[1]}")
    if tuple(b) != (w[0],):
        raise ShapeError(f"the bias is {format_shape(b)} but the kernel has {w[0]} "
                         "output channels", arg=2)


def _shape_conv2d(x, w, b, stride=1, pad=0):
    _check_conv_operands(x, w, b, spatial=2)
    kernel = (w[2], w[3])
    return tuple(x[:-3]) + (w[0],) + _spatial_shape(x, kernel, pair(stride), pair(pad))


def forward_conv2d(xp, x, w, b, stride=1, pad=0, dilation=(1, 1), after=None):
    """conv2d's forward: ``x`` (..., C, H, W) by ``w`` (O, C, kH, kW) plus ``b`` (O), as one
    product of its windows (``after``: the padding after each axis, as :func:`windows` takes it)."""
    win = windows(xp, x, w.shape[2:], pair(stride), pair(pad), 0.0, dilation, after)  # (..., C, H', W', kH, kW)
    out = xp.tensordot(win, w, axes=([-5, -2, -1], [1, 2, 3]))  # (..., H', W', O)
    out = xp.moveaxis(out, -1, -3) + b[:, None, None]
    return xp.ascontiguousarray(out)


def vjp_conv2d(xp, g, out, x, w, b, stride=1, pad=0, dilation=(1, 1), after=None):
    """conv2d's vector-Jacobian product: the cotangents of ``x``, ``w`` and ``b`` for ``g``."""
    stride, pad, kernel = pair(stride), pair(pad), w.shape[2:]
    lead = list(range(g.ndim - 3))
    win = windows(xp, x, kernel, stride, pad, 0.0, dilation, after)
    gw = xp.tensordot(g, win, axes=(lead + [-2, -1], lead + [-4, -3]))  # (O, C, kH, kW)
    gb = g.sum(axis=tuple(lead) + (-2, -1))
    gwin = xp.tensordot(g, w, axes=([-3], [0]))  # (..., H', W', C, kH, kW)
    gwin = xp.moveaxis(gwin, -3, -5)  # (..., C, H', W', kH, kW)
    gx = scatter_windows(xp, lambda i, j: gwin[..., i, j], x.shape, kernel, stride, pad,
                         g.dtype, dilation, after)
    return gx, gw, gb


register(Op(
    "conv2d", shape=_shape_conv2d, forward=forward_conv2d, vjp=vjp_conv2d,
    rule="gx = scatter(g . w), gw = g . windows, gb = sum g",
    doc="2-d cross-correlation plus bias: x (..., C, H, W), w (O, C, kH, kW), b (O,) give "
        "(..., O, H', W'), out[o, r, c] = b[o] + sum_{ci,i,j} w[o, ci, i, j] "
        "xpad[ci, r*sh + i, c*sw + j]; stride and pad are an int or a pair.",
    arity=3, attrs=("stride", "pad"),
))


def _shape_conv1d(x, w, b, stride=1, pad=0):
    _check_conv_operands(x, w, b, spatial=1)
    return tuple(x[:-2]) + (w[0], out_size(x[-1], w[2], stride, pad))


# conv1d is conv2d over a height-1 image with a height-1 kernel.

def _forward_conv1d(xp, x, w, b, stride=1, pad=0):
    out = forward_conv2d(xp, x[..., None, :], w[:, :, None, :], b, (1, stride), (0, pad))
    return out[..., 0, :]


def _vjp_conv1d(xp, g, out, x, w, b, stride=1, pad=0):
    gx, gw, gb = vjp_conv2d(xp, g[..., None, :], None, x[..., None, :], w[:, :, None, :], b,
                             (1, stride), (0, pad))
    return gx[..., 0, :], gw[:, :, 0, :], gb


register(Op(
    "conv1d", shape=_shape_conv1d, forward=_forward_conv1d, vjp=_vjp_conv1d,
    rule="gx = scatter(g . w), gw = g . windows, gb = sum g",
    doc="1-d cross-correlation plus bias: x (..., C, L), w (O, C, k), b (O,) give (..., O, L'), "
        "out[o, l] = b[o] + sum_{c,i} w[o, c, i] xpad[c, l*stride + i].",
    arity=3, attrs=("stride", "pad"),
))


# --- pooling ----------------------------------------------------------------------------
# PyTorch's options: ``dilation`` spreads a max-pooling window's elements apart; ``ceil_mode``
# rounds the window count up, a last window overhanging the padding (but starting inside the
# input or the padding before it); ``count_include_pad`` (average pooling) divides by the
# window's elements inside the input and its padding rather than inside the input alone.


def _pool_params(kernel, stride, pad, dilation=1):
    kernel = pair(kernel)
    return kernel, pair(kernel if stride is None else stride), pair(pad), pair(dilation)


def pool_axis(size, kernel: int, stride: int, pad: int, dilation: int = 1, ceil_mode: bool = False):
    """``(windows, padding after)`` along one axis of a pooling op, as PyTorch counts them."""
    span = dilation * (kernel - 1) + 1
    if not ceil_mode:
        return out_size(size, span, stride, pad), pad
    if not isinstance(size, int):
        raise ShapeError(f"ceil_mode needs a known size, got {size}", arg=0)
    count = -(-(size + 2 * pad - span) // stride) + 1
    if (count - 1) * stride >= size + pad:  # the last window would start in the padding after
        count -= 1
    if count < 1:
        raise ShapeError(f"a window of {span} (pad {pad}) does not fit in size {size}", arg=0)
    return count, max((count - 1) * stride + span - size - pad, pad)


def _pool_geometry(x, kernel, stride, pad, dilation, ceil_mode):
    """The output (H', W') and the padding after each axis."""
    if len(x) < 2:
        raise ShapeError(f"needs at least [H, W], got {format_shape(x)}", arg=0)
    axes = [pool_axis(x[-2 + i], kernel[i], stride[i], pad[i], dilation[i], ceil_mode) for i in range(2)]
    return tuple(n for n, _ in axes), tuple(a for _, a in axes)


def _shape_pool(x, kernel, stride=None, pad=0, dilation=1, ceil_mode=False, count_include_pad=True):
    kernel, stride, pad, dilation = _pool_params(kernel, stride, pad, dilation)
    if any(2 * p > d * (k - 1) + 1 for p, k, d in zip(pad, kernel, dilation)):
        raise ShapeError(f"pad {pad} is more than half the kernel {kernel}", arg=0)
    return tuple(x[:-2]) + _pool_geometry(x, kernel, stride, pad, dilation, ceil_mode)[0]


def _max_windows(xp, x, kernel, stride, pad, dilation, ceil_mode):
    after = _pool_geometry(x.shape, kernel, stride, pad, dilation, ceil_mode)[1]
    win = windows(xp, x, kernel, stride, pad, -xp.inf, dilation, after)
    return win.reshape(win.shape[:-2] + (-1,)), after  # (..., H', W', kH * kW), row-major offsets


def _forward_maxpool2d(xp, x, kernel, stride=None, pad=0, dilation=1, ceil_mode=False):
    kernel, stride, pad, dilation = _pool_params(kernel, stride, pad, dilation)
    return _max_windows(xp, x, kernel, stride, pad, dilation, ceil_mode)[0].max(axis=-1)


def _vjp_maxpool2d(xp, g, out, x, kernel, stride=None, pad=0, dilation=1, ceil_mode=False):
    kernel, stride, pad, dilation = _pool_params(kernel, stride, pad, dilation)
    flat, after = _max_windows(xp, x, kernel, stride, pad, dilation, ceil_mode)
    # argmax returns the first maximal offset in row-major order: that is the tie rule.
    winner = flat.argmax(axis=-1)
    zero = xp.zeros((), dtype=g.dtype)

    def part(i, j):
        return xp.where(winner == i * kernel[1] + j, g, zero)

    return (scatter_windows(xp, part, x.shape, kernel, stride, pad, g.dtype, dilation, after),)


register(Op(
    "maxpool2d", shape=_shape_pool,
    forward=_forward_maxpool2d, vjp=_vjp_maxpool2d,
    rule="route g to each window's max",
    doc="The max of each kH x kW window of x (..., H, W), padded with -inf; stride defaults to "
        "the kernel; ``dilation`` and ``ceil_mode`` as torch.nn.MaxPool2d. Tie rule: the gradient "
        "goes to the first maximal element of each window in row-major order.",
    arity=1, attrs=("kernel", "stride", "pad", "dilation", "ceil_mode"),
))


def _divisor(xp, shape, kernel, stride, pad, after, count_include_pad, dtype):
    """How many elements each window (H', W') averages: those inside the input and, with
    ``count_include_pad``, its padding (never a ceil_mode window's overhang past that)."""
    height, width = shape[-2], shape[-1]
    inside = xp.zeros((height + pad[0] + after[0], width + pad[1] + after[1]), dtype=dtype)
    if count_include_pad:
        inside[:height + 2 * pad[0], :width + 2 * pad[1]] = 1
    else:
        inside[pad[0]:pad[0] + height, pad[1]:pad[1] + width] = 1
    return windows(xp, inside, kernel, stride, (0, 0)).sum(axis=(-2, -1))


def _forward_avgpool2d(xp, x, kernel, stride=None, pad=0, ceil_mode=False, count_include_pad=True):
    kernel, stride, pad, _ = _pool_params(kernel, stride, pad)
    after = _pool_geometry(x.shape, kernel, stride, pad, (1, 1), ceil_mode)[1]
    total = windows(xp, x, kernel, stride, pad, 0.0, (1, 1), after).sum(axis=(-2, -1))
    return total / _divisor(xp, x.shape, kernel, stride, pad, after, count_include_pad, x.dtype)


def _vjp_avgpool2d(xp, g, out, x, kernel, stride=None, pad=0, ceil_mode=False, count_include_pad=True):
    kernel, stride, pad, _ = _pool_params(kernel, stride, pad)
    after = _pool_geometry(x.shape, kernel, stride, pad, (1, 1), ceil_mode)[1]
    share = g / _divisor(xp, x.shape, kernel, stride, pad, after, count_include_pad, g.dtype)
    return (scatter_windows(xp, lambda i, j: share, x.shape, kernel, stride, pad, g.dtype, (1, 1), after),)


register(Op(
    "avgpool2d", shape=_shape_pool,
    forward=_forward_avgpool2d, vjp=_vjp_avgpool2d,
    rule="spread g / count over each window",
    doc="The mean of each kH x kW window of x (..., H, W); stride defaults to the kernel; the "
        "divisor counts the zero padding (``count_include_pad`` true, PyTorch's default) or not; "
        "``ceil_mode`` as torch.nn.AvgPool2d.",
    arity=1, attrs=("kernel", "stride", "pad", "ceil_mode", "count_include_pad"),
))
