"""Scan loops run as one native call: the tape a loop translates to, the same numbers as the
Python loops for every example model, and arrays the tape cannot read left to Python."""

import ctypes.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.backends import mkl, native, native_loop
from seqgraph.backends.numpy_backend import NumpyBackend
from seqgraph.compiler import Scan
from seqgraph.step_program import Buffer, Instruction, Loop, View, python_source, ufunc
from seqgraph.gradcheck import random_inputs
from seqgraph.ops.kernels import Call

from .conftest import example_models

pytestmark = pytest.mark.skipif(native.compiler() is None or mkl.library() is None,
                                reason="native loops need a C compiler and MKL")


def _loop(name, prelude, body, buffers, reverse=False) -> Loop:
    return Loop(name, tuple(prelude), tuple(body), reverse, {n: Buffer(n, n[0], None, ()) for n in buffers})


# h[t+1] = h[t] @ W + x[t], then y[t] = h[t+1] * x[t], as the compiler makes loops
def _forward(last=(View("h", "S0", 1), ufunc(Call("add", ("v2", "x"), "h")),
                   ufunc(Call("multiply", ("h", "x"), "v1")))) -> Loop:
    return _loop("scan_forward", [View("v2", "b0")],
                 [View("v0", "S0", 0), View("x", "X_x", 0), View("v1", "K1", 0),
                  ufunc(Call("dot", ("v0", "wt_w"), "v2")), *last], ["K1", "S0", "X_x", "b0", "wt_w"])


LOOP = _forward()


@pytest.fixture(autouse=True)
def native_loops_on(monkeypatch):
    """These tests are about the native loops, whatever SEQGRAPH_NATIVE says outside."""
    monkeypatch.setenv("SEQGRAPH_NATIVE", "1")


def _loop_arrays(xp, steps=5, batch=3, width=4, seed=0):
    rng = np.random.default_rng(seed)
    states = np.zeros((steps + 1, batch, width))
    states[0] = rng.normal(size=(batch, width))
    weight = rng.normal(size=(width, width)) / width
    return {"S0": states, "K1": np.zeros((steps, batch, width)), "X_x": rng.normal(size=(steps, batch, width)),
            "b0": np.zeros((batch, width)), "wt_w": xp.pack(weight, batch)}, weight


def _python_loop(arrays: dict, weight) -> dict:
    """The same loop run by Python, on copies (the weight unpacked)."""
    namespace = {"dot": np.dot, "add": np.add, "multiply": np.multiply}
    exec(python_source(LOOP), namespace)
    copies = {k: np.array(v) for k, v in arrays.items() if k != "wt_w"}
    namespace["scan_forward"](len(copies["X_x"]), copies["K1"], copies["S0"], copies["X_x"], copies["b0"], weight)
    return copies


def test_a_loop_lowers_to_blocks_that_move_by_step():
    tape = native_loop.lower(LOOP)
    state, moved = native_loop.Block("S0", 0), native_loop.Block("S0", 1)
    assert tape.prelude == [] and not tape.reverse
    assert tape.body == [("product", state, "wt_w", native_loop.Block("b0"), False),
                         ("add", native_loop.Block("b0"), native_loop.Block("X_x", 0), moved),
                         ("multiply", moved, native_loop.Block("X_x", 0), native_loop.Block("K1", 0))]


def test_a_product_added_into_a_row_it_alone_reads_accumulates_there():
    source = _forward((ufunc(Call("add", ("v2", "x"), "x")), ufunc(Call("multiply", ("x", "x"), "v1"))))
    tape = native_loop.lower(source)
    row = native_loop.Block("X_x", 0)
    assert tape.body == [("product", native_loop.Block("S0", 0), "wt_w", row, True),
                         ("multiply", row, row, native_loop.Block("K1", 0))]
    xp = NumpyBackend(mkl=True).xp
    arrays, weight = _loop_arrays(xp)
    namespace = {"dot": np.dot, "add": np.add, "multiply": np.multiply}
    exec(python_source(source), namespace)
    expected = {k: np.array(v) for k, v in arrays.items() if k != "wt_w"}
    namespace["scan_forward"](5, expected["K1"], expected["S0"], expected["X_x"], expected["b0"], weight)
    assert native_loop.compile_loop(source, xp).run(5, arrays)
    for name in ("K1", "X_x"):
        np.testing.assert_allclose(arrays[name], expected[name], rtol=1e-13, atol=1e-14, err_msg=name)


def test_column_slices_and_backward_loops_lower():
    tape = native_loop.lower(_loop("scan_backward", [View("g0", "C0"), Instruction("zero", ("g0",))],
                                   [View("g3", "G3", 0), View("g4", "g3", columns=(2, 6)),
                                    View("g5", "g4", columns=(1, 3)), ufunc(Call("copyto", ("g5",), "g0"))],
                                   ["G3", "C0", "b1"], reverse=True))
    assert tape.reverse
    assert tape.prelude == [("zero", native_loop.Block("C0"))]
    assert tape.body == [("copy", native_loop.Block("C0"), native_loop.Block("G3", 0, 3, 5))]


@pytest.mark.parametrize("instruction", [
    ufunc(Call("exp", ("v0",), "v1")), ufunc(Call("add", ("v0", 1.0), "v1")),
    Instruction("function", ("v1",), ("v0",), function="F2"), Instruction("place", ("v0",), ("v1",), "add",
                                                                          columns=(0, 2, -1))])
def test_an_instruction_the_tape_has_none_for_is_untranslatable(instruction):
    with pytest.raises(native_loop.Untranslatable):
        native_loop.lower(_loop("scan_forward", [View("v0", "b0"), View("v1", "b1")], [instruction], ["b0", "b1"]))


def test_the_native_loop_computes_what_the_python_loop_does():
    xp = NumpyBackend(mkl=True).xp
    arrays, weight = _loop_arrays(xp)
    expected = _python_loop(arrays, weight)
    loop = native_loop.compile_loop(LOOP, xp)
    assert loop.run(5, arrays)
    for name in ("S0", "K1", "b0"):
        np.testing.assert_allclose(arrays[name], expected[name], rtol=1e-13, atol=1e-14, err_msg=name)
    assert np.abs(arrays["K1"]).min() > 0


@pytest.mark.parametrize("why", ["strided columns", "read-only output", "float32 beside float64",
                                 "too few steps stored", "weight packed for other rows"])
def test_arrays_the_tape_cannot_read_are_left_to_python_untouched(why):
    xp = NumpyBackend(mkl=True).xp
    arrays, weight = _loop_arrays(xp)
    if why == "strided columns":
        arrays["X_x"] = np.repeat(arrays["X_x"], 2, axis=2)[:, :, ::2]
    elif why == "read-only output":
        arrays["K1"].flags.writeable = False
    elif why == "float32 beside float64":
        arrays["X_x"] = arrays["X_x"].astype(np.float32)
    elif why == "too few steps stored":
        arrays["S0"] = arrays["S0"][:-1]
    else:
        arrays["wt_w"] = xp.pack(weight, 4)
    before = {k: np.array(v) for k, v in arrays.items() if k != "wt_w"}
    assert not native_loop.compile_loop(LOOP, xp).run(5, arrays)
    for name, value in before.items():
        np.testing.assert_array_equal(arrays[name], value, err_msg=name)


@pytest.mark.parametrize("batch, threads, parts", [(25, 3, 3), (25, 8, 3), (20, 4, 2), (15, 4, 1)])
def test_rows_shared_among_threads_give_the_same_numbers(batch, threads, parts, monkeypatch):
    xp = NumpyBackend(mkl=True).xp
    if xp.threading_addresses() is None:
        pytest.skip("MKL runs on no OpenMP runtime here")
    monkeypatch.setattr(mkl.Products, "threads", lambda self: threads)
    arrays, weight = _loop_arrays(xp, steps=6, batch=batch, width=5, seed=1)
    expected = _python_loop(arrays, weight)
    loop = native_loop.compile_loop(LOOP, xp)
    assert xp.shares(batch, native_loop.SHARE_ROWS)[0] == parts
    assert loop.run(6, arrays)
    for name in ("S0", "K1", "b0"):
        np.testing.assert_allclose(arrays[name], expected[name], rtol=1e-13, atol=1e-14, err_msg=name)


# libgomp loaded first, as `import torch` loads it: MKL then runs on its GNU threading layer,
# and the loops' rows must be shared on libgomp's threads, not on a second pool of its own
GNU_RUNTIME = """
import ctypes, os, sys
ctypes.CDLL(sys.argv[1], mode=os.RTLD_GLOBAL)
import numpy as np
import seqgraph as sg
from seqgraph.backends import mkl
from seqgraph.backends.numpy_backend import NumpyBackend
from seqgraph.gradcheck import random_inputs
mkl.Products.threads = lambda self: 2
model = sg.load(sys.argv[2]).model()
inputs, lengths = random_inputs(model, batch=16, steps=5, seed=3)
grads = []
for native_loops in (True, False):
    net = sg.compile(model, backend=NumpyBackend(mkl=True), dtype="float64", seed=4)
    net.program.native_loops = native_loops
    net.forward(inputs, lengths)
    grads.append(net.backward())
fork = NumpyBackend(mkl=True).xp.threading_addresses()[0]
print(fork == ctypes.cast(ctypes.CDLL(sys.argv[1]).GOMP_parallel, ctypes.c_void_p).value)
print(max(float(np.abs(grads[0][k] - grads[1][k]).max()) for k in grads[0]))
"""


@pytest.mark.skipif(ctypes.util.find_library("gomp") is None, reason="no GNU OpenMP runtime")
def test_rows_are_shared_on_gnu_openmp_when_mkl_runs_on_it():
    model = Path(__file__).resolve().parents[2] / "models" / "lstm_adding.sg"
    done = subprocess.run([sys.executable, "-c", GNU_RUNTIME, ctypes.util.find_library("gomp"), str(model)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    same_runtime, difference = done.stdout.split()
    assert same_runtime == "True"
    assert float(difference) < 1e-12


def test_only_loops_whose_every_write_has_the_batch_rows_are_shared():
    def table(*rows):
        return np.array([(0, 0, r, 4, 4) for r in rows], dtype=np.int64)
    assert native_loop._shared_rows(table(32, 1, 32), written=[0, 2]) == 32  # one row read by all
    assert native_loop._shared_rows(table(32, 1), written=[0, 1]) == 0       # one row written
    assert native_loop._shared_rows(table(32, 16), written=[0]) == 0         # other rows read


def test_no_native_loop_without_mkl_products():
    assert native_loop.compile_loop(LOOP, np) is None


def _runs(monkeypatch) -> list:
    """Whether each native loop run from now on took its arrays."""
    taken = []
    run = native_loop.NativeLoop.run
    monkeypatch.setattr(native_loop.NativeLoop, "run",
                        lambda self, steps, arrays: taken.append(run(self, steps, arrays)) or taken[-1])
    return taken


@pytest.mark.parametrize("batch", [3, 16])
@pytest.mark.parametrize("path, name", example_models())
def test_every_example_gives_the_python_loops_numbers(path, name, batch, monkeypatch):
    """Batch 16 on two threads: each loop's rows shared out in two halves."""
    monkeypatch.setattr(mkl.Products, "threads", lambda self: 2)
    model = sg.load(path).models[name]
    inputs, lengths = random_inputs(model, batch=batch, steps=5, ragged=True, seed=3)
    taken = _runs(monkeypatch)
    results = []
    for native_loops in (True, False):
        net = sg.compile(model, backend=NumpyBackend(mkl=True), dtype="float64", seed=4)
        net.program.native_loops = native_loops
        outputs = net.forward(inputs, lengths)
        grads = net.backward() if model.checked.loss is not None else {}
        results.append({**{k: np.asarray(v) for k, v in outputs.items()}, **grads})
    for key in results[1]:
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-12, atol=1e-13, err_msg=key)
    if path.stem in PYTHON_LOOPS:
        assert not any(taken)
        return
    assert all(taken)  # every other recurrent example's loops run natively
    assert bool(taken) == any(isinstance(item, Scan) for item in net.program.schedule)


# examples whose recurrent cells hold an op the native loop does not know (layer_norm is a
# generic op's callable), so their loops run in Python
PYTHON_LOOPS = {"ln_lstm"}
