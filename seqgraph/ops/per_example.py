"""Losses per element, and the reduction that turns a per-example or per-step value into one
number over the batch and the valid steps.

The losses here (huber, binary cross-entropy on probabilities and on logits, KL divergence)
are elementwise, PyTorch's ``reduction='none'``: stated by formulas
(:func:`seqgraph.ops.elementwise.pointwise`), so they broadcast, run inside cells and fuse like
any elementwise op. A model reduces them explicitly (``mean``, ``sum``), and ``total`` does
the last step: the sum or the mean over every valid entry. With a third input ``lengths``
(B,) the leading axes are ``(T, B)`` and steps ``t >= lengths[b]`` are padding, left out
(zeroed before any arithmetic, so whatever they hold gives exactly zero gradient).
"""

from __future__ import annotations

from .loss import check_optional_lengths, valid_mask, valid_count
from .elementwise import number, pointwise
from .registry import Op, register
from .sequence import expand_right, zero_where_not


def _shape_total(x, *lengths, mean=True):
    check_optional_lengths(lengths)
    return ()


def _valid(xp, x, lengths):
    """``x`` with its padding zeroed, and how many of its entries count."""
    mask = valid_mask(xp, lengths, x.shape[0])
    if mask is not None:
        x = zero_where_not(xp, mask, x)
    return x, mask, valid_count(xp, mask, x.size, x)


def _forward_total(xp, x, lengths=None, mean=True):
    x, _, count = _valid(xp, x, lengths)
    total = x.sum()
    return xp.asarray(total / count if mean else total, dtype=x.dtype)


def _vjp_total(xp, g, out, x, lengths=None, mean=True):
    _, mask, count = _valid(xp, x, lengths)
    grad = xp.broadcast_to((g / count if mean else g).astype(x.dtype), x.shape)
    if mask is not None:
        grad = grad * expand_right(mask, x.ndim)
    return (grad,) + ((None,) if lengths is not None else ())


register(Op(
    "total", shape=_shape_total, forward=_forward_total, vjp=_vjp_total,
    rule="broadcast g (/ n)",
    doc="The sum (``mean`` false) or the mean (``mean`` true) of every valid entry of x, over "
        "its leading axes and its features: one number. Optional lengths (B,) for (T, B) "
        "leading axes; padding is left out.",
    arity=None, nondiff=(1,), attrs=("mean",),
))


# --- per-element losses ------------------------------------------------------------------


def _huber(delta=1.0):
    d, k = "({0} - {1})", number(delta)
    return (f"where(abs({d}) < {k}, 0.5 * {d} * {d}, {k} * (abs({d}) - 0.5 * {k}))",
            {0: f"{{g}} * where(abs({d}) < {k}, {d}, where({d} > 0, {k}, -{k}))",
             1: f"-{{g}} * where(abs({d}) < {k}, {d}, where({d} > 0, {k}, -{k}))"})


pointwise("huber", 2, _huber, "g * clamp(p - y, -delta, delta)",
          "0.5 (p - y)^2 where |p - y| < ``delta``, else delta (|p - y| - delta / 2), elementwise "
          "(torch.nn.functional.huber_loss, reduction='none'); the gradient is p - y clipped to "
          "[-delta, delta].", attrs=("delta",))

# log clamped at -100, as PyTorch does, so p = 0 or 1 gives a finite loss
_LOG_P, _LOG_1P = "max(log({0}), -100)", "max(log(1 - {0}), -100)"
pointwise("binary_cross_entropy", 2,
          lambda: (f"-({{1}} * {_LOG_P} + (1 - {{1}}) * {_LOG_1P})",
                   {0: "{g} * ({0} - {1}) / max((1 - {0}) * {0}, 1e-12)",
                    1: f"{{g}} * ({_LOG_1P} - {_LOG_P})"}),
          "g * (p - y) / (p (1 - p))",
          "-(y log p + (1 - y) log(1 - p)) for probabilities p, elementwise, each log at least "
          "-100 (torch.nn.functional.binary_cross_entropy, reduction='none').")
_SOFTPLUS_NEG = "(max({0}, 0) - {0} + log1p(exp(-abs({0}))))"  # log(1 + exp(-z)), never overflowing
pointwise("binary_cross_entropy_with_logits", 2,
          lambda: (f"(1 - {{1}}) * {{0}} + {_SOFTPLUS_NEG}",
                   {0: "{g} * (where({0} >= 0, 1 / (1 + exp(-abs({0}))), exp(-abs({0})) / (1 + exp(-abs({0}))))"
                       " - {1})",
                    1: "-{g} * {0}"}),
          "g * (sigmoid(z) - y)",
          "binary cross-entropy of sigmoid(z) against y, from the logits z, elementwise and without "
          "overflow: (1 - y) z + log(1 + exp(-z)) (torch.nn.functional."
          "binary_cross_entropy_with_logits, reduction='none').")


def _kl_div(log_target="false"):
    if log_target == "true":
        return "exp({1}) * ({1} - {0})", {0: "-{g} * exp({1})"}
    # y log y is 0 at y = 0 (the inner where keeps log away from 0)
    return "where({1} > 0, {1} * (log(where({1} > 0, {1}, 1)) - {0}), 0)", {0: "-{g} * {1}"}


pointwise("kl_div", 2, _kl_div, "-g * y",
          "The pointwise KL divergence y (log y - x) of target probabilities y from log-"
          "probabilities x (0 where y = 0), or exp(y) (y - x) with ``log_target`` 'true' "
          "(torch.nn.functional.kl_div, reduction='none'). The target gets no gradient: soft "
          "targets (a teacher's) are constants.", attrs=("log_target",), nondiff=(1,), held=(1,))
