"""Shared helpers for executor tests."""

from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.backends.numpy_backend import NumpyBackend
from seqgraph.gradcheck import random_inputs

MODELS = sorted(Path(__file__).resolve().parents[2].joinpath("models").glob("*.sg"))


def example_models():
    """(file, model name) for every model in models/."""
    return [pytest.param(path, name, id=f"{path.stem}:{name}")
            for path in MODELS for name in sg.load(path).models]


def lstm_language_model(hidden: int, inputs: int, classes: int):
    """A one-layer lstm, a dense layer and the cross-entropy: the benchmark's model, small."""
    return sg.parse(f"""
model M(hidden = {hidden}) {{
    input  x : seq[float, {inputs}]
    target y : seq[int, {classes}]
    loss = cross_entropy(dense(lstm(x, hidden), {classes}), y)
}}
""").model()


def float32_gradients_by_choice(monkeypatch, model, variable: str, choices, seed: int, after_each=None) -> dict:
    """The gradients of one float32 batch of ``model`` (20 sequences of 9 steps drawn from
    ``seed``) on MKL's products, once with the environment ``variable`` set to each of
    ``choices``, by choice; ``after_each(choice)`` runs after each backward."""
    inputs, lengths = random_inputs(model, batch=20, steps=9, seed=seed)
    inputs = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in inputs.items()}
    grads = {}
    for choice in choices:
        monkeypatch.setenv(variable, choice)
        net = sg.compile(model, backend=NumpyBackend(mkl=True), dtype="float32", seed=2)
        net.forward(inputs, lengths)
        grads[choice] = net.backward()
        if after_each is not None:
            after_each(choice)
    return grads


def assert_same_gradients(got: dict, expected: dict) -> None:
    """Every gradient in ``expected`` matched by ``got``'s to float32 rounding."""
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-6, err_msg=key)
