"""The op registry, filled by importing every family of primitive ops.

Families (one module each):

- ``elementwise`` (each op stated once, by formulas): add, sub, mul, div, maximum
  (broadcasting); neg, sigmoid, tanh, relu, exp, log; copy, const
- ``pointwise`` (more ops stated by formulas): sqrt, abs, pow, clamp, hardtanh, minimum, the
  comparisons (greater, less, ...), where, softplus, gelu, leaky_relu
- ``linalg``: matmul, concat, slice, reshape, transpose, flatten
- ``reduce``: sum, mean, softmax, log_softmax
- ``loss``: cross_entropy, mse
- ``per_example``: total (the sum or mean over the batch and valid steps); per-element
  losses huber, binary_cross_entropy, binary_cross_entropy_with_logits, kl_div
- ``norm``: layer_norm, batch_norm, training_flag (1 while training, fed by the runtime)
- ``conv``: conv1d, conv2d, maxpool2d, avgpool2d
- ``temporal`` (along a sequence's time axis, lengths respected): time_conv1d, time_maxpool,
  time_avgpool
- ``sequence`` (inputs carry leading (T, B) axes): embedding, step, stack, first, last,
  reverse, max_over_time, mean_over_time, attention
- ``random``: dropout_mask

See :mod:`seqgraph.ops.registry` for the conventions every op follows.
"""

from .registry import REGISTRY, Op, ShapeError, get_op, register, unbroadcast
from . import elementwise, pointwise, linalg, reduce, loss, per_example, norm, conv, temporal, sequence, random  # noqa: F401,E501  (registers)

__all__ = ["REGISTRY", "Op", "get_op", "register", "ShapeError", "unbroadcast"]
