"""Generated programs: every program the checker accepts runs, and its numbers are right.

:func:`program_strategies.programs` writes random well-typed cells and models (see its module's
docstring for what they mix). For each one:

- checking it either passes or raises a :class:`SeqgraphError` that names ``file:line:col``
  (never another exception);
- when it passes, the compiled program, with every pass, runs on each CPU path (native loops
  and MKL products on, and both off) and gives the reference executor's outputs and
  gradients to 1e-12 in float64 (relative to each value's size where it is above 1) on a
  ragged batch;
- and its gradients equal central differences of the loss (a random direction per
  parameter and input), unless a loss compares with a computed target: a target is a
  constant to the loss by design, so there the gradient is not the loss's derivative.
  Since the compiled gradients equal the reference's to 1e-12, this also holds the
  reference to the differences, without running the slow reference executor once per
  difference.

The budget is fixed and the examples are derived from the test's name, so CI runs the same
programs every time, in well under a minute. ``SEQGRAPH_GENERATED_PROGRAMS=N`` runs ``N``
programs instead (``SEQGRAPH_GENERATED_SEED=S`` draws a different set), e.g.
``SEQGRAPH_GENERATED_PROGRAMS=500 pytest tests/test_generated_programs.py``.
"""

import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, note, seed, settings

import seqgraph as sg
from seqgraph import SeqgraphError, cli
from seqgraph.gradcheck import check_model, random_inputs, reference_differences
from seqgraph.ir import nodes_of

from program_strategies import programs

FILENAME = "generated.sg"
LOCATED = re.compile(rf"^{re.escape(FILENAME)}:\d+:\d+: error: ", re.M)
BUDGET = int(os.environ.get("SEQGRAPH_GENERATED_PROGRAMS", "30"))
SEED = os.environ.get("SEQGRAPH_GENERATED_SEED")
PATHS = {"native loops and MKL": "1", "NumPy only": "0"}


def checked_model(text: str):
    """The model of ``text``, or None when the checker refuses it with a located error."""
    try:
        model = sg.parse(text, FILENAME).model()
        model.params  # every shape concrete
    except SeqgraphError as error:
        rendered = error.render()
        assert LOCATED.search(rendered), f"an error without file:line:col:\n{rendered}"
        return None
    return model


def compiled_matches_reference(model, inputs, lengths, switch: str):
    """The network compiled with the native paths switched ``switch`` ("1" or "0"), after
    checking its outputs and gradients against the reference executor's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEQGRAPH_NATIVE", switch)
        patch.setenv("SEQGRAPH_MKL", switch)
        net = sg.compile(model, dtype="float64", seed=0)
        differences = reference_differences(net, inputs, lengths)
    # to 1e-12 of each value's own size where it is above 1 (a gradient of 1e4 rounds at 1e-12)
    sizes = {name: float(np.abs(value).max(initial=1.0))
             for name, value in {**net.forward(inputs, lengths), **net.backward()}.items()}
    relative = {name: gap / sizes.get(name, 1.0) for name, gap in differences.items()}
    worst = max(relative, key=relative.get)
    assert relative[worst] <= 1e-12, f"{worst} differs from the reference by {differences[worst]:.3g}"
    return net


def _settings(function):
    # no shrinking: a failing program is shown as drawn, at once (shrinking one takes minutes)
    chosen = settings(max_examples=BUDGET, derandomize=SEED is None, database=None, deadline=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])(function)
    return seed(int(SEED))(chosen) if SEED is not None else chosen


@_settings
@given(programs())
def test_every_accepted_program_runs_and_equals_the_reference(program):
    note(program.text)
    model = checked_model(program.text)
    if model is None:
        return
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True, seed=1)
    for name, switch in PATHS.items():
        note(f"path: {name}")
        net = compiled_matches_reference(model, inputs, lengths, switch)
    if program.computed_target:
        return
    result = check_model(net, inputs, lengths)
    assert result.ok(1e-6), (f"gradient of {result.worst_name} is off central differences by "
                             f"{result.worst_error:.3g}; culprit: {result.culprit}")


def test_the_strategy_writes_programs_that_check():
    """At least half the drawn programs pass the checker (a generator that only wrote refusals would test
    nothing past the checker); counted on a fixed sample."""
    texts = []

    @settings(max_examples=40, derandomize=True, database=None, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(programs())
    def collect(program):
        texts.append(program.text)

    collect()
    accepted = sum(checked_model(text) is not None for text in texts)
    assert accepted >= 0.5 * len(texts), f"only {accepted} of {len(texts)} programs check"
    assert any("[t-1] *" in text or "* s" in text for text in texts)  # gated products appear


# --- regressions: each program was once refused or broken ------------------------------------

SECOND_ORDER = """
cell SecondOrder(x : [X]) -> h : [H] {
    param W : [H, H]
    param U : [H, H]
    param V : [H, X]
    state h : [H] = 0
    state hp : [H] = 0
    h = tanh(W @ h[t-1] + U @ hp[t-1] + V @ x)
    hp = h[t-1]
}
model M(hidden = 3) {
    input x : seq[float, 2]
    target y : seq[float, 3]
    loss = mse(SecondOrder(x, hidden), y)
}
"""


@pytest.mark.parametrize("switch", sorted(PATHS.values()))
def test_a_state_that_holds_another_states_previous_value(switch):
    """A delay line (``hp = h[t-1]``, so that ``hp[t-1]`` is h two steps back) made the
    compiled program read the wrong step, or fail with a KeyError (``s = s[t-1]``): its value
    node was another state's read, which the scan does not carry."""
    model = checked_model(SECOND_ORDER)
    inputs, lengths = random_inputs(model, batch=3, steps=5, ragged=True, seed=1)
    net = compiled_matches_reference(model, inputs, lengths, switch)
    W, U, V = (net.params[f"SecondOrder_0.{k}"] for k in "WUV")
    h = [np.zeros((3, 3))] * 2
    for t in range(5):
        h.append(np.tanh(h[-1] @ W.T + h[-2] @ U.T + inputs["x"][t] @ V.T))
    h = np.stack(h[2:]) * (np.arange(5)[:, None] < lengths["time"][None, :])[..., None]
    expected = ((h - inputs["y"] * (np.arange(5)[:, None] < lengths["time"][None, :])[..., None]) ** 2).sum() \
        / (lengths["time"].sum() * 3)
    np.testing.assert_allclose(net.forward(inputs, lengths)["loss"], expected, rtol=1e-12)
    assert check_model(net, inputs, lengths).ok(1e-6)
    constant = SECOND_ORDER.replace("hp = h[t-1]", "hp = hp[t-1]")
    compiled_matches_reference(checked_model(constant), inputs, lengths, switch)


def test_a_loss_that_adds_a_scaled_loss():
    """``loss = mse(...) + 2 * mse(...)`` failed with "return arrays must be of ArrayType":
    the sum was to be written into its operand in place, but 2 times a 0-d array is a NumPy
    scalar, not an array."""
    text = ("model M(hidden = 3) {\n    input x : seq[float, 4]\n    target y : [3]\n"
            "    h = lstm(x, hidden)\n    loss = mse(last(h), y) + 2 * mse(last(tanh(h)), y)\n}\n")
    model = checked_model(text)
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True, seed=1)
    for switch in PATHS.values():
        net = compiled_matches_reference(model, inputs, lengths, switch)
    last = lambda h: h[lengths["time"] - 1, np.arange(3)]  # noqa: E731
    probe = sg.Probe(net)
    probe.forward(inputs, lengths)
    h = last(probe.value("h"))
    expected = ((h - inputs["y"]) ** 2).mean() + 2 * ((np.tanh(h) - inputs["y"]) ** 2).mean()
    np.testing.assert_allclose(net.forward(inputs, lengths)["loss"], expected, rtol=1e-12)


@pytest.mark.parametrize("body", ["s = slice(W @ s[t-1], X, H + X)", "s = slice(concat(s[t-1], x), 0, H)",
                                  "s = slice(1 - tanh(W @ s[t-1]), X, H + X)"])
def test_a_state_that_is_a_slice(body):
    """A state assigned a slice of a wider core value failed in the backward loop with a
    NameError: the slice's gradient was a call handed forward values the loop had not loaded,
    though the rule reads none."""
    text = (f"cell C(x : [X]) -> s : [H] {{\n    param W : [H + X, H]\n    state s : [H] = 0.5\n    {body}\n}}\n"
            "model M {\n    input x : seq[float, 4]\n    target y : [3]\n    loss = mse(last(C(x, 3)), y)\n}\n")
    model = checked_model(text)
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True, seed=1)
    for switch in PATHS.values():
        net = compiled_matches_reference(model, inputs, lengths, switch)
    assert check_model(net, inputs, lengths).ok(1e-6)


def test_the_gradient_check_passes_a_parameter_the_loss_is_blind_to(tmp_path, capsys):
    """A shift of every logit does not change a cross-entropy, so its gradient is 0 and its
    central differences are rounding noise: ``seqgraph check`` called that a failed gradient
    (relative error 3.7e-05, "no single node"), as did the generated programs' check."""
    path = tmp_path / "shift.sg"
    path.write_text("model Shift(hidden = 5) {\n    param shift : [] = 0.5\n    input  x : seq[float, 3]\n"
                    "    target y : seq[int, 4]\n    h = lstm(x, hidden)\n"
                    "    loss = cross_entropy(dense(h, 4) + shift, y)\n}\n")
    assert cli.main(["check", str(path)]) == 0
    report = capsys.readouterr().out.splitlines()[-1]
    assert report.startswith("gradient check (float64, batch 2, 3 steps): worst relative error ")
    assert float(report.split("error ")[1].split()[0]) < 1e-6
    model = sg.load(path).model()
    net = sg.compile(model, dtype="float64")
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True, seed=1)
    net.forward(inputs, lengths)
    assert abs(float(net.backward()["shift"])) < 1e-15
    assert check_model(net, inputs, lengths).ok(1e-6)


def test_a_product_of_a_parameter_joined_to_an_input():
    """``W @ concat(p, x)`` (p a parameter) made compiling fail with a KeyError: split in two,
    the parameter's half is a bias to the input's, and folding that pair into one affine op
    removed a node the pass was still to visit."""
    text = ("cell C(x : [X]) -> s : [H] {\n    param p : [H]\n    param W : [H, H + X]\n    state s : [H] = 0.5\n"
            "    s = tanh(W @ concat(p, x)) * s[t-1]\n}\n"
            "model M {\n    input x : seq[float, 4]\n    target y : [3]\n    loss = mse(last(C(x, 3)), y)\n}\n")
    model = checked_model(text)
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True, seed=1)
    for switch in PATHS.values():
        net = compiled_matches_reference(model, inputs, lengths, switch)
    assert "affine" in {data.op for _, data in nodes_of(net.program.graph)}
    assert check_model(net, inputs, lengths).ok(1e-6)


@pytest.mark.parametrize("switch", sorted(PATHS.values()))
def test_two_states_that_hold_the_same_value(switch):
    """``s = s[t-1] + mean(c[t-1]); c = s`` gave wrong gradients (W's off by 77): both states'
    values were one node, and the scan, which finds a state's previous value from its value
    node, kept only one of the two."""
    text = ("cell C(x : [X]) -> s : [H] {\n    state s : [H] = 0.25\n    state c : [H] = -1\n"
            "    s = s[t-1] + mean(c[t-1]) * tanh(s[t-1])\n    c = s\n}\n"
            "model M {\n    param W : [7, 3]\n    input x : seq[float, 4]\n    target y : seq[float, 3]\n"
            "    loss = mse(slice(W @ C(x, 3), 0, 3), y)\n}\n")
    model = checked_model(text)
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True, seed=1)
    net = compiled_matches_reference(model, inputs, lengths, switch)
    assert check_model(net, inputs, lengths).ok(1e-6)


@pytest.mark.parametrize("layers", [1, 2])
def test_a_cell_output_that_is_a_slice_read_by_another_state(layers):
    """``s = slice(W @ concat(x, c[t-1]), H, 2*H)``, an output that another state also reads,
    gave wrong gradients on NumPy (W's off by 0.56): the add reading it was given the
    slice's place in the backward loop as if it were the slice's only cotangent, and wrote
    over the output's own."""
    text = ("cell C(x : [X]) -> s : [H] {\n    param W : [2*H, H + X]\n    param U : [H, H]\n"
            "    state s : [H] = 0.5\n    state a : [H] = -1\n    state c : [H] = 0.25\n"
            "    s = slice(W @ concat(x, c[t-1]), H, 2*H)\n    a = tanh(s + a[t-1])\n"
            "    c = tanh(U @ c[t-1] + a)\n}\n"
            f"model M {{\n    input x : seq[float, 4]\n    target y : seq[float, 3]\n"
            f"    loss = mse(C(x, 3, layers = {layers}), y)\n}}\n")
    model = checked_model(text)
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True, seed=1)
    for switch in PATHS.values():
        net = compiled_matches_reference(model, inputs, lengths, switch)
    assert check_model(net, inputs, lengths).ok(1e-6)


A_SLICE_OF_A_SLICE_READ_BY_A_PRODUCT = """
cell C(x : [X]) -> s : [H] {
    param W : [2*H, H + X]
    param V : [2*H, H]
    param U : [H, H]
    param P : [2*H, X]
    state s : [H] = 0.5
    state a : [H] = -1
    state c : [H] = 0.25
    s = slice((W @ concat(x, c[t-1])) * tanh(V @ c[t-1]), H, 2*H)
    a = tanh(s + a[t-1])
    c = (U @ (c[t-1] * c[t-1]) + sum(dense(a, H))) * dense(slice(P @ x, 0, H), H)
}
model M {
    input x : seq[float, 4]
    target y : seq[float, 3]
    loss = mse(C(x, 3), y)
}
"""

SMALLEST_SLICE_OF_A_SLICE = """
cell C(x : [X]) -> c : [H] {
    param A : [2*H, H]
    param B : [H, H]
    param P : [2*H, X]
    param Q : [H, X]
    state c : [H] = 0.25
    c = (slice(A @ c[t-1], 0, H) + Q @ x) * tanh(B @ c[t-1]) * dense(slice(P @ x, 0, H), H)
}
model M {
    input x : seq[float, 4]
    target y : seq[float, 3]
    loss = mse(C(x, 3), y)
}
"""


@pytest.mark.parametrize("text", [A_SLICE_OF_A_SLICE_READ_BY_A_PRODUCT, SMALLEST_SLICE_OF_A_SLICE],
                         ids=["generated", "smallest"])
def test_a_slice_of_a_merged_product_read_through_another_slice(text):
    """``dense(slice(P @ x, 0, H), H)`` beside another product of ``x`` got a wrong weight
    gradient (0 instead of 0.12, or off by 0.002) on every path: merged with it, ``P @ x`` is a
    slice of one wide product, so the dense reads a slice of a slice; the compiler, which
    looked one slice deep, took the wide product's forward values for dead and let the scan
    write a cotangent of the same width over them before the dense's gradient read them."""
    model = checked_model(text)
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True, seed=1)
    for switch in PATHS.values():
        net = compiled_matches_reference(model, inputs, lengths, switch)
    result = check_model(net, inputs, lengths)
    assert result.ok(1e-6), f"{result.worst_name} is off central differences by {result.worst_error:.3g}"


@pytest.mark.parametrize("switch", sorted(PATHS.values()))
def test_two_delay_lines_of_one_state(switch):
    """``a = c[t-1]; b = c[t-1]`` computed a wrong loss (off by 3): common-subexpression
    elimination merged the two states' values into one node, which the scan then carried as
    one state."""
    text = ("cell C(x : [X]) -> c : [H] {\n    param V : [H, X]\n    state a : [H] = 0.25\n"
            "    state b : [H] = 0.5\n    state c : [H] = -1\n    a = c[t-1]\n    b = c[t-1]\n"
            "    c = tanh(a - b[t-1] + a[t-1] + V @ x)\n}\n"
            "model M {\n    input x : seq[float, 4]\n    target y : seq[float, 3]\n    loss = mse(C(x, 3), y)\n}\n")
    model = checked_model(text)
    inputs, lengths = random_inputs(model, batch=3, steps=5, ragged=True, seed=1)
    net = compiled_matches_reference(model, inputs, lengths, switch)
    V = net.params["C_0.V"]
    a, b, c, expected = 0.25, 0.5, -1.0, []
    for t in range(5):
        a, b, c = c, c, np.tanh(c - b + a + inputs["x"][t] @ V.T)
        expected.append(c)
    valid = (np.arange(5)[:, None] < lengths["time"][None, :])[..., None]
    loss = (((np.stack(expected) - inputs["y"]) * valid) ** 2).sum() / (valid.sum() * 3)
    np.testing.assert_allclose(net.forward(inputs, lengths)["loss"], loss, rtol=1e-12)
