"""The gradient check `seqgraph check` runs: it passes on sound rules and, when a rule is
wrong, names the first node and time step whose gradient disagrees."""

import dataclasses
from pathlib import Path

import pytest

import seqgraph as sg
from seqgraph import cli
from seqgraph.gradcheck import quick_report, random_inputs, reference_differences
from seqgraph.ops import REGISTRY
from seqgraph.ops.kernels import Call

MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture
def broken_tanh(monkeypatch):
    """tanh with the gradient rule g * (1 - y) instead of g * (1 - y^2), in both forms the op
    has: its vjp (the reference executor's) and its kernel (the compiled step loops')."""
    tanh = REGISTRY["tanh"]

    def wrong(dst, mode, g, out, ins, tmp):
        lines = [f"subtract(1.0, {out}, {tmp})", f"multiply({g}, {tmp}, {tmp})"]
        return lines + [f"copyto({dst}, {tmp})" if mode == "set" else f"add({dst}, {tmp}, {dst})"]

    kernel = dataclasses.replace(tanh.kernel, gradients={0: wrong},
                                 gradient_formulas={0: "{g} * (1 - {out})"})
    monkeypatch.setitem(REGISTRY, "tanh", dataclasses.replace(
        tanh, vjp=lambda xp, g, out, x: (g * (1 - out),), kernel=kernel))


def test_the_report_gives_the_worst_relative_error_of_a_sound_model():
    ok, text = quick_report(sg.load(MODELS / "rnn_adding.sg").model())
    assert ok
    assert text.startswith("gradient check (float64, batch 2, 3 steps): worst relative error ")
    worst = float(text.split("worst relative error ")[1].split()[0])
    assert worst < 1e-6


def test_a_wrong_rule_is_named_with_its_node_and_time_step(broken_tanh):
    ok, text = quick_report(sg.load(MODELS / "rnn_adding.sg").model())
    assert not ok
    assert "FAILED" in text
    # The backward pass meets the last step's tanh first.
    assert text.endswith("first node whose gradient disagrees: rnn_0/tanh (tanh) at time step 2")


def test_check_fails_with_exit_1_when_a_gradient_disagrees(broken_tanh, capsys):
    assert cli.main(["check", str(MODELS / "rnn_adding.sg")]) == 1
    err = capsys.readouterr().err
    assert "rnn_0/tanh (tanh) at time step 2" in err
    assert "Traceback" not in err


def test_check_prints_the_gradient_line(capsys):
    assert cli.main(["check", str(MODELS / "gru_tagger.sg")]) == 0
    assert "gradient check (float64, batch 2, 3 steps): worst relative error" in capsys.readouterr().out


def test_reference_differences_are_zero_for_sound_kernels_and_show_a_wrong_one(monkeypatch):
    monkeypatch.setenv("SEQGRAPH_NATIVE", "0")  # the in-place ufunc kernels are the ones under test
    model = sg.load(MODELS / "rnn_adding.sg").model()
    inputs, lengths = random_inputs(model, batch=2, steps=3, ragged=True)
    sound = reference_differences(sg.compile(model, dtype="float64"), inputs, lengths)
    assert set(sound) >= {"loss", "pred", "rnn_0.weight_hh"} and max(sound.values()) < 1e-12
    tanh = REGISTRY["tanh"]
    off = dataclasses.replace(tanh.kernel, forward=lambda out, ins: [
        Call("tanh", (ins[0],), out), Call("multiply", (out, 1.001), out)])
    monkeypatch.setitem(REGISTRY, "tanh", dataclasses.replace(tanh, kernel=off))
    wrong = reference_differences(sg.compile(model, dtype="float64"), inputs, lengths)
    assert wrong["loss"] > 1e-6 and wrong["rnn_0.weight_hh"] > 1e-6
