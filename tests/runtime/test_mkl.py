"""Matrix products through MKL: every layout MKL takes equals NumPy's product, everything
else falls back to NumPy, and whole models give the same numbers with and without MKL."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.backends import mkl
from seqgraph.backends.numpy_backend import NumpyBackend
from seqgraph.errors import SeqgraphError
from seqgraph.gradcheck import random_inputs

from .conftest import example_models, lstm_language_model

needs_mkl = pytest.mark.skipif(mkl.library() is None, reason="MKL (the mkl package) is not installed")


@pytest.fixture
def xp(monkeypatch):
    """MKL's products, its own packing for float32 too (on CPUs where seqgraph's kernel
    would be chosen: see test_panels.py), and its own products where OpenBLAS's would be
    (test_openblas.py)."""
    monkeypatch.setenv("SEQGRAPH_STEP_PRODUCTS", "mkl")
    monkeypatch.setenv("SEQGRAPH_BATCHED_PRODUCTS", "mkl")
    return mkl.products(True)


def _matrix(rng, shape, dtype, layout):
    """A (rows, cols) matrix laid out as asked: C order, a transposed view, rows of a wider
    array (a column slice), or every other row."""
    rows, cols = shape
    if layout == "c":
        return rng.standard_normal(shape).astype(dtype)
    if layout == "transposed":
        return rng.standard_normal((cols, rows)).astype(dtype).T
    if layout == "columns":
        return rng.standard_normal((rows, cols + 5)).astype(dtype)[:, 2:2 + cols]
    return rng.standard_normal((2 * rows, cols)).astype(dtype)[::2]


LAYOUTS = ["c", "transposed", "columns", "strided rows"]


@needs_mkl
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("left", LAYOUTS)
@pytest.mark.parametrize("right", LAYOUTS)
def test_product_equals_numpy_for_every_layout(xp, dtype, tolerance, left, right):
    rng = np.random.default_rng(0)
    a, b = _matrix(rng, (7, 5), dtype, left), _matrix(rng, (5, 3), dtype, right)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    got = xp.matmul(a, b)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=tolerance)
    wide = np.full((7, 9), np.nan, dtype=dtype)
    xp.dot(a, b, out=wide[:, 4:7])  # written into a column slice, nothing else touched
    np.testing.assert_allclose(wide[:, 4:7], expected, rtol=tolerance, atol=tolerance)
    assert np.isnan(wide[:, :4]).all() and np.isnan(wide[:, 7:]).all()


@needs_mkl
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_a_narrow_weight_gradient_run_as_its_transpose_equals_numpy(xp, dtype, tolerance):
    rng = np.random.default_rng(5)
    g, x = rng.standard_normal((6, 13)).astype(dtype), rng.standard_normal((6, 3)).astype(dtype)
    expected = g.T.astype(np.float64) @ x.astype(np.float64)  # (13, 3): 4 * 3 < 13 rows
    np.testing.assert_allclose(xp.matmul(g.T, x), expected, rtol=tolerance, atol=tolerance)
    wide = np.full((13, 7), np.nan, dtype=dtype)
    xp.matmul(g.T, x, out=wide[:, 2:5])
    np.testing.assert_allclose(wide[:, 2:5], expected, rtol=tolerance, atol=tolerance)
    assert np.isnan(wide[:, :2]).all() and np.isnan(wide[:, 5:]).all()


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layout", ["c", "transposed"])
def test_packed_weight_gives_the_product_at_every_step(xp, dtype, layout):
    rng = np.random.default_rng(1)
    weight = _matrix(rng, (6, 8), dtype, layout)
    packed = xp.pack(weight, rows=4)
    assert type(packed) is mkl.Packed and packed.shape == (6, 8)
    buffer = np.zeros((3, 4, 12), dtype=dtype)
    for step in range(3):
        state = rng.standard_normal((4, 6)).astype(dtype)
        xp.dot(state, packed, buffer[step][:, 2:10])
        np.testing.assert_allclose(buffer[step][:, 2:10], state @ weight, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"packed for \(4, 6\)"):
        xp.matmul(np.zeros((5, 6), dtype=dtype), packed)


@needs_mkl
def test_a_packing_reuses_a_buffer_large_enough_and_gives_the_new_weight_s_products(xp):
    rng = np.random.default_rng(2)
    first, second = rng.standard_normal((2, 16, 24))
    old = xp.pack(first, rows=4)
    new = xp.pack(second, rows=4, reuse=old.buffer)
    assert new.buffer is old.buffer
    state = rng.standard_normal((4, 16))
    np.testing.assert_allclose(xp.dot(state, new), state @ second, rtol=1e-12)
    larger = xp.pack(rng.standard_normal((256, 1024)), rows=4, reuse=old.buffer)  # MKL asks for more
    assert larger.buffer is not old.buffer and larger.buffer.size > old.buffer.size


@needs_mkl
def test_what_mkl_cannot_take_is_numpy_s_product(xp):
    rng = np.random.default_rng(2)
    cases = [(np.arange(6).reshape(2, 3), np.arange(12).reshape(3, 4)),         # integers
             (rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5))),     # a stack
             (rng.standard_normal(3), rng.standard_normal(3)),                  # vectors
             (rng.standard_normal((3, 4))[::-1], rng.standard_normal((4, 2))),  # negative strides
             (np.broadcast_to(rng.standard_normal(4), (3, 4)), rng.standard_normal((4, 2))),
             (rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal((4, 2))),
             (np.zeros((0, 4)), np.zeros((4, 2)))]
    for a, b in cases:
        np.testing.assert_allclose(xp.matmul(a, b), np.matmul(a, b), rtol=1e-12)
    overlap = rng.standard_normal((4, 4))
    expected = overlap @ overlap
    xp.matmul(overlap, overlap, out=overlap)  # NumPy copies for an output that is an input
    np.testing.assert_allclose(overlap, expected, rtol=1e-12)
    assert type(xp.pack(np.arange(4.0), rows=2)) is np.ndarray


def test_turned_off_or_missing_means_numpy(monkeypatch):
    monkeypatch.setenv("SEQGRAPH_MKL", "0")
    assert mkl.products() is None and NumpyBackend().xp is np and NumpyBackend().products == "NumPy"
    monkeypatch.setattr(mkl, "library", lambda: None)
    monkeypatch.delenv("SEQGRAPH_MKL")
    assert NumpyBackend().xp is np
    with pytest.raises(SeqgraphError, match="MKL is not installed"):
        NumpyBackend(mkl=True)


@needs_mkl
@pytest.mark.parametrize("path, name", example_models())
def test_every_example_gives_the_same_numbers_with_and_without_mkl(path, name):
    model = sg.load(path).models[name]
    inputs, lengths = random_inputs(model, batch=3, steps=5, ragged=True, seed=4)
    results = []
    for backend in (NumpyBackend(mkl=True), NumpyBackend(mkl=False)):
        net = sg.compile(model, backend=backend, dtype="float64", seed=6)
        outputs = net.forward(inputs, lengths)
        grads = net.backward() if model.checked.loss is not None else {}
        results.append({**{k: np.asarray(v) for k, v in outputs.items()}, **grads})
    assert results[0].keys() == results[1].keys()
    for key in results[0]:
        np.testing.assert_allclose(results[0][key], results[1][key], rtol=1e-12, atol=1e-13, err_msg=key)


@needs_mkl
@pytest.mark.parametrize("step_products", ["mkl", "avx512"])
def test_float32_lstm_training_step_with_packed_weights_matches_numpy(step_products, monkeypatch):
    from seqgraph.backends import panels
    if step_products == "avx512" and panels.kernel() is None:
        pytest.skip("seqgraph's AVX-512 kernel is not built on this CPU")
    monkeypatch.setenv("SEQGRAPH_STEP_PRODUCTS", step_products)
    calls = []
    product = mkl.PackedWeight.product
    kind = {"mkl": mkl.Packed, "avx512": panels.Panels}[step_products]
    monkeypatch.setattr(mkl.PackedWeight, "product",
                        lambda self, a, out=None: calls.append((type(self), a.shape)) or product(self, a, out))
    model = lstm_language_model(hidden=48, inputs=16, classes=10)
    inputs, lengths = random_inputs(model, batch=8, steps=12, seed=1)
    grads = []
    for backend in (NumpyBackend(mkl=True), NumpyBackend(mkl=False)):
        net = sg.compile(model, backend=backend, dtype="float32", seed=2)
        net.program.native_loops = False  # the Python loops, whose product calls are counted
        net.forward({k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in inputs.items()}, lengths)
        grads.append(net.backward())
    assert calls == [(kind, (8, 48))] * 12 + [(kind, (8, 192))] * 12  # h @ W_hh.T forward, g @ W_hh back
    for key in grads[0]:
        np.testing.assert_allclose(grads[0][key], grads[1][key], rtol=2e-4, atol=1e-6, err_msg=key)
