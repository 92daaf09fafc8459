"""Table-driven tests of every registered op: shape rule, vjp against central differences,
dtype preservation; then explicit cases for ties, kinks, masks and symbolic shapes.

Every case uses a different size on every axis (batch 2, time 6, features 3, 5, 7, ...), so a
rule that swaps two axes cannot pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from seqgraph.errors import SeqgraphError
from seqgraph.ops import REGISTRY, ShapeError, get_op

RNG = np.random.default_rng(20240611)


def normal(*shape):
    return RNG.standard_normal(shape)


def positive(*shape):
    return 0.5 + RNG.random(shape)


def ints(high, *shape):
    return RNG.integers(0, high, size=shape)


@dataclass
class Case:
    """One sample call: runtime inputs, their feature shapes, attrs, and the output's
    leading axes (the output must be ``lead + shape rule result``)."""

    inputs: list
    features: list
    lead: tuple
    attrs: dict = field(default_factory=dict)


def binary_cases(make=normal):
    return [
        Case([normal(2, 3, 5), make(2, 3, 5)], [(3, 5), (3, 5)], (2,)),
        Case([normal(2, 3, 5), make(5)], [(3, 5), (5,)], (2,)),          # parameter operand
        Case([make(3, 1), normal(2, 3, 5)], [(3, 1), (3, 5)], (2,)),     # size-1 axis
    ]


def unary_cases(make=normal):
    return [Case([make(2, 3, 5)], [(3, 5)], (2,))]


T, B = 6, 2
LENGTHS = np.array([6, 4])

CASES = {
    "add": binary_cases(),
    "sub": binary_cases(),
    "mul": binary_cases(),
    "div": binary_cases(positive),
    "maximum": binary_cases(),
    "neg": unary_cases(),
    "copy": unary_cases(),
    "sigmoid": unary_cases(),
    "tanh": unary_cases(),
    "relu": unary_cases(),
    "exp": unary_cases(),
    "log": unary_cases(positive),
    "const": [Case([], [], (), {"value": 1.5, "dtype": "float64"})],
    "matmul": [
        Case([normal(7, 5), normal(2, 5)], [(7, 5), (5,)], (2,)),
        Case([normal(7, 5), normal(T, 2, 5)], [(7, 5), (5,)], (T, 2)),
    ],
    "affine": [
        Case([normal(7, 5), normal(7), normal(2, 5)], [(7, 5), (7,), (5,)], (2,)),       # the bias rides
        Case([normal(3, 5), normal(3), normal(T, 2, 5)], [(3, 5), (3,), (5,)], (T, 2)),  # added after
    ],
    "concat": [
        Case([normal(2, 3), normal(2, 5), normal(2, 7)], [(3,), (5,), (7,)], (2,)),
        Case([normal(2, 3, 5), normal(2, 4, 5)], [(3, 5), (4, 5)], (2,), {"axis": -2}),
        Case([normal(5), normal(2, 3)], [(5,), (3,)], (2,)),             # parameter joined to batch
    ],
    "slice": [
        Case([normal(2, 11)], [(11,)], (2,), {"start": 3, "stop": 8}),
        Case([normal(2, 11, 3)], [(11, 3)], (2,), {"start": 2, "stop": 9, "axis": -2}),
    ],
    "reshape": [Case([normal(2, 3, 20)], [(3, 20)], (2,), {"shape": (4, 5), "ndim": 1})],
    "transpose": [
        Case([normal(2, 3, 5)], [(3, 5)], (2,), {"axes": (-1, -2)}),
        Case([normal(2, 3, 5, 7)], [(3, 5, 7)], (2,), {"axes": (-1, -3, -2)}),
    ],
    "flatten": [Case([normal(2, 3, 5, 7)], [(3, 5, 7)], (2,), {"ndim": 2})],
    "sum": [Case([normal(2, 3, 5, 7)], [(3, 5, 7)], (2,), {"axis": (-1, -3)})],
    "mean": [Case([normal(2, 3, 5, 7)], [(3, 5, 7)], (2,), {"axis": (-2,)})],
    "softmax": [
        Case([normal(2, 3, 5)], [(3, 5)], (2,)),
        Case([normal(2, 3, 5)], [(3, 5)], (2,), {"axis": -2}),
    ],
    "log_softmax": [
        Case([normal(2, 3, 5)], [(3, 5)], (2,)),
        Case([normal(2, 3, 5)], [(3, 5)], (2,), {"axis": -2}),
    ],
    "cross_entropy": [
        Case([normal(2, 5), ints(5, 2)], [(5,), ()], ()),
        Case([normal(T, B, 5), ints(5, T, B), LENGTHS], [(5,), (), ()], ()),
    ],
    "mse": [
        Case([normal(2, 3, 5), normal(2, 3, 5)], [(3, 5), (3, 5)], ()),
        Case([normal(T, B, 3), normal(T, B, 3), LENGTHS], [(3,), (3,), ()], ()),
    ],
    "conv1d": [
        Case([normal(2, 3, 9), normal(4, 3, 3), normal(4)], [(3, 9), (4, 3, 3), (4,)], (2,)),
        Case([normal(2, 3, 9), normal(4, 3, 3), normal(4)], [(3, 9), (4, 3, 3), (4,)], (2,),
             {"stride": 2, "pad": 1}),
    ],
    "conv2d": [
        Case([normal(2, 3, 9, 7), normal(4, 3, 3, 2), normal(4)],
             [(3, 9, 7), (4, 3, 3, 2), (4,)], (2,)),
        Case([normal(2, 3, 9, 7), normal(4, 3, 3, 2), normal(4)],
             [(3, 9, 7), (4, 3, 3, 2), (4,)], (2,), {"stride": (2, 1), "pad": (1, 0)}),
        Case([normal(3, 9, 7), normal(6, 3, 3, 2), normal(6)],               # no leading axes
             [(3, 9, 7), (6, 3, 3, 2), (6,)], (), {"stride": 2}),
    ],
    "maxpool2d": [
        Case([normal(2, 5, 9, 7)], [(5, 9, 7)], (2,), {"kernel": 2}),
        Case([normal(2, 3, 9, 7)], [(3, 9, 7)], (2,), {"kernel": (3, 2), "stride": (2, 1),
                                                      "pad": 1}),
        Case([normal(2, 3, 9, 7)], [(3, 9, 7)], (2,), {"kernel": 2, "stride": 2, "pad": 1, "dilation": 2,
                                                      "ceil_mode": True}),
    ],
    "avgpool2d": [
        Case([normal(2, 5, 9, 7)], [(5, 9, 7)], (2,), {"kernel": 2}),
        Case([normal(2, 3, 9, 7)], [(3, 9, 7)], (2,), {"kernel": (3, 2), "stride": (2, 1),
                                                      "pad": 1}),
        Case([normal(2, 3, 9, 7)], [(3, 9, 7)], (2,), {"kernel": 3, "stride": 2, "pad": 1, "ceil_mode": True,
                                                      "count_include_pad": False}),
    ],
    "time_conv1d": [Case([normal(T, B, 3), normal(4, 3, 3), normal(4), LENGTHS], [(3,), (4, 3, 3), (4,), ()], (T, B)),
                    Case([normal(T, B, 3), normal(5, 3, 2), normal(5), LENGTHS], [(3,), (5, 3, 2), (5,), ()], (T, B),
                         {"dilation": 2})],
    "time_maxpool": [Case([normal(T, B, 3), LENGTHS], [(3,), ()], (T, B), {"kernel": 3}),
                     Case([normal(T, B, 3), LENGTHS], [(3,), ()], (T, B), {"kernel": 2, "dilation": 2})],
    "time_avgpool": [Case([normal(T, B, 3), LENGTHS], [(3,), ()], (T, B), {"kernel": 3}),
                     Case([normal(T, B, 3), LENGTHS], [(3,), ()], (T, B), {"kernel": 4, "count_include_pad": True})],
    "embedding": [Case([ints(7, T, B), normal(7, 5)], [(), (7, 5)], (T, B))],
    "step": [Case([normal(T, B, 3)], [(3,)], (B,), {"t": 4})],
    "stack": [Case([normal(B, 5), normal(B, 5), normal(B, 5)], [(5,)] * 3, (3, B))],
    "first": [Case([normal(T, B, 3)], [(3,)], (B,))],
    "last": [Case([normal(T, B, 3), np.array([4, 6])], [(3,), ()], (B,))],
    "reverse": [Case([normal(T, B, 3), np.array([4, 6])], [(3,), ()], (T, B))],
    "max_over_time": [Case([normal(T, B, 3), np.array([4, 6])], [(3,), ()], (B,))],
    "mean_over_time": [Case([normal(T, B, 3), np.array([4, 6])], [(3,), ()], (B,))],
    "attention": [
        Case([normal(4, B, 3), normal(T, B, 3), LENGTHS], [(3,), (3,), ()], (4, B)),
        Case([normal(B, 3), normal(T, B, 3), np.array([2, 5])], [(3,), (3,), ()], (B,)),
    ],
    "dropout_mask": [Case([normal(2, 3, 5)], [(3, 5)], (2,), {"p": 0.3})],
    # stated by formulas (seqgraph.ops.pointwise)
    "sqrt": unary_cases(positive),
    "abs": unary_cases(),
    "pow": [Case([positive(2, 3, 5)], [(3, 5)], (2,), {"exponent": 1.5}),
            Case([normal(2, 3, 5)], [(3, 5)], (2,), {"exponent": 3.0})],
    "clamp": [Case([normal(2, 3, 5)], [(3, 5)], (2,), {"min": -0.5, "max": 0.7}),
              Case([normal(2, 3, 5)], [(3, 5)], (2,), {"min": 0.1})],
    "hardtanh": unary_cases() + [Case([normal(2, 3, 5)], [(3, 5)], (2,), {"min_val": -0.3, "max_val": 2.0})],
    "minimum": binary_cases(),
    **{name: binary_cases() for name in ("greater", "less", "greater_equal", "less_equal", "equal", "not_equal")},
    "where": [Case([ints(2, 2, 3, 5).astype(float), normal(2, 3, 5), normal(5)], [(3, 5), (3, 5), (5,)], (2,)),
              Case([ints(2, 5).astype(float), normal(3, 1), normal(2, 3, 5)], [(5,), (3, 1), (3, 5)], (2,))],
    "softplus": unary_cases() + [Case([3 * normal(2, 3, 5)], [(3, 5)], (2,), {"beta": 2.0, "threshold": 3.0})],
    "gelu": unary_cases() + [Case([normal(2, 3, 5)], [(3, 5)], (2,), {"approximate": "tanh"})],
    "leaky_relu": unary_cases() + [Case([normal(2, 3, 5)], [(3, 5)], (2,), {"negative_slope": -0.3})],
    # per-element losses and the reduction over the batch (seqgraph.ops.per_example)
    "total": [Case([normal(2, 3, 5)], [(3, 5)], (), {"mean": True}),
              Case([normal(T, B, 3), LENGTHS], [(3,), ()], (), {"mean": False}),
              Case([normal(T, B, 3), LENGTHS], [(3,), ()], (), {"mean": True})],
    "huber": binary_cases() + [Case([normal(2, 3, 5), normal(2, 3, 5)], [(3, 5), (3, 5)], (2,), {"delta": 0.4})],
    "binary_cross_entropy": [Case([0.1 + 0.8 * RNG.random((2, 3, 5)), RNG.random((2, 3, 5))],
                                  [(3, 5), (3, 5)], (2,))],
    "binary_cross_entropy_with_logits": binary_cases(),
    # normalisation (seqgraph.ops.norm); batch_norm while training (flag 1) and evaluating (0)
    "layer_norm": [Case([normal(2, 3, 5)], [(3, 5)], (2,)), Case([normal(4, 6)], [(6,)], (4,), {"eps": 0.1})],
    "batch_norm": [Case([normal(4, 3, 5), normal(3), positive(3), np.array(1.0)], [(3, 5), (3,), (3,), ()], (4,)),
                   Case([normal(6, 3), normal(3), positive(3), np.array(1.0)], [(3,), (3,), (3,), ()], (6,),
                        {"eps": 0.01, "momentum": 0.5}),
                   Case([normal(4, 3, 5), normal(3), positive(3), np.array(0.0)], [(3, 5), (3,), (3,), ()], (4,))],
    "training_flag": [Case([], [], (), {"dtype": "float64"})],
    "kl_div": [Case([normal(2, 3, 5), RNG.random((2, 3, 5))], [(3, 5), (3, 5)], (2,)),
               Case([normal(2, 3, 5), normal(2, 3, 5)], [(3, 5), (3, 5)], (2,), {"log_target": "true"})],
}


def all_cases():
    return [pytest.param(name, case, id=f"{name}-{i}")
            for name, cases in CASES.items() for i, case in enumerate(cases)]


def call(op, inputs, attrs):
    extra = {"rng": np.random.default_rng(0)} if op.random else {}
    return op.forward(np, *inputs, **attrs, **extra)


def is_float(a):
    return np.issubdtype(a.dtype, np.floating)


def as_float32(inputs):
    return [a.astype(np.float32) if is_float(a) else a for a in inputs]


# --- the table covers the registry ------------------------------------------------------


def test_every_registered_op_has_a_case():
    missing = sorted(set(REGISTRY) - set(CASES))
    assert not missing, f"ops without a test case: {missing}"
    unknown = sorted(set(CASES) - set(REGISTRY))
    assert not unknown, f"cases for ops that are not registered: {unknown}"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_record_is_complete(name):
    op = REGISTRY[name]
    assert op.name == name
    assert op.doc and op.rule
    assert op.dtype == "float"
    for case in CASES[name]:
        assert set(case.attrs) <= set(op.attrs), f"{name}: undeclared attrs"
        assert op.arity is None or op.arity == len(case.inputs)


# --- per case: shape rule, gradient, dtype ------------------------------------------------


@pytest.mark.parametrize("name, case", all_cases())
def test_shape_rule_matches_forward(name, case):
    op = REGISTRY[name]
    out = call(op, case.inputs, case.attrs)
    assert out.shape == case.lead + tuple(op.shape(*case.features, **case.attrs))


def finite_difference(op, inputs, attrs, index, weights, eps=1e-6):
    """d sum(weights * op(inputs)) / d inputs[index], one coordinate at a time."""
    x = inputs[index]
    grad = np.zeros_like(x)
    for k in np.ndindex(x.shape):
        values = []
        for step in (eps, -eps):
            moved = x.copy()
            moved[k] += step
            changed = inputs[:index] + [moved] + inputs[index + 1:]
            values.append(np.sum(weights * call(op, changed, attrs)))
        grad[k] = (values[0] - values[1]) / (2 * eps)
    return grad


@pytest.mark.parametrize("name, case", all_cases())
def test_vjp_matches_finite_differences(name, case):
    op = REGISTRY[name]
    out = call(op, case.inputs, case.attrs)
    weights = np.random.default_rng(1).standard_normal(out.shape)
    grads = op.vjp(np, weights, out, *case.inputs, **case.attrs)
    assert len(grads) == len(case.inputs)
    for i, (x, grad) in enumerate(zip(case.inputs, grads)):
        if i in op.nondiff:
            assert grad is None, f"{name}: input {i} is nondiff but got a gradient"
            continue
        assert grad.shape == x.shape
        numeric = finite_difference(op, case.inputs, case.attrs, i, weights)
        scale = max(np.linalg.norm(numeric), np.linalg.norm(grad), 1e-12)
        assert np.linalg.norm(numeric - grad) / scale < 1e-6, f"{name}: input {i}"


@pytest.mark.parametrize("name, case", all_cases())
def test_float32_stays_float32(name, case):
    op = REGISTRY[name]
    inputs = as_float32(case.inputs)
    attrs = dict(case.attrs, **({"dtype": "float32"} if "dtype" in op.attrs else {}))
    out = call(op, inputs, attrs)
    assert out.dtype == np.float32
    g = np.ones(out.shape, dtype=np.float32)
    for grad in op.vjp(np, g, out, *inputs, **attrs):
        assert grad is None or grad.dtype == np.float32


# --- elementwise: broadcasting, ties, kinks ---------------------------------------------


def test_parameter_operand_gets_gradient_summed_over_batch():
    a, b, g = normal(2, 3, 5), positive(5), normal(2, 3, 5)
    expected = {
        "add": g.sum((0, 1)),
        "sub": -g.sum((0, 1)),
        "mul": (g * a).sum((0, 1)),
        "div": (-g * a / b ** 2).sum((0, 1)),
    }
    for name, gb in expected.items():
        op = get_op(name)
        out = op(np, a, b)
        assert out.shape == (2, 3, 5)
        ga, got = op.vjp(np, g, out, a, b)
        assert ga.shape == a.shape and got.shape == (5,)
        np.testing.assert_allclose(got, gb, rtol=1e-12)


@pytest.mark.parametrize("name, to_a", [("maximum", [2.0, 0.0, 8.0]), ("minimum", [2.0, 6.0, 0.0])])
def test_maximum_and_minimum_split_gradient_evenly_at_ties(name, to_a):
    op = get_op(name)
    a, b, g = np.array([1.0, 2.0, 3.0]), np.array([1.0, 5.0, 0.0]), np.array([4.0, 6.0, 8.0])
    ga, gb = op.vjp(np, g, op(np, a, b), a, b)
    np.testing.assert_array_equal(ga, to_a)
    np.testing.assert_array_equal(gb, g - np.array(to_a))
    assert "tie" in op.doc.lower()


def test_relu_gradient_is_zero_at_zero():
    op = get_op("relu")
    x = np.array([-1.0, 0.0, 2.0])
    (gx,) = op.vjp(np, np.ones(3), op(np, x), x)
    np.testing.assert_array_equal(gx, [0.0, 0.0, 1.0])


def test_sigmoid_and_softmax_are_stable_for_huge_inputs():
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y = get_op("sigmoid")(np, np.array([-1000.0, 0.0, 1000.0]))
        p = get_op("softmax")(np, np.array([[1000.0, 1001.0, -1000.0]]))
        lp = get_op("log_softmax")(np, np.array([[1000.0, 1001.0, -1000.0]]))
    np.testing.assert_allclose(y, [0.0, 0.5, 1.0])
    assert np.all(np.isfinite(p)) and np.isclose(p.sum(), 1.0)
    np.testing.assert_allclose(lp[0, :2], np.log(p[0, :2]))


def test_binary_shape_rule_names_both_shapes():
    with pytest.raises(ShapeError) as err:
        get_op("add").shape((3, 5), (4,))
    assert err.value.arg == 1
    assert "[3, 5]" in err.value.message and "[4]" in err.value.message


# --- pooling and convolution ------------------------------------------------------------


def test_maxpool_tie_goes_to_first_element_in_row_major_order():
    op = get_op("maxpool2d")
    x = np.array([[[[1.0, 3.0, 5.0, 5.0],
                    [3.0, 2.0, 5.0, 5.0]]]])  # windows: [[1, 3], [3, 2]] and all fives
    out = op(np, x, kernel=2)
    np.testing.assert_array_equal(out, [[[[3.0, 5.0]]]])
    (gx,) = op.vjp(np, np.array([[[[10.0, 20.0]]]]), out, x, kernel=2)
    np.testing.assert_array_equal(gx, [[[[0.0, 10.0, 20.0, 0.0],
                                         [0.0, 0.0, 0.0, 0.0]]]])
    assert "tie" in op.doc.lower()


def conv2d_reference(x, w, b, stride, pad):
    """Direct nested loops over batch, output channel and output position."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * pad[0], wd + 2 * pad[1]))
    xp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd] = x
    ho = (h + 2 * pad[0] - kh) // stride[0] + 1
    wo = (wd + 2 * pad[1] - kw) // stride[1] + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(n):
        for oc in range(o):
            for r in range(ho):
                for col in range(wo):
                    total = b[oc]
                    for ci in range(c):
                        for di in range(kh):
                            for dj in range(kw):
                                total += (w[oc, ci, di, dj] *
                                          xp[i, ci, r * stride[0] + di, col * stride[1] + dj])
                    out[i, oc, r, col] = total
    return out


@pytest.mark.parametrize("stride, pad", [((1, 1), (0, 0)), ((2, 1), (1, 0)), ((2, 3), (2, 1))])
def test_conv2d_matches_nested_loops(stride, pad):
    x, w, b = normal(2, 3, 8, 9), normal(4, 3, 3, 4), normal(4)
    got = get_op("conv2d")(np, x, w, b, stride=stride, pad=pad)
    np.testing.assert_allclose(got, conv2d_reference(x, w, b, stride, pad), rtol=1e-12,
                               atol=1e-12)


def test_conv1d_matches_conv2d_reference():
    x, w, b = normal(2, 3, 10), normal(4, 3, 3), normal(4)
    got = get_op("conv1d")(np, x, w, b, stride=2, pad=1)
    want = conv2d_reference(x[:, :, None, :], w[:, :, None, :], b, (1, 2), (0, 1))[:, :, 0, :]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_avgpool_counts_padding_in_divisor():
    x = np.ones((1, 1, 2, 2))
    out = get_op("avgpool2d")(np, x, kernel=2, stride=1, pad=1)
    np.testing.assert_allclose(out[0, 0], [[0.25, 0.5, 0.25], [0.5, 1.0, 0.5],
                                           [0.25, 0.5, 0.25]])


def test_conv_leading_axes_pass_through():
    x, w, b = normal(5, 2, 3, 9, 7), normal(4, 3, 3, 2), normal(4)
    op = get_op("conv2d")
    out = op(np, x, w, b)
    assert out.shape == (5, 2, 4, 7, 6)
    np.testing.assert_allclose(out[3], op(np, x[3], w, b))


# --- losses -----------------------------------------------------------------------------


def masked_case():
    logits, target = normal(T, B, 5), ints(5, T, B)
    lengths = np.array([6, 3])
    return logits, target, lengths


def test_masked_cross_entropy_matches_hand_computation():
    logits, target, lengths = masked_case()
    terms = []
    for b in range(B):
        for t in range(lengths[b]):
            z = logits[t, b]
            terms.append(np.log(np.sum(np.exp(z))) - z[target[t, b]])
    loss = get_op("cross_entropy")(np, logits, target, lengths)
    assert loss.shape == ()
    np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-12)


def test_masked_cross_entropy_ignores_padding_even_when_huge():
    op = get_op("cross_entropy")
    logits, target, lengths = masked_case()
    loss = op(np, logits, target, lengths)
    (grad, *_) = op.vjp(np, np.array(1.0), loss, logits, target, lengths)
    wild, wild_target = logits.copy(), target.copy()
    wild[3:, 1] = 1e30
    wild[4:, 1, ::2] = -1e30
    wild[5, 1, 1] = np.inf
    wild_target[3:, 1] = 999  # not even a class id
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # padding never computed
        wild_loss = op(np, wild, wild_target, lengths)
        (wild_grad, *_) = op.vjp(np, np.array(1.0), wild_loss, wild, wild_target, lengths)
    assert wild_loss == loss
    np.testing.assert_array_equal(wild_grad, grad)
    assert np.all(wild_grad[3:, 1] == 0.0)


def test_masked_mse_ignores_padding_and_matches_hand_computation():
    op = get_op("mse")
    pred, target, lengths = normal(T, B, 3), normal(T, B, 3), np.array([6, 3])
    want = np.mean(np.concatenate([(pred[:6, 0] - target[:6, 0]).ravel(),
                                   (pred[:3, 1] - target[:3, 1]).ravel()]) ** 2)
    loss = op(np, pred, target, lengths)
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    wild = pred.copy()
    wild[3:, 1] = 1e30
    assert op(np, wild, target, lengths) == loss
    grad, none_target, none_lengths = op.vjp(np, np.array(1.0), loss, wild, target, lengths)
    assert none_target is None and none_lengths is None
    assert np.all(grad[3:, 1] == 0.0) and np.all(np.isfinite(grad))


# --- sequence ops -----------------------------------------------------------------------


def test_reverse_within_each_length():
    x = np.arange(8.0).reshape(4, 2, 1)  # x[t, b] = 2t + b
    out = get_op("reverse")(np, x, np.array([3, 4]))
    np.testing.assert_array_equal(out[:, :, 0], [[4.0, 7.0], [2.0, 5.0], [0.0, 3.0], [0.0, 1.0]])
    (g,) = get_op("reverse").vjp(np, x, out, x, np.array([3, 4]))[:1]
    np.testing.assert_array_equal(g, out)


def test_last_picks_each_sequences_final_step():
    x = np.arange(8.0).reshape(4, 2, 1)
    out = get_op("last")(np, x, np.array([2, 4]))
    np.testing.assert_array_equal(out[:, 0], [2.0, 7.0])
    gx, none = get_op("last").vjp(np, np.array([[10.0], [20.0]]), out, x, np.array([2, 4]))
    assert none is None
    want = np.zeros((4, 2, 1))
    want[1, 0], want[3, 1] = 10.0, 20.0
    np.testing.assert_array_equal(gx, want)


def test_pooling_over_time_ignores_padding():
    x, lengths = normal(T, B, 3), np.array([6, 2])
    wild = x.copy()
    wild[2:, 1] = 1e30
    for name, reference in (("max_over_time", np.max), ("mean_over_time", np.mean)):
        op = get_op(name)
        out = op(np, wild, lengths)
        np.testing.assert_allclose(out[1], reference(x[:2, 1], axis=0))
        gx, _ = op.vjp(np, np.ones_like(out), out, wild, lengths)
        assert np.all(gx[2:, 1] == 0.0)


def test_max_over_time_tie_goes_to_first_step():
    x = np.array([[[1.0]], [[3.0]], [[3.0]]])
    op = get_op("max_over_time")
    gx, _ = op.vjp(np, np.array([[5.0]]), op(np, x, np.array([3])), x, np.array([3]))
    np.testing.assert_array_equal(gx[:, 0, 0], [0.0, 5.0, 0.0])


def attention_reference(query, memory, lengths):
    """Loop over every query position and sequence."""
    out = np.zeros_like(query)
    for idx in np.ndindex(query.shape[:-1]):
        b = idx[-1]
        mem = memory[:lengths[b], b]
        scores = mem @ query[idx]
        weights = np.exp(scores - scores.max())
        out[idx] = (weights / weights.sum()) @ mem
    return out


def test_attention_matches_loop_and_ignores_padded_memory():
    op = get_op("attention")
    query, memory, lengths = normal(4, B, 3), normal(T, B, 3), np.array([6, 2])
    out = op(np, query, memory, lengths)
    np.testing.assert_allclose(out, attention_reference(query, memory, lengths), rtol=1e-12)
    wild = memory.copy()
    wild[2:, 1] = 1e30
    g = normal(4, B, 3)
    wild_out = op(np, query, wild, lengths)
    np.testing.assert_array_equal(wild_out, out)
    gq, gm, none = op.vjp(np, g, out, query, memory, lengths)
    wgq, wgm, _ = op.vjp(np, g, wild_out, query, wild, lengths)
    assert none is None
    np.testing.assert_array_equal(wgq, gq)
    np.testing.assert_array_equal(wgm, gm)
    assert np.all(gm[2:, 1] == 0.0)


def test_embedding_scatter_adds_repeated_rows():
    op = get_op("embedding")
    ids, table = np.array([[1, 1], [3, 1]]), normal(4, 2)
    out = op(np, ids, table)
    none, gt = op.vjp(np, np.ones((2, 2, 2)), out, ids, table)
    assert none is None
    np.testing.assert_array_equal(gt[:, 0], [0.0, 3.0, 0.0, 1.0])


# --- random -----------------------------------------------------------------------------


def test_dropout_mask_values_and_rate():
    op = get_op("dropout_mask")
    x = np.zeros((200, 50), dtype=np.float32)
    mask = op(np, x, p=0.25, rng=np.random.default_rng(3))
    again = op(np, x, p=0.25, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(mask, again)
    assert set(np.unique(mask)) <= {0.0, np.float32(1 / 0.75)}
    assert abs(np.mean(mask == 0) - 0.25) < 0.02
    assert op.random and op.vjp(np, mask, mask, x, p=0.25) == (None,)


# --- shape rules: symbolic sizes and errors ---------------------------------------------


def test_symbolic_shapes_flow_through_matmul_concat_slice():
    from seqgraph.sizes import Size

    H, X = Size.symbol("H"), Size.symbol("X")
    assert get_op("concat").shape((X,), (H,)) == (X + H,)
    assert get_op("matmul").shape((4 * H, X + H), (X + H,)) == (4 * H,)
    assert get_op("slice").shape((4 * H,), start=H, stop=2 * H) == (H,)
    assert get_op("conv2d").shape((3, H, X), (4, 3, 3, 3), (4,)) == (4, H - 2, X - 2)


def test_symbolic_size_that_does_not_divide_is_a_shape_error_with_hint():
    from seqgraph.sizes import Size

    H = Size.symbol("H")
    with pytest.raises(ShapeError) as err:
        get_op("conv2d").shape((3, H, 8), (4, 3, 3, 3), (4,), stride=2)
    assert err.value.hint
    assert get_op("maxpool2d").shape((3, 2 * H, 8), kernel=2) == (3, H, 4)


def test_matmul_mismatch_names_both_shapes():
    with pytest.raises(ShapeError) as err:
        get_op("matmul").shape((7, 5), (4,))
    assert err.value.arg == 1
    assert "[7, 5]" in err.value.message and "[4]" in err.value.message


def test_concat_mismatch_is_a_shape_error():
    with pytest.raises(ShapeError) as err:
        get_op("concat").shape((3, 5), (4, 6))
    assert err.value.arg == 1
    assert "[3, 5]" in err.value.message and "[4, 6]" in err.value.message


def test_unknown_op_hints_at_the_close_name():
    with pytest.raises(SeqgraphError) as err:
        get_op("tanhh")
    assert "tanh" in err.value.hint
