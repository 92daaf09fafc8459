"""Native loops for fused chains: every call the example models make gives what the chain's
formulas give evaluated with NumPy, and arrays the loops cannot read as laid out are refused
before anything is written."""

import platform
from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.backends import chains, native
from seqgraph.compiler import Scan
from seqgraph.gradcheck import random_inputs
from seqgraph.ops.formula import evaluate

from .conftest import MODELS

pytestmark = pytest.mark.skipif(native.compiler() is None, reason="no C compiler for native loops")


@pytest.fixture(autouse=True)
def native_loops_on(monkeypatch):
    """These tests are about the native loops, whatever SEQGRAPH_NATIVE says outside."""
    monkeypatch.setenv("SEQGRAPH_NATIVE", "1")


def _record_calls(monkeypatch):
    """Every native call made from now on: (kernel, inputs, outputs as written)."""
    calls = []
    run = native.NativeKernel.run

    def recording(self, arrays, out):
        before = [np.array(a) for a in arrays]  # an output may be one of the inputs
        done = run(self, arrays, out)
        if done:
            calls.append((self, before, [np.array(o) for o in out]))
        return done

    monkeypatch.setattr(native.NativeKernel, "run", recording)
    return calls


def _chain_kernels(net) -> dict:
    """NativeKernel -> (the formulas it was made from, the names of what it reads), for
    every chain kernel ``net`` made."""
    found = {}
    for item in net.program.schedule:
        if isinstance(item, Scan):
            for kernel in item.code._chain_kernels.values():
                chain_kernel = kernel.__self__
                for direction, made in chain_kernel._native.items():
                    found[made] = (chain_kernel._trees[direction], chain_kernel.sources[direction].inputs)
    return found


@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-13), ("float32", 2e-6)])
@pytest.mark.parametrize("path", MODELS, ids=lambda p: p.stem)
def test_every_native_call_of_an_example_equals_its_formulas(path, dtype, tolerance, monkeypatch):
    calls = _record_calls(monkeypatch)
    checked = 0
    for model in sg.load(path).models.values():
        net = sg.compile(model, dtype=dtype, seed=1)
        net.program.native_loops = False  # each chain called from Python, where it is recorded
        inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True, seed=2)
        inputs = {k: v.astype(dtype) if v.dtype.kind == "f" else v for k, v in inputs.items()}
        net.forward(inputs, lengths)
        if model.checked.loss is not None:
            net.backward()
        formulas = _chain_kernels(net)
        for kernel, arrays, written in calls:
            trees, names = formulas[kernel]
            values = dict(zip(names, arrays, strict=True))
            for tree, got in zip(trees, written, strict=True):
                expected = np.broadcast_to(evaluate(tree, values, np), got.shape)
                np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)
                checked += 1
        calls.clear()
    if path.stem in ("char_lstm", "gru_tagger", "peephole"):
        assert checked > 0


CELL = """
cell Cell(x : [X]) -> h : [H] {
    param W : [H, H]
    param U : [H, X]
    param p : [H]
    state h : [H] = 0
    h = tanh(W @ h[t-1] + U @ x) * sigmoid(p * h[t-1])
}
model M() {
    input x : seq[float, 3]
    target y : seq[float, 4]
    loss = mse(Cell(x, 4), y)
}
"""


def _forward_kernel():
    net = sg.compile(sg.parse(CELL).model(), dtype="float64")
    code = next(item.code for item in net.program.schedule if isinstance(item, Scan))
    chain = max(code.fusible_chains(), key=lambda c: len(c.nodes))
    kernel = chains.ChainKernel(chain, np)
    return kernel, len(chain.inputs), len(chain.outputs)


def test_arrays_the_loops_cannot_read_are_refused_untouched():
    kernel, inputs, outputs = _forward_kernel()
    run = kernel._native["forward"].run
    rng = np.random.default_rng(0)
    good = [rng.normal(size=(5, 4)) for _ in range(inputs)]
    out = [np.zeros((5, 4)) for _ in range(outputs)]
    assert run(good, out)
    expected = [o.copy() for o in out]
    np.testing.assert_allclose(kernel.forward(*good), expected, rtol=1e-13)
    fresh = [np.full((5, 4), 7.0) for _ in range(outputs)]
    refused = {
        "a float32 input": [good[0].astype(np.float32)] + good[1:],
        "a stack": [np.stack([good[0]] * 2)] + good[1:],
        "a column broadcast": [good[0][:, :1]] + good[1:],
        "a strided column": [np.repeat(good[0], 2, axis=1)[:, ::2]] + good[1:],
        "a list": [good[0].tolist()] + good[1:],
        "a subclass": [good[0].view(np.matrix)] + good[1:],
    }
    for why, arrays in refused.items():
        assert not run(arrays, fresh), why
    read_only = [o.copy() for o in fresh]
    read_only[0].flags.writeable = False
    assert not run(good, read_only)
    assert not run(good, [np.zeros((5, 5))] + fresh[1:])
    assert all((o == 7.0).all() for o in fresh)
    # what the loops can read: a row repeated for every row, and rows of a wider array
    wide = np.zeros((5, 9))
    wide[:, 2:6] = good[0]
    assert run([wide[:, 2:6]] + good[1:], fresh)
    np.testing.assert_allclose(fresh, expected, rtol=1e-13)
    assert run([np.array(good[0][1, 2])] + good[1:], fresh)  # one value, for every element
    np.testing.assert_allclose(fresh[0], kernel.forward(*([np.full((5, 4), good[0][1, 2])] + good[1:]))[0],
                               rtol=1e-13)
    assert run([good[0][:1]] + good[1:], fresh) and run([good[0][0]] + good[1:], fresh)
    np.testing.assert_allclose(fresh[0], kernel.forward(*([np.broadcast_to(good[0][0], (5, 4))] + good[1:]))[0],
                               rtol=1e-13)


def test_turned_off_the_formulas_run_as_numpy_calls(monkeypatch):
    monkeypatch.setenv("SEQGRAPH_NATIVE", "0")
    kernel, _, _ = _forward_kernel()
    assert kernel._native == {} and not native.usable(np)


def test_a_library_is_built_once_and_then_found_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQGRAPH_CACHE", str(tmp_path))
    native._cache_folder.cache_clear()
    try:
        first = native._build(native.PREAMBLE + "int sg_one(void) { return 1; }\n", native.compiler())
        assert first.parent == tmp_path / "native" and first.exists()
        stamp = first.stat().st_mtime_ns
        again = native._build(native.PREAMBLE + "int sg_one(void) { return 1; }\n", native.compiler())
        assert again == first and again.stat().st_mtime_ns == stamp
        assert [p.name for p in (tmp_path / "native").iterdir()] == [first.name]  # no work folders left
    finally:
        native._cache_folder.cache_clear()



INTEL = {"vendor": "GenuineIntel", "family": "6", "model": "143", "name": "Intel(R) Xeon(R) Processor",
         "flags": "fpu sse2 avx2 avx512f amx_tile"}


def test_a_cache_shared_between_hosts_keeps_a_library_per_cpu_and_loads_only_this_one_s(tmp_path, monkeypatch):
    """Home directories shared on a cluster: a host of another CPU finds another library's
    name, and a library under this CPU's name written for another CPU is built again."""
    monkeypatch.setenv("SEQGRAPH_CACHE", str(tmp_path))
    native._cache_folder.cache_clear()
    text = native.PREAMBLE + "int sg_one(void) { return 1; }\n"
    try:
        here = native._build(text, native.compiler())
        assert native.built_for(here) == native.cpu_key()
        with monkeypatch.context() as other_host:
            other_host.setattr(native, "cpu_identity", lambda: INTEL)
            other_host.setattr(native, "cpu_key", lambda: "f" * 16)
            there = native._build(text, native.compiler())
            assert there != here and native.built_for(there) == "f" * 16
        assert native._build(text, native.compiler()) == here
        here.write_bytes(there.read_bytes())  # a foreign library under this CPU's name
        assert native.built_for(here) == "f" * 16
        assert native._build(text, native.compiler()) == here and native.built_for(here) == native.cpu_key()
    finally:
        native._cache_folder.cache_clear()


def test_the_cpu_identity_reads_vendor_model_and_flags():
    identity = native.cpu_identity()
    assert set(identity) == {"vendor", "family", "model", "name", "flags"}
    if Path("/proc/cpuinfo").exists() and platform.machine() == "x86_64":
        assert identity["vendor"] in Path("/proc/cpuinfo").read_text() and "sse2" in identity["flags"].split()
    assert len(native.cpu_key()) == 16

def _namespace(shared: bool, monkeypatch):
    """NumPy, or NumPy with MKL's products whose three threads share out every 4 rows of an
    op's native loop."""
    if not shared:
        return np
    from seqgraph.backends import mkl
    from seqgraph.backends.numpy_backend import NumpyBackend
    if mkl.library() is None:
        pytest.skip("no MKL")
    xp = NumpyBackend(mkl=True).xp
    if xp.threading_addresses() is None:
        pytest.skip("MKL runs on no OpenMP runtime here")
    monkeypatch.setattr(mkl.Products, "threads", lambda self: 3)
    monkeypatch.setattr(native, "SHARE_ROWS", 4)
    return xp


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-13), (np.float32, 1e-6)])
def test_cross_entropy_rows_natively_equal_numpy(dtype, tolerance, shared, monkeypatch):
    from seqgraph.backends import native_ops, ops_for
    xp = _namespace(shared, monkeypatch)
    assert native.shares(xp, 24, native.SHARE_ROWS)[0] == (3 if shared else 1)
    op = ops_for(xp)["cross_entropy"]
    rng = np.random.default_rng(3)
    logits = (rng.normal(size=(6, 4, 11)) * 5).astype(dtype)
    target = rng.integers(0, 11, size=(6, 4))
    assert native_ops.native_rows(xp, logits, target, None) is not None
    lengths = np.array([6, 3, 0, 5])  # padding rows, inf in one of them, are never read
    padded = logits.copy()
    padded[4, 1] = np.inf
    assert native_ops.native_rows(xp, padded, target, lengths) is not None
    got = (op.forward(xp, logits, target), op.vjp(xp, dtype(0.7), None, logits, target)[0],
           op.forward(xp, padded, target, lengths), op.vjp(xp, dtype(0.7), None, padded, target, lengths)[0])
    with_nan = logits.copy()
    with_nan[2, 1, 5] = np.nan
    nan_loss = op.forward(xp, with_nan, target)
    nan_grad = op.vjp(xp, dtype(1), None, with_nan, target)[0]
    monkeypatch.setenv("SEQGRAPH_NATIVE", "0")
    assert native_ops.native_rows(xp, logits, target, None) is None
    expected = (op.forward(xp, logits, target), op.vjp(xp, dtype(0.7), None, logits, target)[0],
                op.forward(xp, padded, target, lengths), op.vjp(xp, dtype(0.7), None, padded, target, lengths)[0])
    assert (got[3][4, 1] == 0).all() and (got[3][:, 2] == 0).all()
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype == dtype
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)
    assert np.isnan(nan_loss) and np.isnan(nan_grad[2, 1]).all() and not np.isnan(nan_grad[0]).any()
    monkeypatch.delenv("SEQGRAPH_NATIVE")
    strided = np.repeat(logits, 2, axis=-1)[..., ::2]
    outside = target.copy()
    outside[0, 0] = 11
    assert native_ops.native_rows(xp, strided, target, None) is None  # not contiguous: NumPy's rows
    with pytest.raises(IndexError):  # the loops stop at it, and NumPy's indexing reports it
        op.forward(xp, logits, outside)


def test_a_loop_that_does_not_build_warns_and_numpy_runs_the_chain(monkeypatch):
    def failing(text, cc):
        raise native.subprocess.CalledProcessError(1, [cc], stderr=b"kernel.c:3: error: no luck\n")
    monkeypatch.setattr(native, "_build", failing)
    with pytest.warns(RuntimeWarning, match="did not build .kernel.c:3: error: no luck.; NumPy runs it"):
        kernel, inputs, outputs = _forward_kernel()
    assert kernel._native == {}
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=(5, 4)) for _ in range(inputs)]
    out = [np.zeros((5, 4)) for _ in range(outputs)]
    kernel.forward(*arrays, out=out)
    expected = [evaluate(t, dict(zip(kernel.sources["forward"].inputs, arrays)), np)
                for t in kernel._trees["forward"]]
    np.testing.assert_allclose(out, np.broadcast_arrays(*expected, out[0])[:-1], rtol=1e-13)


@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-13), (np.float32, 1e-6)])
def test_a_weight_broadcast_over_steps_gets_its_gradient_in_one_native_pass(dtype, tolerance, shared,
                                                                           monkeypatch):
    from seqgraph.backends import native_ops, ops_for
    xp = _namespace(shared, monkeypatch)
    assert native.shares(xp, 15, native.SHARE_ROWS)[0] == (3 if shared else 1)
    mul = ops_for(xp)["mul"]
    rng = np.random.default_rng(4)
    weight = rng.normal(size=7).astype(dtype)
    state = rng.normal(size=(5, 3, 7)).astype(dtype)
    wide = rng.normal(size=(5, 3, 20)).astype(dtype)
    cotangents = {"contiguous": rng.normal(size=(5, 3, 7)).astype(dtype),
                  "a column slice": wide[..., 4:11],            # as a gate's cotangent is
                  "repeated rows": np.broadcast_to(wide[0, 0, :7], (5, 3, 7))}
    exact = {why: (g.astype(np.float64) * state).sum(axis=(0, 1)) for why, g in cotangents.items()}
    assert native_ops.row_dots(xp, cotangents["a column slice"], state, (7,)) is not None
    for why, g in cotangents.items():
        got_weight, got_state = mul.vjp(xp, g, None, weight, state)
        assert got_weight.dtype == dtype and got_weight.shape == (7,)
        np.testing.assert_allclose(got_weight, exact[why], rtol=tolerance, atol=tolerance, err_msg=why)
        np.testing.assert_allclose(got_state, g * weight, rtol=tolerance, err_msg=why)
    assert native_ops.row_dots(xp, wide[::-1, :, :7], state, (7,)) is None  # backwards rows: NumPy
    monkeypatch.setenv("SEQGRAPH_NATIVE", "0")
    assert native_ops.row_dots(xp, cotangents["contiguous"], state, (7,)) is None
    np.testing.assert_allclose(mul.vjp(xp, cotangents["contiguous"], None, weight, state)[0],
                               exact["contiguous"], rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("asked, usable, expected", [
    ("", True, "fast"),  # the table's choice
    ("", False, "plain"),  # the table's choice, not usable here: the fallback
    ("plain", True, "plain"),  # the environment overrides the table
    (" FAST ", False, "plain"),  # asked for, but not usable
    ("other", True, "fast"),  # a name not among the choices: the table
])
def test_a_library_chosen_per_cpu_takes_the_override_then_the_table_then_the_fallback(monkeypatch, asked, usable,
                                                                                      expected):
    monkeypatch.setenv("SEQGRAPH_TEST_LIBRARY", asked)
    seen = []
    chosen = native.chosen_library("SEQGRAPH_TEST_LIBRARY", ("plain", "fast"),
                                   lambda identity: seen.append(identity) or "fast", lambda: usable)
    assert chosen == expected
    assert seen == ([] if asked.strip().lower() in ("plain", "fast") else [native.cpu_identity()])
