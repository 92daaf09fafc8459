"""The products batched over time by NumPy's OpenBLAS (or the panel kernel, for wide float32
ones), shared out on MKL's threads: the same numbers as NumPy's product for every layout,
shape and way of cutting it into shares, the choice per CPU and its override, and a
training step that runs them."""

from pathlib import Path

import numpy as np
import pytest

from seqgraph.backends import mkl, native, openblas, panels

from .conftest import assert_same_gradients, float32_gradients_by_choice, lstm_language_model
from .test_mkl import LAYOUTS, _matrix

needs_openblas = pytest.mark.skipif(mkl.library() is None or not openblas.usable(),
                                    reason="needs MKL, NumPy's ILP64 OpenBLAS and a C compiler")

needs_panels = pytest.mark.skipif(mkl.library() is None or not openblas.usable() or panels.kernel() is None,
                                  reason="needs MKL, NumPy's ILP64 OpenBLAS and the AVX-512 panel kernel")

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


@pytest.mark.parametrize("rows, cols, layout, expected", [
    (2048, 1024, (111, 65), True),  # an input projection
    (64, 128, (111, 300), True),
    (2048, 65, (111, 256), False),  # an output layer: too few columns for whole panels
    (16, 1024, (111, 65), False),  # too few rows to pay for the copy
    (1024, 65, (112, 1024), True),  # a weight gradient g.T @ x: an input projection's, with its bias
    (1024, 256, (112, 1024), True),  # and a recurrent weight's
    (65, 256, (112, 65), False),  # an output layer's: too few rows
    (1024, 32, (112, 1024), False),  # too few columns
])
def test_wide_products_of_many_rows_go_to_the_panel_kernel(rows, cols, layout, expected):
    assert openblas.by_panels(rows, cols, layout) == expected


@needs_panels
@pytest.mark.parametrize("left", ["c", "columns", "strided rows", "transposed"])
@pytest.mark.parametrize("rows, inner, cols, by_rows, transposed", [
    (64, 65, 128, True, False), (100, 300, 130, True, False), (2048, 65, 1024, True, True),
    (300, 600, 65, False, True),  # a weight gradient's shape: 65 columns, the last one run as a column
])
def test_a_wide_float32_product_runs_on_the_panel_kernel_with_numpy_s_numbers(xp, monkeypatch, left, rows,
                                                                             inner, cols, by_rows, transposed):
    monkeypatch.setattr(xp, "_step_products", "avx512")  # the panel kernel's CPUs
    calls = []
    original = openblas.panel_product
    monkeypatch.setattr(openblas, "panel_product", lambda a, *rest: calls.append(a.shape) or original(a, *rest))
    rng = np.random.default_rng(rows)
    a, b = _matrix(rng, (rows, inner), np.float32, left), _matrix(rng, (inner, cols), np.float32, "transposed")
    wide = np.full((rows, cols + 7), np.nan, dtype=np.float32)
    xp.matmul(a, b, out=wide[:, 4:4 + cols])
    assert calls == ([(rows, inner)] if (transposed if left == "transposed" else by_rows) else [])
    np.testing.assert_allclose(wide[:, 4:4 + cols], a.astype(np.float64) @ b.astype(np.float64),
                               rtol=1e-5, atol=1e-5 * np.sqrt(inner))
    assert np.isnan(wide[:, :4]).all() and np.isnan(wide[:, 4 + cols:]).all()


@needs_panels
@pytest.mark.parametrize("parts", [1, 2, 3, 7])
@pytest.mark.parametrize("left", ["strided rows", "transposed"])
def test_every_cut_of_a_panel_product_into_shares_gives_the_whole(parts, left):
    """Shares run one after another (no thread pool); blocks of rows of any size, 10 rows
    each at 7 parts (the kernel takes 16 rows at a time)."""
    rng = np.random.default_rng(parts)
    a = _matrix(rng, (70, 33), np.float32, left)
    w = rng.standard_normal((33, 150)).astype(np.float32)
    out = np.full((70, 150), np.nan, dtype=np.float32)
    asked = []
    openblas.panel_product(a, mkl.matrix_layout(a), panels.Panels(w, 70), out,
                           lambda wanted: asked.append(wanted) or (parts, 0))
    np.testing.assert_allclose(out, a.astype(np.float64) @ w, rtol=1e-5, atol=1e-4)
    assert asked == [1]  # 346,500 multiply-adds: not worth a second thread


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
    calls = []
    for name in ("product", "panel_product"):  # OpenBLAS, and the panel kernel for the wide ones
        original = getattr(openblas, name)
        monkeypatch.setattr(openblas, name, lambda a, *rest, run=original: calls.append(a.shape) or run(a, *rest))

    def check_calls(batched):
        if batched == "openblas":
            assert (180, 13) in calls and len(calls) >= 4  # the input projection (and a bias column), and more
            calls.clear()
    grads = float32_gradients_by_choice(monkeypatch, lstm_language_model(hidden=40, inputs=12, classes=7),
                                        "SEQGRAPH_BATCHED_PRODUCTS", ("openblas", "mkl"), 3, check_calls)
    assert calls == []
    assert_same_gradients(grads["openblas"], grads["mkl"])


@needs_panels
def test_weight_gradients_on_the_panel_kernel_give_mkl_s_numbers(monkeypatch):
    """Hidden 64 and 63 inputs: both weights' gradients (256 rows, 64 columns with the bias
    column) are transposed products the panel kernel takes."""
    monkeypatch.setenv("SEQGRAPH_STEP_PRODUCTS", "avx512")
    transposed = []
    original = openblas.panel_product
    monkeypatch.setattr(openblas, "panel_product", lambda a, layout, *rest: (
        layout[0] == openblas.TRANSPOSE and transposed.append(a.shape)) or original(a, layout, *rest))
    grads = float32_gradients_by_choice(monkeypatch, lstm_language_model(hidden=64, inputs=63, classes=7),
                                        "SEQGRAPH_BATCHED_PRODUCTS", ("openblas", "mkl"), 4)
    assert transposed == [(256, 180), (256, 180)]  # the recurrent weight's, then the input weight's
    assert_same_gradients(grads["openblas"], grads["mkl"])
