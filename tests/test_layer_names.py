"""Layers called inside a cell: each call owns its parameters, named as layers are
everywhere (``<function>_<n>`` per function, or ``name=``) under the cell's own layer."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph import SeqgraphError
from seqgraph.gradcheck import check_model, random_inputs, reference_differences

TWO_DENSE = """
cell Elman(x : [X]) -> h : [H] {
    state h : [H] = 0
    h = tanh(dense(x, H%s) + dense(h[t-1], H%s))
}"""


def _model(cell: str, call: str = "Elman(x, hidden)", extra: str = ""):
    return sg.parse(cell + f"""
    model M(hidden = 4) {{
        input  x : seq[float, 3]
        target y : [1]
        h    = {call}
        {extra}
        loss = mse(dense(last(h), 1), y)
    }}""", "m.sg").model()


def test_two_dense_calls_in_a_cell_own_their_parameters_and_compute_the_elman_step():
    model = _model(TWO_DENSE % ("", ""))
    assert {key: shape for key, (shape, _) in model.params.items()} == {
        "Elman_0.dense_0.weight": (4, 3), "Elman_0.dense_0.bias": (4,),
        "Elman_0.dense_1.weight": (4, 4), "Elman_0.dense_1.bias": (4,),
        "dense_0.weight": (1, 4), "dense_0.bias": (1,)}
    net = sg.compile(model, dtype="float64", seed=2)
    inputs, _ = random_inputs(model, batch=2, steps=3, seed=1)
    p = net.params
    h = np.zeros((2, 4))
    for x in inputs["x"]:
        h = np.tanh(x @ p["Elman_0.dense_0.weight"].T + p["Elman_0.dense_0.bias"]
                    + h @ p["Elman_0.dense_1.weight"].T + p["Elman_0.dense_1.bias"])
    pred = h @ p["dense_0.weight"].T + p["dense_0.bias"]
    loss = net.forward(inputs)["loss"]
    np.testing.assert_allclose(loss, np.mean((pred - inputs["y"]) ** 2), rtol=1e-12)
    ragged = random_inputs(model, batch=3, steps=4, ragged=True, seed=2)
    assert max(reference_differences(net, *ragged).values()) <= 1e-12
    assert check_model(net, *ragged).worst_error < 1e-7


def test_name_gives_a_layer_in_a_cell_its_name():
    model = _model(TWO_DENSE % (", name = input_part", ", name = recurrent"))
    assert sorted(model.params) == ["Elman_0.input_part.bias", "Elman_0.input_part.weight",
                                    "Elman_0.recurrent.bias", "Elman_0.recurrent.weight",
                                    "dense_0.bias", "dense_0.weight"]


def test_every_copy_of_a_cell_counts_its_own_layers():
    model = _model(TWO_DENSE % ("", ""), "Elman(Elman(x, hidden, layers = 2), hidden, name = top)")
    assert sorted(k for k in model.params if "weight" in k) == [
        "Elman_0.dense_0.weight_l0", "Elman_0.dense_0.weight_l1",
        "Elman_0.dense_1.weight_l0", "Elman_0.dense_1.weight_l1",
        "dense_0.weight", "top.dense_0.weight", "top.dense_1.weight"]
    compare = reference_differences(sg.compile(model, dtype="float64"), *random_inputs(model, ragged=True))
    assert max(compare.values()) <= 1e-12


def test_a_layer_name_used_twice_in_a_cell_points_at_the_second():
    with pytest.raises(SeqgraphError) as caught:
        _model(TWO_DENSE % (", name = part", ", name = part"))
    rendered = caught.value.render()
    assert rendered.startswith("m.sg:4:41: error: layer name 'part' is used twice")
    assert "hint: give each layer its own name=" in rendered
