"""Shared helpers for executor tests."""

from pathlib import Path

import pytest

import seqgraph as sg

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
