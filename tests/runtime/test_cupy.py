"""The CuPy backend: the same numbers as NumPy on every example model (skipped without a GPU)."""

import importlib.util

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.backends import get_backend
from seqgraph.gradcheck import check_model, random_inputs

from .conftest import example_models


def _gpu_reason():
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed (pip install '.[gpu]')"
    try:
        get_backend("cupy")
    except sg.SeqgraphError as error:
        return error.message
    return None


REASON = _gpu_reason()
needs_gpu = pytest.mark.skipif(REASON is not None, reason=str(REASON))


def test_missing_cupy_is_a_one_line_error():
    if REASON is None:
        pytest.skip("a GPU is present")
    with pytest.raises(sg.SeqgraphError) as error:
        get_backend("cupy")
    assert "\n" not in error.value.message


@needs_gpu
@pytest.mark.parametrize("path, name", example_models())
def test_cupy_matches_numpy(path, name):
    model = sg.load(path).models[name]
    cpu = sg.compile(model, backend="numpy", dtype="float64", seed=2)
    gpu = sg.compile(model, backend="cupy", dtype="float64", seed=2)
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True)
    cpu_out, gpu_out = cpu.forward(inputs, lengths), gpu.forward(inputs, lengths)
    for key in cpu_out:
        np.testing.assert_allclose(gpu.backend.to_host(gpu_out[key]), cpu_out[key], atol=1e-10)
    cpu_grads, gpu_grads = cpu.backward(), gpu.backward()
    for key in cpu_grads:
        np.testing.assert_allclose(gpu.backend.to_host(gpu_grads[key]), cpu_grads[key], atol=1e-10, err_msg=key)


@needs_gpu
@pytest.mark.parametrize("path, name", example_models())
def test_cupy_gradient_check(path, name):
    model = sg.load(path).models[name]
    net = sg.compile(model, backend="cupy", dtype="float64", seed=3)
    inputs, lengths = random_inputs(model, batch=2, steps=4, ragged=True, seed=1)
    result = check_model(net, inputs, lengths)
    assert result.worst_error < 1e-5, (result.worst_name, result.culprit)
