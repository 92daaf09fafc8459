"""The checker and the executors agree on shapes: what the checker accepts, every executor
runs, and what an op's shape rule allows the checker accepts. An elementwise op of values
with different numbers of feature axes broadcasts them right-aligned, as its shape rule
says, whatever leading (time, batch) axes the runtime arrays carry."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph import SeqgraphError
from seqgraph.gradcheck import check_model, random_inputs, reference_differences
from seqgraph.ops import REGISTRY

# each broadcasting op of the registry as the language writes it
WRITTEN = {"add": "{} + {}", "sub": "{} - {}", "mul": "{} * {}", "div": "{} / {}", "maximum": "max({}, {})"}
NUMPY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "maximum": np.maximum}

# (the fewer-axes operand as written, how NumPy computes it from x (T, B, 3), s (3,))
NARROW = {
    "mean over features": ("mean(x)", lambda x, s: x.mean(-1, keepdims=True)),
    "sum over features": ("sum(x)", lambda x, s: x.sum(-1, keepdims=True)),
    "per example": ("sum(last(x))", lambda x, s: x[-1].sum(-1, keepdims=True)[None]),
}


def compare_with_reference(net, batch, steps):
    differences = reference_differences(net, *random_inputs(net.model, batch=batch, steps=steps, ragged=True))
    assert max(differences.values()) <= 1e-12, differences


def test_every_broadcasting_op_is_covered():
    assert {name for name, op in REGISTRY.items() if op.broadcasting} == set(WRITTEN)


def _model(expression: str):
    return sg.parse(f"""
    model M {{
        input  x : seq[float, 3]
        target y : seq[float, 3]
        param  s : [3]
        output o = {expression}
        loss = mse(o, y)
    }}""").model()


@pytest.mark.parametrize("narrow", list(NARROW))
@pytest.mark.parametrize("op", list(WRITTEN))
@pytest.mark.parametrize("order", ["wide first", "narrow first"])
def test_a_value_with_fewer_feature_axes_broadcasts_over_the_last_ones(op, narrow, order):
    written, computed = NARROW[narrow]
    wide = "x" if op != "div" else "(x * x + 1)"
    left, right = (wide, f"({written} * 0.5 + 2)") if order == "wide first" else (f"({written} * 0.5 + 2)", wide)
    model = _model(WRITTEN[op].format(left, right))
    net = sg.compile(model, dtype="float64", seed=1)
    inputs, _ = random_inputs(model, batch=2, steps=4, seed=3)
    x = inputs["x"]
    wide_value = x if op != "div" else x * x + 1
    narrow_value = computed(x, None) * 0.5 + 2
    pair = (wide_value, narrow_value) if order == "wide first" else (narrow_value, wide_value)
    np.testing.assert_allclose(net.forward(inputs)["o"], NUMPY[op](*pair), rtol=1e-13)
    compare_with_reference(net, batch=2, steps=4)
    assert check_model(net, *random_inputs(model, batch=2, steps=4, ragged=True, seed=5)).worst_error < 1e-7


def test_a_parameter_times_a_per_step_scalar_spreads_over_the_parameter_s_axis():
    model = _model("s * mean(x)")
    net = sg.compile(model, dtype="float64", seed=1)
    inputs, _ = random_inputs(model, batch=3, steps=3, seed=3)  # a batch of 3 as long as s
    expected = net.params["s"] * inputs["x"].mean(-1, keepdims=True)
    out = net.forward(inputs)["o"]
    assert out.shape == (3, 3, 3)
    np.testing.assert_allclose(out, expected, rtol=1e-13)
    compare_with_reference(net, batch=3, steps=3)


def test_a_cell_scaling_its_state_by_its_own_sum_runs():
    model = sg.parse("""
    cell Norm(x : [X]) -> h : [H] {
        param U : [H, X]
        state h : [H] = 0
        h = tanh(U @ x + h[t-1] * mean(h[t-1]) - sum(h[t-1]))
    }
    model M(hidden = 4) {
        input  x : seq[float, 3]
        target y : [1]
        loss = mse(dense(last(Norm(x, hidden)), 1), y)
    }""").model()
    net = sg.compile(model, dtype="float64", seed=2)
    compare_with_reference(net, batch=3, steps=5)
    assert check_model(net, *random_inputs(model, batch=3, steps=5, ragged=True, seed=1)).worst_error < 1e-7


def test_a_slice_from_the_first_feature_is_accepted_and_runs():
    model = _model("concat(slice(x, 1, 3), slice(x, 0, 1))")
    net = sg.compile(model, dtype="float64")
    inputs, _ = random_inputs(model, batch=2, steps=3, seed=1)
    np.testing.assert_allclose(net.forward(inputs)["o"], np.roll(inputs["x"], -1, axis=-1), rtol=1e-14)


def test_a_slice_outside_the_features_is_the_shape_rule_s_error():
    with pytest.raises(SeqgraphError) as caught:
        _model("slice(x, 2, 5)")
    assert caught.value.message == "slice: [2:5] does not fit in axis -1 of [3]"
