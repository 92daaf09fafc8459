"""The formula language elementwise ops are stated in: its grammar (precedence, numbers,
what is refused) and its evaluation."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.ops.formula import Node, evaluate, evaluate_all, function, parse_formula, provide, variables


def _num(value):
    return Node("num", value)


def _var(name):
    return Node("var", name)


def test_precedence_and_grouping_are_pythons():
    x0, x1, x2 = _var("x0"), _var("x1"), _var("x2")
    assert parse_formula("-x0 * x1") == Node("bin", "*", (Node("neg", "-", (x0,)), x1))
    assert parse_formula("x0 - x1 - x2") == Node("bin", "-", (Node("bin", "-", (x0, x1)), x2))
    assert parse_formula("x0 + x1 * x2") == Node("bin", "+", (x0, Node("bin", "*", (x1, x2))))
    assert parse_formula("x0 + 1 > x1") == Node("cmp", ">", (Node("bin", "+", (x0, _num(1))), x1))
    assert parse_formula("x0 - -x1") == Node("bin", "-", (x0, Node("neg", "-", (x1,))))


def test_numbers_keep_int_and_float_apart():
    assert parse_formula("1") == _num(1) and isinstance(parse_formula("1").op, int)
    for text, value in [("1.0", 1.0), ("1e-05", 1e-05), (".5", 0.5), ("2.", 2.0), ("3E2", 300.0)]:
        tree = parse_formula(text)
        assert tree == _num(value) and isinstance(tree.op, float)


def test_functions_take_their_number_of_arguments():
    tree = parse_formula("where(x0 > 0, max(x1, 0.5), -1)")
    assert tree.kind == "call" and tree.op == "where" and len(tree.args) == 3
    assert variables(tree) == {"x0", "x1"}


@pytest.mark.parametrize("text", ["x0 < x1 < 2", "+x0", "x0 $ 1", "(x0", "inf * x0", "where(x0, x1)"])
def test_more_formulas_outside_the_language_are_refused(text):
    with pytest.raises(sg.SeqgraphError) as error:
        parse_formula(text)
    assert text in error.value.message


def test_evaluation_computes_a_shared_subexpression_once():
    calls = []

    class Counting:
        """numpy, counting its exp calls."""

        def __getattr__(self, name):
            if name == "exp":
                return lambda x: calls.append(x) or np.exp(x)
            return getattr(np, name)

    x = np.array([0.5, -1.0])
    first, second = evaluate_all((parse_formula("exp(x0) + 1"), parse_formula("exp(x0) * x0")), {"x0": x},
                                 Counting())
    assert len(calls) == 1
    np.testing.assert_allclose(first, np.exp(x) + 1)
    np.testing.assert_allclose(second, np.exp(x) * x)


def test_comparisons_and_where_take_the_float_dtype():
    x = np.array([1.0, -2.0], dtype=np.float32)
    assert evaluate("x0 > 0", {"x0": x}, np).dtype == np.float32
    assert evaluate("where(x0 > 0, 1, 0.5)", {"x0": x}, np).tolist() == [1.0, 0.5]


def test_a_function_a_namespace_lacks_comes_from_what_its_backend_provided():
    import types

    lacking = types.ModuleType("lacking")
    lacking.exp = np.exp
    assert function(lacking, "exp") is np.exp
    with pytest.raises(AttributeError, match="lacking"):
        function(lacking, "tanh")
    provide(lacking, "tanh", lambda: np.tanh)
    assert evaluate("tanh(exp(x0))", {"x0": np.array([0.5])}, lacking) == pytest.approx(np.tanh(np.exp(0.5)))
