"""Every example model: whole-model gradient check, and compiled = reference to 1e-12."""

import pytest

import seqgraph as sg
from seqgraph.gradcheck import check_model, random_inputs, reference_differences

from .conftest import example_models


@pytest.mark.parametrize("path, name", example_models())
def test_gradient_check_through_time(path, name):
    model = sg.load(path).models[name]
    net = sg.compile(model, dtype="float64", seed=3)
    inputs, lengths = random_inputs(model, batch=2, steps=4, ragged=True, seed=1)
    result = check_model(net, inputs, lengths)
    assert result.worst_error < 1e-7, (result.worst_name, result.worst_error, result.culprit)


@pytest.mark.parametrize("path, name", example_models())
def test_compiled_matches_reference(path, name):
    model = sg.load(path).models[name]
    net = sg.compile(model, dtype="float64", seed=5)
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True, seed=2)
    differences = reference_differences(net, inputs, lengths)
    assert set(differences) >= set(model.outputs) | set(net.trained)
    assert max(differences.values()) < 1e-12, differences
