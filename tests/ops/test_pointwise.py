"""The ops stated by formulas (seqgraph.ops.pointwise): their kinks and ties, and their
numbers against PyTorch's (forward and gradient, float64) where torch is importable."""

import numpy as np
import pytest

from seqgraph.ops import get_op

# every kink the ops have, and ordinary points between them
X = np.array([-25.0, -3.0, -1.0, -0.5, -0.2, 0.0, 0.2, 0.5, 1.0, 1.5, 3.0, 12.0, 25.0])


def _run(name, x, **attrs):
    op = get_op(name)
    out = op(np, x, **attrs)
    g = np.linspace(0.5, 1.5, x.size).reshape(x.shape)
    (grad,) = op.vjp(np, g, out, x, **attrs)
    return out, grad, g


def test_kinks_take_pytorchs_side():
    _, grad, g = _run("abs", X)
    assert grad[X == 0] == 0.0
    _, grad, g = _run("clamp", X, min=-0.5, max=1.0)  # bounds included
    np.testing.assert_array_equal(grad, np.where((X >= -0.5) & (X <= 1.0), g, 0.0))
    _, grad, g = _run("hardtanh", X, min_val=-0.5, max_val=1.0)  # bounds left out
    np.testing.assert_array_equal(grad, np.where((X > -0.5) & (X < 1.0), g, 0.0))
    _, grad, g = _run("leaky_relu", X, negative_slope=0.1)
    np.testing.assert_allclose(grad[X == 0], 0.1 * g[X == 0])


def test_comparisons_are_ones_and_zeros_in_the_inputs_dtype():
    a, b = np.array([1.0, 2.0, 3.0], dtype=np.float32), np.array([2.0, 2.0, 2.0], dtype=np.float32)
    want = {"greater": [0, 0, 1], "less": [1, 0, 0], "greater_equal": [0, 1, 1],
            "less_equal": [1, 1, 0], "equal": [0, 1, 0], "not_equal": [1, 0, 1]}
    for name, values in want.items():
        out = get_op(name)(np, a, b)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, values)


def test_softplus_neither_overflows_nor_loses_tiny_values():
    with np.errstate(over="raise", invalid="raise"):
        out, grad, g = _run("softplus", np.array([-800.0, -40.0, 0.0, 19.0, 21.0, 800.0]))
    np.testing.assert_allclose(out, [0.0, np.exp(-40.0), np.log(2.0), np.log1p(np.exp(19.0)), 21.0, 800.0],
                               rtol=1e-15)
    assert out[1] > 0 and grad[-1] == g[-1]


TORCH_CASES = [
    ("sqrt", {}, lambda F, t, x: t.sqrt(x)),
    ("abs", {}, lambda F, t, x: t.abs(x)),
    ("pow", {"exponent": 3.0}, lambda F, t, x: t.pow(x, 3.0)),
    ("pow", {"exponent": 1.5}, lambda F, t, x: t.pow(x, 1.5)),
    ("clamp", {"min": -0.5, "max": 1.0}, lambda F, t, x: t.clamp(x, min=-0.5, max=1.0)),
    ("clamp", {"max": 0.2}, lambda F, t, x: t.clamp(x, max=0.2)),
    ("hardtanh", {}, lambda F, t, x: F.hardtanh(x)),
    ("hardtanh", {"min_val": -0.5, "max_val": 1.0}, lambda F, t, x: F.hardtanh(x, -0.5, 1.0)),
    ("softplus", {}, lambda F, t, x: F.softplus(x)),
    ("softplus", {"beta": 2.0, "threshold": 5.0}, lambda F, t, x: F.softplus(x, beta=2.0, threshold=5.0)),
    ("gelu", {}, lambda F, t, x: F.gelu(x)),
    ("gelu", {"approximate": "tanh"}, lambda F, t, x: F.gelu(x, approximate="tanh")),
    ("leaky_relu", {}, lambda F, t, x: F.leaky_relu(x)),
    ("leaky_relu", {"negative_slope": 0.2}, lambda F, t, x: F.leaky_relu(x, 0.2)),
]


@pytest.mark.parametrize("name, attrs, reference", TORCH_CASES, ids=lambda v: v if isinstance(v, str) else "")
def test_unary_ops_match_pytorch(name, attrs, reference):
    torch = pytest.importorskip("torch")
    x = np.abs(X) + 0.1 if name == "sqrt" or attrs.get("exponent") == 1.5 else X
    out, grad, g = _run(name, x, **attrs)
    tx = torch.tensor(x, requires_grad=True)
    ty = reference(torch.nn.functional, torch, tx)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(grad, tx.grad.numpy(), rtol=1e-13, atol=1e-15)


def test_minimum_and_where_match_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a, b, g = rng.normal(size=(4, 5)), rng.normal(size=(5,)), rng.normal(size=(4, 5))
    b[1] = a[2, 1]  # a tie
    cond = get_op("greater")(np, a, b)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    for name, inputs, made in (("minimum", (a, b), torch.minimum(ta, tb)),
                               ("where", (cond, a, b), torch.where(torch.tensor(cond) != 0, ta, tb))):
        op = get_op(name)
        out = op(np, *inputs)
        grads = [x for x in op.vjp(np, g, out, *inputs) if x is not None]
        ta.grad = tb.grad = None
        made.backward(torch.tensor(g))
        np.testing.assert_array_equal(out, made.detach().numpy())
        np.testing.assert_allclose(grads[0], ta.grad.numpy(), rtol=1e-14)
        np.testing.assert_allclose(grads[1], tb.grad.numpy(), rtol=1e-14)
