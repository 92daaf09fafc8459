"""Cross-checking two backends, tested without a GPU: NumPy against a NumPy whose one function
is slightly wrong must name the node and time step where the wrong function first runs."""

from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.backends.numpy_backend import NumpyBackend
from seqgraph.cli import main
from seqgraph.crosscheck import crosscheck

MODELS = Path(__file__).resolve().parents[1] / "models"


class _Shifted:
    """NumPy, except that ``name`` returns ``shift`` more than it should."""

    def __init__(self, name: str, shift: float):
        self.name, self.shift = name, shift

    def __getattr__(self, attr):
        return getattr(np, attr)

    def __call__(self, *args, **kwargs):
        result = getattr(np, self.name)(*args, **kwargs)
        result += self.shift
        return result


class _ShiftedXp:
    """An array namespace: NumPy with one ufunc shifted."""

    def __init__(self, name: str, shift: float):
        self._broken = {name: _Shifted(name, shift)}

    def __getattr__(self, attr):
        return self._broken.get(attr) or getattr(np, attr)


class FaultyBackend(NumpyBackend):
    """The NumPy backend with ``tanh`` off by ``shift`` (or whichever function is named)."""

    name = "faulty"

    def __init__(self, function: str = "tanh", shift: float = 1e-3):
        self.xp = _ShiftedXp(function, shift)


def _model(name: str):
    return sg.load(MODELS / name).model()


def test_identical_backends_agree_everywhere():
    result = crosscheck(_model("gru_tagger.sg"), "numpy", NumpyBackend())
    assert result.difference is None
    assert result.values > 20 and result.gradients > 5
    assert result.largest == 0.0
    assert "agree" in str(result)


def test_a_wrong_tanh_is_found_at_the_first_tanh_of_step_zero():
    model = _model("lstm_adding.sg")
    result = crosscheck(model, "numpy", FaultyBackend("tanh", 1e-3))
    found = result.difference
    assert found is not None and found.phase == "value"
    assert found.op == "tanh" and found.node == "lstm_0/tanh" and found.step == 0
    assert found.second - found.first == pytest.approx(1e-3, rel=1e-6)
    assert found.layer == "lstm_0"
    assert "lstm_0/tanh (tanh in layer lstm_0) at time step 0" in str(result)


def test_a_fault_below_the_tolerance_is_not_reported():
    result = crosscheck(_model("lstm_adding.sg"), "numpy", FaultyBackend("tanh", 1e-13))
    assert result.difference is None
    assert 1e-14 < result.largest < 1e-10


@pytest.mark.parametrize("file, node", [("rnn_adding.sg", "rnn_0/tanh"), ("gru_tagger.sg", "gru_0/tanh")])
def test_a_wrong_tanh_is_found_in_other_cells(file, node):
    found = crosscheck(_model(file), "numpy", FaultyBackend("tanh", 1e-3)).difference
    assert (found.node, found.step, found.phase) == (node, 0, "value")


def test_a_wrong_exp_in_a_model_without_time_names_the_node_and_no_step():
    found = crosscheck(_model("digits_cnn.sg"), "numpy", FaultyBackend("exp", 1e-3)).difference
    assert (found.node, found.op, found.step) == ("cross_entropy", "cross_entropy", None)
    assert found.span is not None and found.span.line == 14


def test_gradients_are_compared_when_every_value_agrees():
    # the generated loops call subtract only in the backward rule of tanh: 1 - y * y
    result = crosscheck(_model("rnn_adding.sg"), "numpy", FaultyBackend("subtract", 1e-3))
    found = result.difference
    assert found is not None and found.phase == "gradient"
    assert result.values > 10 and result.gradients >= 1
    assert found.step == 3  # backward meets the latest step first


def test_crosscheck_without_cupy_is_a_one_line_error(capsys):
    try:
        import cupy  # noqa: F401
        pytest.skip("CuPy is installed")
    except ImportError:
        pass
    status = main(["check", str(MODELS / "lstm_adding.sg"), "--crosscheck"])
    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    assert captured.err.strip().startswith("error: the cupy backend needs CuPy")
    assert len(captured.err.strip().splitlines()) <= 2  # the message and its hint


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.sg")), ids=lambda p: p.stem)
def test_every_example_model_crosschecks_clean_against_a_second_numpy(path):
    for model in sg.load(path).models.values():
        result = crosscheck(model, "numpy", NumpyBackend(), steps=3)
        assert result.difference is None and result.values > 0
