"""Shared helpers for executor tests."""

from pathlib import Path

import pytest

import seqgraph as sg

MODELS = sorted(Path(__file__).resolve().parents[2].joinpath("models").glob("*.sg"))


def example_models():
    """(file, model name) for every model in models/."""
    return [pytest.param(path, name, id=f"{path.stem}:{name}")
            for path in MODELS for name in sg.load(path).models]
