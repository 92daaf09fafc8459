"""Cells whose parameters multiply values made inside the step: the compiled program keeps
over time every value a gradient computed after the loop reads (a weight's gradient reads
what it multiplied at every step), with the native paths on and off."""

import re
from pathlib import Path

import pytest

import seqgraph as sg
from seqgraph.gradcheck import check_model, random_inputs

from .conftest import compare_with_reference

ROOT = Path(__file__).resolve().parents[2]

GATED_PRODUCT = """
cell Gated(x : [X]) -> h : [H] {
    param W : [H, H]
    param U : [H, X]
    param s : [H]
    state h : [H] = 0
    h = tanh(W @ (h[t-1] * s) + U @ x)
}"""

# the GRU as textbooks write it: the reset gate multiplies the state before its product
TEXTBOOK_GRU = """
cell TextbookGRU(x : [X]) -> h : [H] {
    param W_z : [H, X], U_z : [H, H], b_z : [H] = 0
    param W_r : [H, X], U_r : [H, H], b_r : [H] = 0
    param W_h : [H, X], U_h : [H, H], b_h : [H] = 0
    state h : [H] = 0
    z  = sigmoid(W_z @ x + U_z @ h[t-1] + b_z)
    r  = sigmoid(W_r @ x + U_r @ h[t-1] + b_r)
    hc = tanh(W_h @ x + U_h @ (r * h[t-1]) + b_h)
    h  = (1 - z) * h[t-1] + z * hc
}"""

# a parameter times an op of the state that the backward loop would recompute per step
SCALED_TANH = """
cell Scaled(x : [X]) -> h : [H] {
    param U : [H, X]
    param s : [H]
    state h : [H] = 0
    h = tanh(U @ x) + s * tanh(h[t-1])
}"""


def _walk_through_cell() -> str:
    """The minimal gated unit of docs/language.md's walk-through, as the docs write it."""
    text = (ROOT / "docs" / "language.md").read_text("utf-8")
    return re.search(r"```\n(cell MGU.*?\n})\n```", text, re.S).group(1)


def _model(cell_text: str, cell: str) -> sg.Model:
    return sg.parse(cell_text + f"""
    model Adding(hidden = 4) {{
        input  x : seq[float, 3]
        target y : [1]
        h    = {cell}(x, hidden)
        pred = dense(last(h), 1)
        loss = mse(pred, y)
        output pred
    }}""").model()


CELLS = [pytest.param(GATED_PRODUCT, "Gated", id="weight-times-gated-state"),
         pytest.param(None, "MGU", id="docs-minimal-gated-unit"),
         pytest.param(TEXTBOOK_GRU, "TextbookGRU", id="textbook-gru"),
         pytest.param(SCALED_TANH, "Scaled", id="param-times-tanh-of-state")]


@pytest.mark.parametrize("native", [pytest.param("1", id="native"), pytest.param("0", id="numpy")])
@pytest.mark.parametrize("cell_text, cell", CELLS)
def test_a_weight_times_a_value_made_in_the_step_compiles_to_the_reference(cell_text, cell, native, monkeypatch):
    monkeypatch.setenv("SEQGRAPH_NATIVE", native)
    monkeypatch.setenv("SEQGRAPH_MKL", native)
    model = _model(cell_text or _walk_through_cell(), cell)
    net = sg.compile(model, dtype="float64", seed=3)
    compare_with_reference(net, batch=3, steps=5)
    inputs, lengths = random_inputs(model, batch=3, steps=5, ragged=True, seed=4)
    result = check_model(net, inputs, lengths)
    assert result.worst_error < 1e-7, result.errors


@pytest.mark.parametrize("cell_text, cell", CELLS)
def test_seqgraph_check_passes_such_cells(cell_text, cell, tmp_path, capsys):
    from seqgraph.cli import main

    path = tmp_path / "cell.sg"
    path.write_text(cell_text or _walk_through_cell())
    path.write_text(path.read_text() + """
model Adding(hidden = 4) {
    input  x : seq[float, 3]
    target y : [1]
    loss = mse(dense(last(%s(x, hidden)), 1), y)
}""" % cell)
    assert main(["check", str(path)]) == 0
    assert " - ok" in capsys.readouterr().out
