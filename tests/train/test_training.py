"""Training end to end: each task learns, resuming reproduces, interrupting saves."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from seqgraph import cli
from seqgraph.train import loop
from seqgraph.train.data import unigram_entropy
from seqgraph.train.run import run, sample

MODELS = Path(__file__).resolve().parents[2] / "models"
QUIET = dict(progress=False, echo=lambda *args: None)


def _valid(trainer, column="valid_loss"):
    return [row[column] for row in trainer.history]


def test_char_lstm_beats_unigram_entropy(tmp_path):
    trainer = run(MODELS / "char_lstm.sg", epochs=1, out=tmp_path, sizes={"hidden": 64},
                  settings=["valid = 0.02", "sample = 0", "examples = 200000"], **QUIET)
    entropy = unigram_entropy(trainer.dataset.arrays["ids"])
    assert entropy > 2.5
    assert trainer.history[-1]["valid_loss"] < 0.8 * entropy


@pytest.fixture(scope="module")
def adding_runs(tmp_path_factory):
    """An LSTM and a vanilla RNN trained alike on the adding problem: name -> (trainer, run folder)."""
    settings = ["examples = 3000", 'data = builtin("adding", length = 40)', "optimizer = adam(lr = 0.01)"]
    runs = {}
    for name in ("lstm", "rnn"):
        out = tmp_path_factory.mktemp(name)
        runs[name] = run(MODELS / f"{name}_adding.sg", epochs=6, out=out, settings=settings, **QUIET), out
    return runs


def test_lstm_solves_adding_problem_where_rnn_does_not(adding_runs):
    lstm, rnn = adding_runs["lstm"][0], adding_runs["rnn"][0]
    print(f"adding problem, length 40, validation MSE: LSTM {lstm.history[-1]['valid_loss']:.4f}, "
          f"RNN {rnn.history[-1]['valid_loss']:.4f} (predicting the mean scores about 0.167)")
    assert lstm.history[-1]["valid_loss"] < 0.02
    assert rnn.history[-1]["valid_loss"] > 0.1


def _first_over_last(report: str, column: int) -> float:
    row = next(line for line in report.splitlines() if line.startswith("first/last"))
    return float(row.split()[1 + column])


def test_trained_lstm_keeps_its_gradient_through_time_where_rnn_loses_it(adding_runs, tmp_path, capsys):
    """seqgraph grads on the shipped examples, with their trained weights and a batch of their
    data: the RNN's ||dL/dh_t|| vanishes with distance from the loss, the LSTM's cell state
    keeps its gradient over all 50 steps."""
    ratios = {}
    for name in ("lstm", "rnn"):
        plot = tmp_path / f"{name}.png"
        argv = ["grads", str(MODELS / f"{name}_adding.sg"), "--weights", str(adding_runs[name][1]),
                "--out", str(plot)]
        assert cli.main(argv) == 0
        report = capsys.readouterr().out
        assert "a batch of its training data" in report and plot.exists()
        ratios[name] = _first_over_last(report, 1 if name == "lstm" else 0)  # lstm_0.c, rnn_0.h
    print(f"||dL/ds_0|| / ||dL/ds_49|| after training: LSTM cell {ratios['lstm']:.2e}, RNN {ratios['rnn']:.2e}")
    assert ratios["lstm"] > 0.05
    assert ratios["rnn"] < 1e-3


def test_seq2seq_reverses_with_high_token_accuracy(tmp_path):
    trainer = run(MODELS / "seq2seq_attention.sg", epochs=4, out=tmp_path, settings=["examples = 3000"], **QUIET)
    assert trainer.history[-1]["metric"] == "accuracy"
    assert trainer.history[-1]["metric_value"] > 0.9


def test_cnn_classifies_digits(tmp_path):
    trainer = run(MODELS / "digits_cnn.sg", epochs=4, out=tmp_path, settings=["examples = 2000"], **QUIET)
    assert trainer.history[-1]["metric_value"] > 0.9


def test_run_folder_holds_everything(tmp_path):
    run(MODELS / "char_lstm.sg", epochs=2, out=tmp_path, sizes={"hidden": 16},
        settings=["steps = 3", "valid = 0.01", "sample = 30", "examples = 20000"], **QUIET)
    for name in ("final.npz", "best.npz", "last.npz", "config.json", "metrics.csv", "loss.png", "samples.txt"):
        assert (tmp_path / name).exists(), name
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert json.loads((tmp_path / "config.json").read_text())["sizes"]["hidden"] == 16
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = sample(tmp_path, length=25, prime="The ")
    assert text.startswith("The ") and len(text) == 29


@pytest.mark.parametrize("model, settings", [
    ("char_lstm.sg", ["steps = 4", "valid = 0.01", "examples = 20000"]),
    ("gru_tagger.sg", ["examples = 300"]),
])
def test_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path, model, settings):
    whole = run(MODELS / model, epochs=2, out=tmp_path / "whole", settings=settings, sizes={"hidden": 8}, **QUIET)
    run(MODELS / model, epochs=1, out=tmp_path / "part", settings=settings, sizes={"hidden": 8}, **QUIET)
    resumed = run(MODELS / model, epochs=2, out=tmp_path / "part", settings=settings, sizes={"hidden": 8},
                  resume=str(tmp_path / "part"), **QUIET)
    assert _valid(resumed, "train_loss") == _valid(whole, "train_loss")
    assert _valid(resumed) == _valid(whole)


def test_checkpoints_in_safetensors_resume_and_sample(tmp_path, capsys):
    pytest.importorskip("safetensors")
    settings = ["steps = 3", "valid = 0.01", "examples = 20000", "sample = 0", "checkpoints = safetensors"]
    sizes = {"hidden": 8}
    whole = run(MODELS / "char_lstm.sg", epochs=2, out=tmp_path / "whole", settings=settings, sizes=sizes, **QUIET)
    run(MODELS / "char_lstm.sg", epochs=1, out=tmp_path / "part", settings=settings, sizes=sizes, **QUIET)
    assert sorted(p.name for p in (tmp_path / "part").glob("*.safetensors")) == \
        ["best.safetensors", "final.safetensors", "last.safetensors"]
    assert not list((tmp_path / "part").glob("*.npz"))
    resumed = run(MODELS / "char_lstm.sg", epochs=2, out=tmp_path / "part", settings=settings, sizes=sizes,
                  resume=str(tmp_path / "part"), **QUIET)
    assert _valid(resumed, "train_loss") == _valid(whole, "train_loss")
    assert sample(tmp_path / "part" / "final.safetensors", length=5, prime="The ").startswith("The ")


@pytest.mark.parametrize("value, message", [("zip", "'checkpoints' is npz or safetensors, not 'zip'"),
                                            ("safetensor", "did you mean 'safetensors'")])
def test_an_unknown_checkpoint_format_is_an_error(tmp_path, capsys, value, message):
    argv = ["run", str(MODELS / "char_lstm.sg"), "--out", str(tmp_path), "--set", f"checkpoints = {value}"]
    assert cli.main(argv) == 1
    assert message in capsys.readouterr().err


def test_interrupt_saves_a_checkpoint_and_resume_continues_mid_epoch(tmp_path, monkeypatch):
    settings = ["examples = 400"]
    whole = run(MODELS / "gru_tagger.sg", epochs=2, out=tmp_path / "whole", settings=settings,
                sizes={"hidden": 8}, **QUIET)
    original = loop.Trainer._step
    calls = {"n": 0}

    def interrupt_on_fifth(self, *args):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, *args)

    monkeypatch.setattr(loop.Trainer, "_step", interrupt_on_fifth)
    with pytest.raises(loop.Interrupted):
        run(MODELS / "gru_tagger.sg", epochs=2, out=tmp_path / "cut", settings=settings, sizes={"hidden": 8}, **QUIET)
    monkeypatch.setattr(loop.Trainer, "_step", original)
    assert (tmp_path / "cut" / "last.npz").exists()
    resumed = run(MODELS / "gru_tagger.sg", epochs=2, out=tmp_path / "cut", settings=settings,
                  sizes={"hidden": 8}, resume=str(tmp_path / "cut"), **QUIET)
    np.testing.assert_allclose(_valid(resumed, "train_loss"), _valid(whole, "train_loss"), rtol=1e-6)
    assert _valid(resumed) == _valid(whole)


def test_every_example_trains(tmp_path):
    for path in sorted(MODELS.glob("*.sg")):
        # init = "": a student starts without its teacher's run (tests/train/test_distillation.py has one)
        trainer = run(path, epochs=1, out=tmp_path / path.stem,
                      settings=["steps = 2", "examples = 200", "sample = 0", 'init = ""'], **QUIET)
        loss = trainer.history[-1]["train_loss"]
        assert np.isfinite(loss), path.name


@pytest.mark.parametrize("terminal, enabled, shown", [(True, True, True), (False, True, False), (True, False, False)])
def test_the_progress_bar_shows_only_on_a_terminal_and_when_asked(monkeypatch, terminal, enabled, shown):
    import os
    import pty
    import sys

    from seqgraph.train import report
    leader, follower = pty.openpty()
    stream = os.fdopen(follower, "w") if terminal else open(os.devnull, "w")  # a log file or a pipe
    try:
        monkeypatch.setattr(sys, "stderr", stream)
        bar = report.progress(3, "epoch 1", enabled)
        assert bar.disable is not shown
        bar.close()
    finally:
        stream.close()
        os.close(leader)
        if not terminal:
            os.close(follower)
