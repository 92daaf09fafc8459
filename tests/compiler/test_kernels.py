"""The in-place kernels and the chain formulas are derived from the formulas each op is
stated by: check each against the op's forward and vjp, and the derivation itself."""

import numpy as np
import pytest

from seqgraph.ir import Node, VType
from seqgraph.ops.formula import evaluate, parse_formula
from seqgraph.ops.kernels import (KERNELS, Call, formula_kernel, in_place_calls, namespace as ufunc_namespace,
                                  node_kernel, render)
from seqgraph.ops import REGISTRY

SHAPE = (3, 4)


def _inputs(op, rng):
    low, high = (0.2 if op in ("log", "div", "sqrt", "pow") else -2.0), 2.0
    if op == "binary_cross_entropy":  # probabilities
        low, high = 0.05, 0.95
    return [rng.uniform(low, high, size=SHAPE) for _ in range(REGISTRY[op].arity)]


def _run(calls, names):
    namespace = ufunc_namespace(np)
    namespace.update(names)
    exec("\n".join(render(call) for call in calls), namespace)
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


# --- the derivation ---------------------------------------------------------------------

CELL_OPS = ("add", "sub", "mul", "div", "neg", "sigmoid", "tanh", "relu", "exp", "log")


def test_needs_are_what_each_gradient_formula_reads():
    expected = {"add": {0: (), 1: ()}, "sub": {0: (), 1: ()}, "mul": {0: (1,), 1: (0,)},
                "div": {0: (1,), 1: (1, "out")}, "maximum": {0: (0, 1), 1: (0, 1)}, "neg": {0: ()},
                "sigmoid": {0: ("out",)}, "tanh": {0: ("out",)}, "relu": {0: (0,)}, "exp": {0: ("out",)},
                "log": {0: (0,)}}
    assert {op: KERNELS[op].needs for op in expected} == expected


def test_only_a_gradient_that_is_the_upstream_one_passes_it_through():
    passing = {op: sorted(port for port in range(REGISTRY[op].arity) if KERNELS[op].passes(port))
               for op in KERNELS}
    # clamp with its default bounds (none) is the identity
    assert {op: ports for op, ports in passing.items() if ports} == {"add": [0, 1], "sub": [0], "clamp": [0]}
    assert not node_kernel(Node("clamp", ("x",), VType("float", (3,)), attrs={"min": 0.0})).passes(0)


@pytest.mark.parametrize("op", sorted(KERNELS))
def test_the_in_place_gradients_read_only_what_needs_says(op):
    kernel, arity = KERNELS[op], REGISTRY[op].arity
    ins = [f"a{k}" for k in range(arity)]
    for port, emit in kernel.gradients.items():
        for mode in ("set", "add"):
            words = {name for call in emit("dst", mode, "g", "y", ins, "tmp") for name in call.buffers()}
            read = {k for k in range(arity) if f"a{k}" in words} | ({"out"} if "y" in words else set())
            assert read == set(kernel.needs[port]), f"{op} port {port} ({mode})"


def test_an_op_runs_in_place_where_its_forward_is_one_ufunc_of_its_inputs():
    expected = {"add": "add", "sub": "subtract", "mul": "multiply", "div": "divide", "neg": "negative",
                "exp": "exp", "tanh": "tanh", "log": "log", "maximum": "maximum", "minimum": "minimum",
                "greater": "greater", "sigmoid": None, "relu": None, "where": None, "leaky_relu": None,
                "copy": None, "matmul": None}
    assert {op: REGISTRY[op].in_place for op in expected} == expected


def test_the_kernel_holds_the_formulas_the_op_is_stated_by():
    sigmoid = KERNELS["sigmoid"]
    assert sigmoid.formula == "1 / (1 + exp(-{0}))"
    assert sigmoid.gradient_formulas == {0: "{g} * {out} * (1 - {out})"}
    assert KERNELS["leaky_relu"].formula == "where({0} > 0, {0}, {0} * (0.01))"
    sloped = node_kernel(Node("leaky_relu", ("x",), VType("float", SHAPE[1:]), attrs={"negative_slope": 0.2}))
    assert sloped.gradient_formulas == {0: "{g} * where({0} > 0, 1, (0.2))"}


def _nested(call: Call) -> bool:
    """Whether a call calls a function inside it (so makes a new array)."""
    return any(isinstance(operand, Call) for operand in call.operands)


# calls per forward, and per gradient (mode "set", mode "add"), as the hand-written in-place
# forms had them: the derivation must not make the step loops do more
CALLS = {"add": (1, {0: (1, 1), 1: (1, 1)}), "sub": (1, {0: (1, 1), 1: (1, 1)}),
         "mul": (1, {0: (1, 2), 1: (1, 2)}), "div": (1, {0: (1, 2), 1: (3, 4)}), "neg": (1, {0: (1, 1)}),
         "sigmoid": (4, {0: (3, 4)}), "tanh": (1, {0: (3, 4)}), "relu": (1, {0: (2, 3)}),
         "exp": (1, {0: (1, 2)}), "log": (1, {0: (1, 2)})}


@pytest.mark.parametrize("op", CELL_OPS)
def test_the_cell_ops_run_as_calls_into_buffers_only(op):
    kernel, arity = KERNELS[op], REGISTRY[op].arity
    ins = [f"a{k}" for k in range(arity)]
    forward_calls, gradient_calls = CALLS[op]
    lines = kernel.forward("y", ins)
    assert len(lines) == forward_calls and not any(map(_nested, lines))
    for port, emit in kernel.gradients.items():
        counts = []
        for mode in ("set", "add"):
            lines = emit("dst", mode, "g", "y", ins, "tmp")
            assert not any(map(_nested, lines)), lines
            counts.append(len(lines))
        assert tuple(counts) == gradient_calls[port]


def test_a_sum_or_product_is_regrouped_only_where_buffers_run_short():
    tree = parse_formula("g0 * x1 * (1 - x1)")
    assert in_place_calls(tree, "d", ("t",)) == [
        Call("multiply", ("g0", "x1"), "d"), Call("subtract", (1.0, "x1"), "t"), Call("multiply", ("d", "t"), "d")]
    assert in_place_calls(tree, "t", ()) == [
        Call("subtract", (1.0, "x1"), "t"), Call("multiply", ("t", "g0"), "t"), Call("multiply", ("t", "x1"), "t")]
    assert in_place_calls(parse_formula("where(x0 > 0, x0, 0)"), "t", ()) is None


def test_a_forward_that_would_read_an_input_after_writing_its_output_makes_new_arrays():
    # the output may share the input's buffer, so x * x + x cannot be computed in it
    kernel = formula_kernel(1, "{0} * {0} + {0}", {0: "{g} * (2 * {0} + 1)"})
    assert [render(c) for c in kernel.forward("y", ["a0"])] == ["copyto(y, add(multiply(a0, a0), a0))"]
    assert [render(c) for c in kernel.gradients[0]("dst", "set", "g", "y", ["a0"], "tmp")] == [
        "multiply(2.0, a0, dst)", "add(dst, 1.0, dst)", "multiply(g, dst, dst)"]
    x, g = np.array([0.5, -2.0]), np.array([1.0, 3.0])
    names = {"a0": x, "y": np.empty(2), "g": g, "dst": np.empty(2), "tmp": np.empty(2)}
    _run(kernel.forward("y", ["a0"]) + kernel.gradients[0]("dst", "set", "g", "y", ["a0"], "tmp"), names)
    np.testing.assert_allclose(names["y"], x * x + x)
    np.testing.assert_allclose(names["dst"], g * (2 * x + 1))


def test_a_call_renders_as_the_source_line_it_stands_for():
    nested = Call("where", (Call("not_equal", ("c", 0)), "g", 0.5))
    assert render(Call("copyto", (nested,), "dst")) == "copyto(dst, where(not_equal(c, 0), g, 0.5))"
    assert render(Call("multiply", ("a", "b"), "out")) == "multiply(a, b, out)"
    assert render(Call("maximum", ("x", 0.0), "v", keyword=True)) == "maximum(x, 0.0, out=v)"
    assert Call("add", ("a", nested), "a").buffers() == ["a", "c", "g"]
    with pytest.raises(ValueError):
        Call("print", ("a",))
