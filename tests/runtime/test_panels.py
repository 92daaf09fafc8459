"""seqgraph's own AVX-512 kernel for a step's float32 product: the same numbers as NumPy's
product for every shape a step loop hands it, the choice of kernel per CPU and its
override, and native step loops that run it."""

import numpy as np
import pytest

from seqgraph.backends import mkl, native, panels

from .conftest import assert_same_gradients, float32_gradients_by_choice, lstm_language_model

needs_kernel = pytest.mark.skipif(mkl.library() is None or panels.kernel() is None,
                                  reason="needs MKL and a CPU with AVX-512 (and a C compiler)")

AMD = {"vendor": "AuthenticAMD", "family": "25", "model": "17", "name": "AMD EPYC",
       "flags": "fpu sse2 avx2 fma avx512f avx512bw"}


@needs_kernel
@pytest.mark.parametrize("rows, inner, cols", [(32, 256, 1024), (16, 128, 512), (1, 3, 1), (21, 300, 37),
                                               (21, 300, 36), (40, 513, 64), (7, 16, 17)])
def test_panels_give_numpy_s_product_for_every_shape(rows, inner, cols, monkeypatch):
    monkeypatch.setenv("SEQGRAPH_STEP_PRODUCTS", "avx512")
    xp = mkl.products(True)
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((inner, cols)).astype(np.float32)
    state = rng.standard_normal((rows, inner)).astype(np.float32)
    packed = xp.pack(weight, rows)
    assert type(packed) is panels.Panels and packed.shape == (inner, cols)
    expected = state.astype(np.float64) @ weight.astype(np.float64)
    wide = np.full((rows, cols + 6), np.nan, dtype=np.float32)
    xp.dot(state, packed, wide[:, 3:3 + cols])  # into a column slice, nothing else touched
    np.testing.assert_allclose(wide[:, 3:3 + cols], expected, rtol=1e-4, atol=1e-4 * np.sqrt(inner))
    assert np.isnan(wide[:, :3]).all() and np.isnan(wide[:, 3 + cols:]).all()
    np.testing.assert_allclose(xp.dot(np.asfortranarray(state), packed), expected, rtol=1e-4,
                               atol=1e-4 * np.sqrt(inner))  # a transposed left operand, read where it lies


@needs_kernel
@pytest.mark.parametrize("cols", [40, 36])  # a last panel of 8 columns, and of 4 (run as columns)
def test_the_kernel_adds_into_its_output_with_beta_one(cols):
    rng = np.random.default_rng(1)
    weight, state = rng.standard_normal((300, cols)).astype(np.float32), rng.standard_normal((18, 300)).astype(np.float32)
    packed = panels.Panels(weight.T.copy().T, 18)  # a weight laid out by columns packs alike
    out = rng.standard_normal((18, cols)).astype(np.float32)
    expected = out + state.astype(np.float64) @ weight
    panels.kernel()(101, 111, 151, 18, cols, 300, state.ctypes.data, 300, packed.address, cols, 1.0, out.ctypes.data,
                    cols)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=2e-3)


@needs_kernel
@pytest.mark.parametrize("rows, inner, cols", [(1024, 2048, 65), (300, 600, 65), (21, 300, 37), (40, 513, 4),
                                               (16, 16, 20), (7, 16, 17), (1, 3, 1)])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_a_transposed_left_operand_is_read_where_it_lies(rows, inner, cols, beta):
    """A weight gradient's g.T: a (rows, inner) view of an (inner, rows + 3) array, its
    row step the kernel's leading dimension; every remainder of rows (16 at a time), of
    columns (4 or fewer run as columns) and of depth (256 at a time)."""
    rng = np.random.default_rng(rows + cols)
    stored = rng.standard_normal((inner, rows + 3)).astype(np.float32)
    left = stored[:, 1:1 + rows].T
    weight = rng.standard_normal((inner, cols)).astype(np.float32)
    out = rng.standard_normal((rows, cols)).astype(np.float32)
    expected = beta * out + left.astype(np.float64) @ weight
    packed = panels.Panels(weight, rows)
    panels.kernel()(101, 112, 151, rows, cols, inner, left.ctypes.data, rows + 3, packed.address, cols, beta,
                    out.ctypes.data, cols)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4 * np.sqrt(inner))


@needs_kernel
def test_a_packing_reuses_a_buffer_large_enough():
    rng = np.random.default_rng(2)
    first, second = rng.standard_normal((2, 16, 40)).astype(np.float32)
    old = panels.Panels(first, 4)
    new = panels.Panels(second, 4, reuse=old.buffer)
    state = rng.standard_normal((4, 16)).astype(np.float32)
    assert new.buffer is old.buffer
    np.testing.assert_allclose(new.product(state), state @ second, rtol=1e-5, atol=1e-5)
    assert panels.Panels(rng.standard_normal((64, 64)).astype(np.float32), 4, reuse=old.buffer).buffer is not old.buffer


@pytest.mark.parametrize("identity, expected", [
    ({**AMD, "vendor": "GenuineIntel", "name": "Intel(R) Xeon(R) Processor"}, "mkl"),  # MKL measured fastest
    (AMD, "avx512"),
    ({**AMD, "flags": "fpu sse2 avx2 fma"}, "mkl"),  # no AVX-512: no kernel to run
    ({**AMD, "vendor": "HygonGenuine"}, "avx512"),
])
def test_the_table_keeps_mkl_on_intel_and_takes_the_kernel_on_other_avx512_cpus(identity, expected):
    assert panels.table_choice(identity) == expected


def test_the_environment_overrides_the_table_where_the_kernel_is_built(monkeypatch):
    monkeypatch.setattr(native, "cpu_identity", lambda: AMD)
    monkeypatch.setenv("SEQGRAPH_STEP_PRODUCTS", "mkl")
    assert panels.choice() == "mkl"
    monkeypatch.setenv("SEQGRAPH_STEP_PRODUCTS", "avx512")
    assert panels.choice() == ("avx512" if panels.kernel() is not None else "mkl")
    monkeypatch.setattr(panels, "kernel", lambda: None)  # asked for, but not built here
    assert panels.choice() == "mkl"
    monkeypatch.setenv("SEQGRAPH_STEP_PRODUCTS", "nonsense")  # not a choice: the table's
    monkeypatch.setattr(native, "cpu_identity", lambda: {**AMD, "vendor": "GenuineIntel"})
    assert panels.choice() == "mkl"


@needs_kernel
def test_a_float32_lstm_step_loop_on_the_kernel_gives_mkl_s_numbers(monkeypatch):
    monkeypatch.setenv("SEQGRAPH_NATIVE", "1")
    from seqgraph.backends import native_loop
    runs = []
    run = native_loop.NativeLoop.run
    monkeypatch.setattr(native_loop.NativeLoop, "run", lambda self, steps, arrays: runs.append(
        (self.products.step_products(), run(self, steps, arrays))) or runs[-1][1])
    grads = float32_gradients_by_choice(monkeypatch, lstm_language_model(hidden=40, inputs=12, classes=7),
                                        "SEQGRAPH_STEP_PRODUCTS", ("avx512", "mkl"), 3)
    assert runs == [("avx512", True)] * 2 + [("mkl", True)] * 2  # forward and backward, natively
    assert_same_gradients(grads["avx512"], grads["mkl"])


@needs_kernel
def test_a_loop_refuses_a_weight_packed_for_the_other_routine(monkeypatch):
    from seqgraph.backends import native_loop
    from seqgraph.step_program import Buffer, Loop, View, ufunc
    from seqgraph.ops.kernels import Call
    monkeypatch.setenv("SEQGRAPH_NATIVE", "1")
    source = Loop("scan_forward", (), (View("h", "S0", 0), View("h1", "S0", 1), ufunc(Call("dot", ("h", "w"), "h1"))),
                  False, {"S0": Buffer("S0", "S", 0, (5,)), "w": Buffer("w", "w", None, (5, 5))})
    monkeypatch.setenv("SEQGRAPH_STEP_PRODUCTS", "mkl")
    xp = mkl.products(True)
    states = np.zeros((4, 3, 5), dtype=np.float32)
    states[0] = 1
    foreign = panels.Panels(np.eye(5, dtype=np.float32), 3)
    loop = native_loop.compile_loop(source, xp)
    assert not loop.run(3, {"S0": states, "w": foreign}) and not states[1:].any()
    assert loop.run(3, {"S0": states, "w": xp.pack(np.eye(5, dtype=np.float32), 3)})
    np.testing.assert_array_equal(states[3], 1)
