"""The in-place kernels and the chain formulas restate the registry: check each against it."""

import numpy as np
import pytest

from seqgraph.ops.formula import evaluate
from seqgraph.ops.kernels import KERNELS, namespace as ufunc_namespace
from seqgraph.ops import REGISTRY

SHAPE = (3, 4)


def _inputs(op, rng):
    low, high = (0.2 if op in ("log", "div", "sqrt", "pow") else -2.0), 2.0
    if op == "binary_cross_entropy":  # probabilities
        low, high = 0.05, 0.95
    return [rng.uniform(low, high, size=SHAPE) for _ in range(REGISTRY[op].arity)]


def _run(lines, names):
    namespace = ufunc_namespace(np)
    namespace.update(names)
    exec("\n".join(lines), namespace)
    return namespace


@pytest.mark.parametrize("op", sorted(KERNELS))
def test_in_place_forward_equals_the_registry(op):
    rng = np.random.default_rng(0)
    ins = _inputs(op, rng)
    names = {f"a{k}": x for k, x in enumerate(ins)}
    names["out"] = np.full(SHAPE, np.nan)
    _run(KERNELS[op].forward("out", list(names)[:-1]), names)
    np.testing.assert_allclose(names["out"], REGISTRY[op].forward(np, *ins), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("op", sorted(KERNELS))
@pytest.mark.parametrize("mode", ["set", "add"])
def test_in_place_gradients_equal_the_registry(op, mode):
    rng = np.random.default_rng(1)
    ins = _inputs(op, rng)
    out = REGISTRY[op].forward(np, *ins)
    g = rng.normal(size=SHAPE)
    expected = REGISTRY[op].vjp(np, g, out, *ins)
    for port, emit in KERNELS[op].gradients.items():
        start = rng.normal(size=SHAPE)
        names = {f"a{k}": x for k, x in enumerate(ins)}
        names.update(g=g, y=out, dst=start.copy() if mode == "add" else np.full(SHAPE, np.nan),
                     tmp=np.empty(SHAPE))
        _run(emit("dst", mode, "g", "y", [f"a{k}" for k in range(len(ins))], "tmp"), names)
        want = expected[port] + (start if mode == "add" else 0)
        np.testing.assert_allclose(names["dst"], want, rtol=1e-13, atol=1e-14, err_msg=f"{op} port {port}")


@pytest.mark.parametrize("op", sorted(KERNELS))
def test_formulas_equal_the_registry(op):
    rng = np.random.default_rng(2)
    ins = _inputs(op, rng)
    out = REGISTRY[op].forward(np, *ins)
    g = rng.normal(size=SHAPE)
    args = [f"x{k}" for k in range(len(ins))]
    values = {a: x for a, x in zip(args, ins)}
    values.update(g0=g, **{f"x{len(ins)}": out})
    kernel = KERNELS[op]
    np.testing.assert_allclose(evaluate(kernel.formula.format(*args), values, np), out, rtol=1e-14)
    expected = REGISTRY[op].vjp(np, g, out, *ins)
    for port, formula in kernel.gradient_formulas.items():
        value = evaluate(formula.format(*args, g="g0", out=f"x{len(ins)}"), values, np)
        np.testing.assert_allclose(value, expected[port], rtol=1e-13, atol=1e-14)


def test_sigmoid_kernel_survives_extreme_inputs():
    x = np.array([-1000.0, -50.0, 0.0, 50.0, 1000.0])
    names = {"a0": x, "out": np.empty_like(x)}
    with np.errstate(over="ignore"):
        _run(KERNELS["sigmoid"].forward("out", ["a0"]), names)
    np.testing.assert_allclose(names["out"], REGISTRY["sigmoid"].forward(np, x), rtol=1e-15)
    assert names["out"][0] == 0.0 and names["out"][-1] == 1.0
