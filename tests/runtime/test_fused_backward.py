"""The backward step loop with fused chains: each fusible chain's backward runs as one call of
its generated kernel. Run on NumPy, as native loops compiled from the chain's formulas or
(without a C compiler) as the formulas evaluated with NumPy ufuncs, it gives the unfused
program's outputs and gradients for every example model and every recurrent layer option
(float64)."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.backends import native
from seqgraph.compiler import Scan
from seqgraph.gradcheck import random_inputs

from .conftest import MODELS
from .test_layers import CASES, RECURRENT, _trainable

# ``a`` feeds the chain and, later in the step, ``c``: its cotangent holds U's part when the
# chain's call adds its own; the bias-like ``V @ x`` inside the chain makes the call write
# that node's per-step cotangent rows for the deferred gradient of V
SHARED_INPUT = """
cell Shared(x : [X]) -> h : [H] {
    param W : [H, H]
    param U : [H, H]
    param V : [H, X]
    state h : [H] = 0
    state c : [H] = 0
    a = W @ h[t-1]
    c = U @ a
    h = tanh(a + V @ x + c[t-1]) * sigmoid(a)
}

model SharedInput() {
    input x : seq[float, 3]
    target y : seq[float, 4]
    h = Shared(x, 4)
    loss = mse(h, y)
}
"""

MODELS_AND_LAYERS = [pytest.param(lambda p=p, n=n: sg.load(p).models[n], id=f"{p.stem}:{n}")
                     for p in MODELS for n in sg.load(p).models] + \
                    [pytest.param(lambda n=n: _trainable(CASES[n]), id=n) for n in sorted(RECURRENT)] + \
                    [pytest.param(lambda: sg.parse(SHARED_INPUT).model(), id="shared_input")]


def _scans(net) -> list:
    return [item.code for item in net.program.schedule if isinstance(item, Scan)]


@pytest.mark.parametrize("native_loops", [pytest.param(True, id="native"), pytest.param(False, id="ufuncs")])
@pytest.mark.parametrize("make", MODELS_AND_LAYERS)
def test_the_backward_loop_with_fused_chains_computes_the_same_numbers(make, native_loops, monkeypatch):
    if native_loops and native.compiler() is None:
        pytest.skip("no C compiler for native loops")
    monkeypatch.setenv("SEQGRAPH_NATIVE", "1" if native_loops else "0")
    model = make()
    plain = sg.compile(model, dtype="float64", seed=1)
    plain.program.fuse_chains = False
    fused = sg.compile(model, dtype="float64", seed=1)
    fused.program.fuse_chains = True
    inputs, lengths = random_inputs(model, batch=3, steps=5, ragged=True, seed=2)
    expected, got = plain.forward(inputs, lengths), fused.forward(inputs, lengths)
    expected, got = {**expected, **plain.backward()}, {**got, **fused.backward()}
    assert set(got) == set(expected)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, atol=1e-12, err_msg=key)
    for code in _scans(fused):
        for layout, _, source, _, chains, _ in code._backward.values():
            # here every fusible chain qualifies: each runs as one call, once per step
            assert len(chains) == len(code.fusible_chains()) == len(code.fused_backward_chains(layout)) > 0
            assert all(source.count(f"F{code.index[c.nodes[-1]]}(") == 1 for c in chains)


@pytest.mark.parametrize("native_loops", [True, False])
def test_numpy_runs_chain_kernels_exactly_when_it_can_compile_them(native_loops, monkeypatch):
    monkeypatch.setenv("SEQGRAPH_NATIVE", "1" if native_loops else "0")
    model = sg.load(MODELS[[p.stem for p in MODELS].index("lstm_adding")]).model()
    net = sg.compile(model, dtype="float64")
    inputs, lengths = random_inputs(model, batch=2, steps=3, seed=2)
    net.forward(inputs, lengths)
    net.backward()
    (code,) = _scans(net)
    ((*_, source, _, chains, _),) = code._backward.values()
    if native_loops and native.compiler() is not None:
        loop = source.split("for t in range", 1)[1]
        assert len(chains) == 2 and loop.count(" F") == 2  # the gate sigmoid and the cell update
    else:
        assert chains == [] and "F" not in source


def test_a_chain_adds_to_a_cotangent_another_consumer_already_wrote():
    model = sg.parse(SHARED_INPUT).model()
    net = sg.compile(model, dtype="float64", seed=1)
    net.program.fuse_chains = True
    inputs, lengths = random_inputs(model, batch=2, steps=3, seed=2)
    net.forward(inputs, lengths)
    net.backward()
    (code,) = _scans(net)
    ((layout, _, source, _, (chain,), _),) = code._backward.values()
    a = code.index["Shared_0/matmul"]
    call = next(line.strip() for line in source.splitlines() if line.strip().startswith("F"))
    written = call.split("out=(")[1].rstrip(", )").split(", ")
    # the call writes a's part into a scratch buffer, then adds it
    scratch = written[list(chain.backward).index("Shared_0/matmul")]
    assert scratch.startswith("b") and f"add(g{a}, {scratch}, g{a})" in source
    assert "Shared_0/add" in chain.backward and "Shared_0/add" in layout.deferred
