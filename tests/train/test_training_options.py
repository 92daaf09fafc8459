"""Training options end to end: gradient accumulation, value clipping, per-step schedules and
the new optimisers, from a model file and from ``seqgraph run``."""

import csv
import math

import numpy as np
import pytest

from seqgraph import cli
from seqgraph.train import loop
from seqgraph.train.run import run

from .test_training import MODELS, QUIET, _valid

ADDING = ["examples = 200", "valid = 0", "clip = 0", "optimizer = sgd(lr = 0.5)"]


def _adding(tmp_path, settings, epochs=1):
    return run(MODELS / "rnn_adding.sg", epochs=epochs, out=tmp_path, dtype="float64", sizes={"hidden": 6},
               settings=ADDING + settings, **QUIET)


def test_accumulating_two_half_batches_is_one_whole_batch(tmp_path):
    # mse averages over the batch, so the mean of two half-batch gradients is the whole
    # batch's gradient, and the shuffled order is the same permutation either way
    whole = _adding(tmp_path / "whole", ["batch = 40"])
    halves = _adding(tmp_path / "halves", ["batch = 20", "accumulate = 2"])
    single = _adding(tmp_path / "single", ["batch = 20"])
    assert whole.optimizer.updates == halves.optimizer.updates == 5 and single.optimizer.updates == 10
    for key, value in whole.net.params.items():
        np.testing.assert_allclose(halves.net.params[key], value, rtol=1e-11, atol=1e-13, err_msg=key)
    assert np.abs(single.net.params["dense_0.weight"] - whole.net.params["dense_0.weight"]).max() > 1e-3
    np.testing.assert_allclose(_valid(halves, "train_loss"), _valid(whole, "train_loss"), rtol=1e-11)


def test_an_epoch_that_ends_mid_accumulation_updates_with_what_it_gathered(tmp_path):
    trainer = _adding(tmp_path, ["batch = 20", "accumulate = 3"], epochs=2)
    assert trainer.optimizer.updates == 2 * 4  # 10 batches: 3 + 3 + 3 + 1 per epoch
    assert trainer.gathered == 0 and trainer.accumulated == {}


def test_clip_value_bounds_every_gradient_element(tmp_path):
    start = _adding(tmp_path / "start", ["steps = 1", "optimizer = sgd(lr = 0)"])
    clipped = _adding(tmp_path / "clipped", ["steps = 1", "optimizer = sgd(lr = 1)", "clip_value = 0.001"])
    moved = max(np.abs(clipped.net.params[k] - v).max() for k, v in start.net.params.items())
    assert moved == pytest.approx(0.001, rel=1e-12)  # plain SGD moves by the clamped gradient


def test_a_per_step_schedule_sets_the_rate_before_every_update(tmp_path):
    trainer = _adding(tmp_path, ["batch = 50", "schedule = cosine(t_max = 6, per = step, warmup = 2)"], epochs=2)
    # 4 updates per epoch; the row's rate is the one the epoch's last update used
    expected = [0.5 * (1 + math.cos(math.pi * n / 6)) / 2 for n in (1, 5)]
    np.testing.assert_allclose(_valid(trainer, "lr"), expected, rtol=1e-12)


def test_reduce_on_plateau_watches_the_epochs_losses(tmp_path):
    trainer = _adding(tmp_path, ["batch = 50", "optimizer = sgd(lr = 0.000001)", "valid = 0.2",
                                 "schedule = reduce_on_plateau(patience = 0, factor = 0.5, threshold = 0.5)"],
                      epochs=4)
    # a tiny rate cannot better the loss by half, so after the first epoch (which beats the
    # starting best, infinity) every epoch halves the rate for the next
    assert _valid(trainer, "lr") == [1e-6, 1e-6, 5e-7, 2.5e-7]


def test_resuming_mid_accumulation_gives_the_losses_of_an_uninterrupted_run(tmp_path, monkeypatch):
    settings = ["examples = 400", "accumulate = 3", "optimizer = adamw(lr = 0.01)",
                "schedule = linear(start_factor = 0.2, total_iters = 5, per = step)"]
    common = dict(epochs=2, settings=settings, sizes={"hidden": 8}, dtype="float64", **QUIET)
    whole = run(MODELS / "gru_tagger.sg", out=tmp_path / "whole", **common)
    original, calls = loop.Trainer._step, {"n": 0}

    def interrupt_on_fifth(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(loop.Trainer, "_step", interrupt_on_fifth)
    with pytest.raises(loop.Interrupted):
        run(MODELS / "gru_tagger.sg", out=tmp_path / "cut", **common)
    monkeypatch.setattr(loop.Trainer, "_step", original)
    resumed = run(MODELS / "gru_tagger.sg", out=tmp_path / "cut", resume=str(tmp_path / "cut"), **common)
    np.testing.assert_allclose(_valid(resumed, "train_loss"), _valid(whole, "train_loss"), rtol=1e-12)
    np.testing.assert_allclose(_valid(resumed), _valid(whole), rtol=1e-12)
    for key, value in whole.net.params.items():
        np.testing.assert_allclose(resumed.net.params[key], value, rtol=1e-12, atol=1e-14, err_msg=key)


@pytest.mark.parametrize("optimizer", ["adamw(lr = 0.01, weight_decay = 0.05)", "adagrad(lr = 0.1)"])
def test_seqgraph_run_trains_with_the_new_options(tmp_path, optimizer, capsys):
    code = cli.main(["run", str(MODELS / "lstm_adding.sg"), "--out", str(tmp_path), "--epochs", "2", "--quiet",
                     "--size", "hidden=8", "--set", "examples = 300", "--set", f"optimizer = {optimizer}",
                     "--set", "schedule = cosine(t_max = 10, per = step, warmup = 3)",
                     "--set", "accumulate = 2", "--set", "clip_value = 1.0"])
    assert code == 0
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert len(rows) == 2 and float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])


def test_option_mistakes_point_at_the_setting(capsys):
    code = cli.main(["run", str(MODELS / "rnn_adding.sg"), "--set", "schedule = cosine(t_max = 5, per = epohc)"])
    assert code == 1
    err = capsys.readouterr().err
    assert "cosine: per must be epoch or step" in err and "did you mean 'epoch'" in err
    assert cli.main(["run", str(MODELS / "rnn_adding.sg"), "--set", "accumulate = 0"]) == 1
    assert "'accumulate' must be at least 1" in capsys.readouterr().err
