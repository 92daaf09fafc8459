"""The compiled program: it does not grow with the number of steps, a step never calls back
into the registry for the built-in and user cells, a user cell compiles like the built-in
one, and reused buffers never leak into what a caller holds."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.compiler import Scan, _consumed_inputs
from seqgraph.ir import node_of

from .conftest import ROOT, USER_LSTM, compare_with_reference, language_model


def _scans(net):
    return [item for item in net.program.schedule if isinstance(item, Scan)]


def _run_training_step(net, steps, batch=2, seed=0):
    rng = np.random.default_rng(seed)
    inputs = {"x": rng.normal(size=(steps, batch, 5)), "y": rng.integers(0, 7, size=(steps, batch))}
    net.forward(inputs)
    return net.backward()


@pytest.mark.parametrize("cell, extra", [("lstm", ""), ("gru", ""), ("GateLSTM", USER_LSTM)])
def test_program_for_1000_steps_is_the_program_for_10(cell, extra):
    net = sg.compile(language_model(cell, extra=extra), dtype="float32")
    stats = []
    for steps in (10, 1000):
        _run_training_step(net, steps)
        stats.append(net.program.stats())
        stats[-1]["backward_lines"] = sum(len(s.code._backward) for s in _scans(net))
    assert stats[0] == stats[1]
    assert stats[0]["kernel_calls"] > 10


@pytest.mark.parametrize("cell, extra", [("lstm", ""), ("gru", ""), ("rnn", ""), ("GateLSTM", USER_LSTM),
                                         ("PeepholeLSTM", (ROOT / "models" / "peephole.sg").read_text()
                                          .split("model PeepholeLM")[0])])
def test_step_loops_are_straight_ufunc_calls(cell, extra):
    net = sg.compile(language_model(cell, extra=extra), dtype="float64")
    net.program.fuse_chains = False  # the loops where no chain kernel can be compiled
    _run_training_step(net, 3)
    for scan in _scans(net):
        sources = [scan.code.forward_source] + [v[2] for v in scan.code._backward.values()]
        for source in sources:
            loop = source.split("for t in range", 1)[1]
            assert " F" not in loop and " V" not in loop, source  # no fallback to the registry
            assert "empty" not in loop and "zeros" not in loop


def _loop_calls(net):
    (scan,) = _scans(net)
    forward = scan.code.forward_source.split("for t in range", 1)[1]
    (backward,) = [v[2] for v in scan.code._backward.values()]
    backward = backward.split("for t in range", 1)[1]
    return [sum(1 for line in body.splitlines() if "(" in line) for body in (forward, backward)]


def test_a_user_written_lstm_compiles_to_the_built_in_step_loop():
    builtin = sg.compile(language_model("lstm"), dtype="float64")
    user = sg.compile(language_model("GateLSTM", extra=USER_LSTM), dtype="float64")
    for net in (builtin, user):
        _run_training_step(net, 3)
    forward, backward = _loop_calls(user)
    assert forward == _loop_calls(builtin)[0]
    assert backward <= _loop_calls(builtin)[1] + 2
    products = [line for line in _scans(user)[0].code.forward_source.splitlines() if "dot(" in line]
    assert len(products) == 1


def test_held_outputs_and_gradients_are_not_overwritten_by_the_next_run():
    model = sg.parse("model M { input x : seq[float, 3]  h = lstm(x, 4)  output h }").model()
    net = sg.compile(model, dtype="float64")
    rng = np.random.default_rng(3)
    first_x, second_x = rng.normal(size=(5, 2, 3)), rng.normal(size=(5, 2, 3))
    first = net.forward({"x": first_x})["h"]
    kept = first.copy()
    grads = net.backward({"h": np.ones_like(first)})
    kept_grads = {k: v.copy() for k, v in grads.items()}
    net.forward({"x": second_x})
    net.backward({"h": np.ones_like(first)})
    np.testing.assert_array_equal(first, kept)
    for key in grads:
        np.testing.assert_array_equal(grads[key], kept_grads[key])


def test_float32_and_a_changing_batch_and_length_keep_the_numbers():
    net = sg.compile(language_model("GateLSTM", extra=USER_LSTM), dtype="float64", seed=2)
    for batch, steps in ((3, 4), (2, 6), (3, 4)):
        compare_with_reference(net, batch=batch, steps=steps, seed=batch + steps)
    net32 = sg.compile(language_model("lstm"), dtype="float32", seed=2)
    reference = sg.compile(language_model("lstm"), dtype="float64", seed=2)
    rng = np.random.default_rng(4)
    inputs = {"x": rng.normal(size=(6, 3, 5)), "y": rng.integers(0, 7, size=(6, 3))}
    loss32 = net32.forward(inputs)["loss"]
    assert loss32.dtype == np.float32
    assert float(loss32) == pytest.approx(float(reference.forward(inputs)["loss"]), rel=1e-5)
    grads32, grads64 = net32.backward(), reference.backward()
    for key in grads64:
        if key != "x":
            np.testing.assert_allclose(grads32[key], grads64[key], rtol=1e-3, atol=1e-5)


def test_a_gru_keeps_only_what_its_backward_reads():
    net = sg.compile(language_model("gru", hidden=6), dtype="float64", seed=3)
    _run_training_step(net, 4)
    (scan,) = _scans(net)
    code = scan.code
    kept_widths = sorted(code.data[n].shape[-1] for n in code.kept
                         if n not in code.state_of and n not in code.views)
    assert kept_widths == [6, 6, 6, 12]  # h, tanh(n), the copied h_n columns, [r; z]
    assert code.recomputed == {"gru_0/sub"}  # 1 - z, from z
    (layout,) = [v[0] for v in code._backward.values()]
    assert sorted(code.data[r].shape[-1] for r in layout.full) == [6, 18]
    compare_with_reference(net)


def test_backward_for_some_names_only_matches_the_full_backward():
    net = sg.compile(language_model("GateLSTM", extra=USER_LSTM), dtype="float64", seed=6)
    rng = np.random.default_rng(7)
    inputs = {"x": rng.normal(size=(4, 3, 5)), "y": rng.integers(0, 7, size=(4, 3))}
    net.forward(inputs)
    full = {k: v.copy() for k, v in net.backward().items()}
    params = net.backward(wrt=list(net.params))
    assert set(params) == set(net.params) and "x" not in params
    for key, value in params.items():
        np.testing.assert_allclose(value, full[key], rtol=0, atol=1e-13, err_msg=key)
    only_x = net.backward(wrt=["x"])
    assert set(only_x) == {"x"}
    np.testing.assert_allclose(only_x["x"], full["x"], rtol=0, atol=1e-13)
    with pytest.raises(sg.SeqgraphError, match="no parameter or float input 'dense_9.weight'"):
        net.backward(wrt=["dense_9.weight"])


def test_a_spent_input_projection_holds_its_own_gradient():
    net = sg.compile(language_model("gru", hidden=6), dtype="float64", seed=8)
    assert net.program.spent == {"gru_0/add"}  # W_ih x + b_ih, read only through gate slices
    assert not sg.compile(language_model("lstm"), dtype="float64").program.spent
    rng = np.random.default_rng(9)
    inputs = {"x": rng.normal(size=(5, 2, 5)), "y": rng.integers(0, 7, size=(5, 2))}
    net.forward(inputs)
    projection = net.value("gru_0/add")
    before = projection.copy()
    grads = net.program.backward(np, net._run, {net.model.outputs["loss"]: np.ones(())})
    assert grads["gru_0/add"] is projection and not np.array_equal(projection, before)
    # the loop's 3H-wide cotangent over time lived there too before the gradient took its place
    (scan,) = _scans(net)
    assert sorted(scan.cache.buffers["backward"][1]) == ["C0", "G11"]
    compare_with_reference(net)


def test_reading_a_value_whose_buffer_backward_reused_is_an_error():
    net = sg.compile(language_model("gru", hidden=6), dtype="float64", seed=8)
    rng = np.random.default_rng(9)
    net.forward({"x": rng.normal(size=(5, 2, 5)), "y": rng.integers(0, 7, size=(5, 2))})
    before = net.value("gru_0/add").copy()
    net.backward()
    with pytest.raises(sg.SeqgraphError, match="backward\\(\\) reused the buffer of 'gru_0/add'"):
        net.value("gru_0/add")
    net.forward({"x": rng.normal(size=(5, 2, 5)), "y": rng.integers(0, 7, size=(5, 2))})
    assert net.value("gru_0/add").shape == before.shape


def test_a_recurrence_accumulates_into_an_input_projection_only_it_reads():
    net = sg.compile(language_model("lstm"), dtype="float64", seed=8)
    (scan,) = _scans(net)
    projection = "lstm_0/add.2/grouped"  # W_ih x + b, read only by the core's add
    assert scan.code.hosted == {"lstm_0/add.2": projection}
    members = set(scan.code.order)
    assert not _consumed_inputs(net.program.graph, members, {projection})  # one a caller keeps
    rng = np.random.default_rng(9)
    net.forward({"x": rng.normal(size=(5, 2, 5)), "y": rng.integers(0, 7, size=(5, 2))})
    with pytest.raises(sg.SeqgraphError, match="does not keep the value of 'lstm_0/add.2/grouped'"):
        net.value(projection)
    held = net._run.consumed[projection]
    grads = net.program.backward(np, net._run, {net.model.outputs["loss"]: np.ones(())})
    assert grads[projection] is held  # the gates' cotangents over all steps live there too
    assert not [name for name in scan.cache.buffers["backward"][1] if name.startswith("G")]
    compare_with_reference(net)


def test_columns_of_a_spent_value_no_slice_reads_get_a_zero_gradient():
    model = sg.parse("""
    model M {
        input  x : seq[float, 4]
        target y : seq[float, 2]
        doubled = x + x
        loss = mse(slice(doubled, 1, 3) + 0.5, y)
    }""").model()
    net = sg.compile(model, dtype="float64", seed=2)
    spent = [n for n in net.program.spent if node_of(net.program.graph, n).op == "add"]
    assert len(spent) == 1  # x + x, read only through its slice
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(3, 2, 4)), rng.normal(size=(3, 2, 2))
    net.forward({"x": x, "y": y})
    gx = net.backward()["x"]
    expected = np.zeros_like(x)
    expected[..., 1:3] = 2 * 2 * (2 * x[..., 1:3] + 0.5 - y) / y.size  # d mse, twice through x + x
    np.testing.assert_allclose(gx, expected, rtol=1e-12, atol=1e-15)
    compare_with_reference(net)
