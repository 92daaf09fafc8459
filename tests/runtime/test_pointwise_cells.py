"""The elementwise ops stated by formulas (seqgraph.ops.pointwise) inside a recurrent cell:
the compiled program (fused chains run as native C loops, or as the formulas' ufunc calls
with native loops off, or unfused) gives the reference executor's outputs and gradients to
1e-12 in float64."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.backends import native
from seqgraph.compiler import Scan
from seqgraph.gradcheck import check_model, random_inputs, reference_differences
from seqgraph.ir import node_of

EVERY_OP = """
cell EveryOp(x : [X]) -> h : [H] {
    param W : [H, X + H]
    param b : [H] = 0
    state h : [H] = 0
    z = W @ concat(x, h[t-1]) + b
    a = gelu(z) + gelu(z, approximate = tanh) + softplus(z, beta = 2) + leaky_relu(z, negative_slope = 0.2)
    c = clamp(a, min = -1, max = 1.5) + hardtanh(z, min_val = -0.5, max_val = 0.5)
    d = sqrt(abs(z) + 1) * pow(abs(z) + 0.5, 1.5) - pow(sigmoid(z), h[t-1])
    e = where(z > h[t-1], min(c, d), a * 0.5) + (z <= 0) * c - (z >= 0.1) + (z < 0.2) * (z != 0) + (z == 0)
    h = tanh(e)
}

model EveryOpModel() {
    input x : seq[float, 3]
    target y : seq[float, 5]
    h = EveryOp(x, 5)
    loss = mse(h, y)
}
"""

PATHS = [pytest.param(True, True, id="native"), pytest.param(True, False, id="ufuncs"),
         pytest.param(False, False, id="unfused")]


@pytest.mark.parametrize("fused, native_loops", PATHS)
def test_cell_of_every_new_op_matches_the_reference(fused, native_loops, monkeypatch):
    if native_loops and native.compiler() is None:
        pytest.skip("no C compiler for native loops")
    monkeypatch.setenv("SEQGRAPH_NATIVE", "1" if native_loops else "0")
    model = sg.parse(EVERY_OP).model()
    net = sg.compile(model, dtype="float64", seed=3)
    net.program.fuse_chains = fused
    inputs, lengths = random_inputs(model, batch=3, steps=5, ragged=True, seed=4)
    differences = reference_differences(net, inputs, lengths)
    assert "EveryOp_0.W" in differences and max(differences.values()) < 1e-12, differences
    scans = [item.code for item in net.program.schedule if isinstance(item, Scan)]
    chained = {node for code in scans for chain in code.fusible_chains() for node in chain.nodes}
    ops = {node_of(model.graph, node).op for node in chained}
    assert {"gelu", "softplus", "where", "minimum", "pow", "clamp", "greater"} <= ops


def test_cell_of_every_new_op_passes_a_gradient_check():
    model = sg.parse(EVERY_OP).model()
    net = sg.compile(model, dtype="float64", seed=3)
    inputs, lengths = random_inputs(model, batch=2, steps=4, ragged=True, seed=5)
    result = check_model(net, inputs, lengths)
    assert result.worst_error < 1e-7, (result.worst_name, result.worst_error)


def test_native_chain_of_the_new_ops_is_what_its_formulas_give(monkeypatch):
    if native.compiler() is None:
        pytest.skip("no C compiler for native loops")
    monkeypatch.setenv("SEQGRAPH_NATIVE", "1")
    model = sg.parse(EVERY_OP).model()
    compiled = {dtype: sg.compile(model, dtype=dtype, seed=3) for dtype in ("float64", "float32")}
    inputs, lengths = random_inputs(model, batch=3, steps=5, ragged=True, seed=4)
    want = compiled["float64"].forward(inputs, lengths)["loss"]
    got = compiled["float32"].forward({k: v.astype(np.float32) if v.dtype == np.float64 else v
                                       for k, v in inputs.items()}, lengths)["loss"]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5)
