"""The built-ins of seqgraph.building_blocks as a user writes them: mistakes are reported at
their place with a hint, and the values are what the ops give."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.ir import nodes_of


def _error(body: str, inputs: str = "input x : [4]") -> sg.SeqgraphError:
    with pytest.raises(sg.SeqgraphError) as caught:
        sg.parse(f"model M {{\n    {inputs}\n    {body}\n    output y\n}}\n", "m.sg").model()
    return caught.value


def _value(body: str, feed: dict, inputs: str = "input x : [4]"):
    model = sg.parse(f"model M {{\n    {inputs}\n    {body}\n    output y\n}}\n").model()
    return sg.compile(model, dtype="float64").forward(feed)["y"]


def test_clamp_without_a_bound_is_an_error_with_a_hint():
    error = _error("y = clamp(x)")
    assert "clamp needs a bound" in error.render() and "m.sg:3:9" in error.render()
    assert "max = 6" in error.diagnostics[0].hint


def test_an_unknown_gelu_form_names_the_choices():
    error = _error("y = gelu(x, approximate = erf)")
    assert "'approximate' must be one of none, tanh" in error.render()


def test_comparisons_do_not_chain():
    error = _error("y = 0 < x < 1")
    assert "syntax error" in error.render()


def test_comparisons_and_where_in_a_model():
    x = np.array([[-2.0, -0.5, 0.5, 2.0]])
    y = _value("y = where(x > 0, x, 0.1 * x) + (x >= 2) - (x == -0.5)", {"x": x})
    np.testing.assert_allclose(y, [[-0.2, -1.05, 0.5, 3.0]])


def test_pow_of_a_number_is_one_op_and_of_a_value_exp_log():
    model = sg.parse("model M {\n input x : [4]\n input p : [4]\n y = pow(x, -2) + pow(x, p)\n output y\n}\n").model()
    ops = [data.op for _, data in nodes_of(model.graph)]
    assert ops.count("pow") == 1 and "log" in ops
    (node,) = [d for _, d in nodes_of(model.graph) if d.op == "pow"]
    assert node.attrs["exponent"] == -2.0
    x, p = np.array([[0.5, 1.0, 2.0, 4.0]]), np.array([[1.0, 2.0, 0.5, -1.0]])
    y = sg.compile(model, dtype="float64").forward({"x": x, "p": p})["y"]
    np.testing.assert_allclose(y, x ** -2 + x ** p, rtol=1e-14)


def test_conv1d_along_time_keeps_the_length_and_says_so():
    error = _error("y = conv1d(x, 4, 3, stride = 2)", inputs="input x : seq[float, 3]")
    assert "keeps its length" in error.render() and "m.sg:3:34" in error.render()  # the stride given
    error = _error("y = conv1d(x, 4, 3, dilation = 2)", inputs="input x : tensor[float, 3, 9]")
    assert "dilation is for convolutions along a sequence" in error.render()
