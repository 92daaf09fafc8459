"""Parameter initialisation, reproducible from a seed.

Each parameter draws from its own generator, seeded by the run's seed and the parameter's
key, so adding a layer does not change the initial values of the others. Values are drawn
on the host in float64 and then cast, so NumPy and CuPy runs start from the same numbers.

Schemes (the ``init`` of a parameter node):
``("constant", v)``; ``("uniform", a)``: U(-a, a); ``("normal", s)``: N(0, s²);
``("uniform_fan", H)``: U(-1/√H, 1/√H), PyTorch's scheme for recurrent layers;
``("glorot",)``: U(-√(6/(fan_in+fan_out)), +…) for dense layers;
``("he",)``: N(0, 2/fan_in) for convolutions.
"""

from __future__ import annotations

import math
import zlib

import numpy


def fans(shape) -> tuple:
    """(fan_in, fan_out) of a weight ``[out, in, *kernel]`` (a vector counts as its length)."""
    if len(shape) < 2:
        n = shape[0] if shape else 1
        return n, n
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def initial_value(key: str, shape, init: tuple, seed: int):
    """The initial host array (float64) of parameter ``key``."""
    rng = numpy.random.default_rng([seed, zlib.crc32(key.encode())])
    scheme = init[0]
    if scheme == "constant":
        return numpy.full(shape, init[1], dtype=numpy.float64)
    if scheme == "uniform":
        return rng.uniform(-init[1], init[1], size=shape)
    if scheme == "normal":
        return rng.normal(0.0, init[1], size=shape)
    if scheme == "uniform_fan":
        bound = 1.0 / math.sqrt(init[1])
        return rng.uniform(-bound, bound, size=shape)
    fan_in, fan_out = fans(shape)
    if scheme == "glorot":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, size=shape)
    if scheme == "he":
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    raise ValueError(f"unknown initialiser {init!r} for {key}")
