"""The products batched over time by NumPy's OpenBLAS, shared out on MKL's threads: the same
numbers as NumPy's product for every layout, shape and way of cutting it into shares, the
choice per CPU and its override, and a training step that runs them."""

from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.backends import mkl, native, openblas
from seqgraph.backends.numpy_backend import NumpyBackend
from seqgraph.gradcheck import random_inputs

from .conftest import lstm_language_model
from .test_mkl import LAYOUTS, _matrix

needs_openblas = pytest.mark.skipif(mkl.library() is None or not openblas.usable(),
                                    reason="needs MKL, NumPy's ILP64 OpenBLAS and a C compiler")

AMD = {"vendor": "AuthenticAMD", "family": "25", "model": "17", "name": "AMD EPYC", "flags": "avx2 avx512f"}


@pytest.fixture
def xp(monkeypatch):
    monkeypatch.setenv("SEQGRAPH_BATCHED_PRODUCTS", "openblas")
    products = mkl.products(True)
    assert products.batched_products() == "openblas"
    return products


@needs_openblas
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 1e-5)])
@pytest.mark.parametrize("left", LAYOUTS)
@pytest.mark.parametrize("right", LAYOUTS)
@pytest.mark.parametrize("rows, inner, cols", [(7, 5, 3), (2, 9, 300), (1, 1, 1)])
def test_product_equals_numpy_for_every_layout(xp, dtype, tolerance, left, right, rows, inner, cols):
    rng = np.random.default_rng(0)
    a, b = _matrix(rng, (rows, inner), dtype, left), _matrix(rng, (inner, cols), dtype, right)
    expected = a.astype(np.float64) @ b.astype(np.float64)
    wide = np.full((rows, cols + 7), np.nan, dtype=dtype)
    assert xp.dot(a, b, out=wide[:, 4:4 + cols]) is not None  # into a column slice, nothing else touched
    np.testing.assert_allclose(wide[:, 4:4 + cols], expected, rtol=tolerance, atol=tolerance * np.sqrt(inner))
    assert np.isnan(wide[:, :4]).all() and np.isnan(wide[:, 4 + cols:]).all()
    assert xp.matmul(a, b).dtype == dtype


@needs_openblas
@pytest.mark.parametrize("parts", [1, 2, 3, 7])
@pytest.mark.parametrize("rows, cols", [(40, 9), (9, 40), (5, 5)])
@pytest.mark.parametrize("left, right", [("c", "c"), ("transposed", "transposed"), ("columns", "strided rows")])
def test_every_way_of_cutting_a_product_into_shares_gives_the_whole(parts, rows, cols, left, right):
    """Shares run one after another here (no thread pool), so each block's offsets are
    checked alone; more rows than columns cut by rows, else by columns."""
    rng = np.random.default_rng(parts)
    a, b = _matrix(rng, (rows, 6), np.float64, left), _matrix(rng, (6, cols), np.float64, right)
    out = np.full((rows, cols), np.nan)
    asked = []
    openblas.product(a, mkl.matrix_layout(a), b, mkl.matrix_layout(b), out,
                     lambda wanted: asked.append(wanted) or (parts, 0))
    np.testing.assert_allclose(out, a @ b, rtol=1e-12, atol=1e-12)
    assert asked == [1]  # 240 multiply-adds: not worth a second thread


@needs_openblas
def test_a_large_product_asks_for_a_share_a_thread_could_take():
    a, b = np.ones((2048, 65)), np.ones((65, 1024))
    asked = []
    openblas.product(a, mkl.matrix_layout(a), b, mkl.matrix_layout(b), np.empty((2048, 1024)),
                     lambda wanted: asked.append(wanted) or (1, 0))
    assert asked == [2048 * 65 * 1024 // openblas.SHARE_WORK]


def test_numpy_s_library_is_found_beside_numpy_even_after_another_openblas():
    folder = str(Path(np.__file__).resolve().parent.parent / "numpy.libs")
    maps = ("7f00-7f10 r-xp 00000000 fe:00 1 /site-packages/scipy.libs/libscipy_openblas-1.so\n"
            f"7f20-7f30 r-xp 00000000 fe:00 2 {folder}/libscipy_openblas64_-2.so\n"
            "7f40-7f50 rw-p 00000000 00:00 0\n")
    assert openblas.numpy_library_path(maps) == f"{folder}/libscipy_openblas64_-2.so"
    assert openblas.numpy_library_path(maps.splitlines()[0]) is None


@pytest.mark.parametrize("identity, expected", [
    (AMD, "openblas"),
    ({**AMD, "vendor": "GenuineIntel", "name": "Intel(R) Xeon(R)"}, "mkl"),  # MKL's own kernels there
    ({**AMD, "vendor": "HygonGenuine"}, "mkl"),  # not measured
])
def test_the_table_takes_openblas_on_amd_only(identity, expected):
    assert openblas.table_choice(identity) == expected


def test_the_environment_overrides_the_table_where_openblas_is_usable(monkeypatch):
    monkeypatch.setattr(native, "cpu_identity", lambda: AMD)
    monkeypatch.setenv("SEQGRAPH_BATCHED_PRODUCTS", "mkl")
    assert openblas.choice() == "mkl"
    monkeypatch.setenv("SEQGRAPH_BATCHED_PRODUCTS", "openblas")
    assert openblas.choice() == ("openblas" if openblas.usable() else "mkl")
    monkeypatch.setenv("SEQGRAPH_BATCHED_PRODUCTS", "nonsense")  # not a choice: the table's
    monkeypatch.setattr(openblas, "usable", lambda: True)
    assert openblas.choice() == "openblas"
    monkeypatch.setattr(openblas, "usable", lambda: False)  # asked for, but not there
    assert openblas.choice() == "mkl"


@needs_openblas
def test_a_float32_lstm_training_step_gives_mkl_s_numbers(monkeypatch):
    model = lstm_language_model(hidden=40, inputs=12, classes=7)
    inputs, lengths = random_inputs(model, batch=20, steps=9, seed=3)
    inputs = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in inputs.items()}
    calls = []
    product = openblas.product
    monkeypatch.setattr(openblas, "product", lambda a, *rest: calls.append(a.shape) or product(a, *rest))
    grads = {}
    for batched in ("openblas", "mkl"):
        monkeypatch.setenv("SEQGRAPH_BATCHED_PRODUCTS", batched)
        net = sg.compile(model, backend=NumpyBackend(mkl=True), dtype="float32", seed=2)
        net.forward(inputs, lengths)
        grads[batched] = net.backward()
        if batched == "openblas":
            assert (180, 13) in calls and len(calls) >= 4  # the input projection (and a bias column), and more
            calls.clear()
    assert calls == []
    for key in grads["mkl"]:
        np.testing.assert_allclose(grads["openblas"][key], grads["mkl"][key], rtol=1e-4, atol=1e-6, err_msg=key)
