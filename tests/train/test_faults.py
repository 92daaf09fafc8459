"""Numerical faults: a NaN or inf stops training with the place it came from (or skips the
step when asked to), and never reaches a checkpoint."""

from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph import SeqgraphError
from seqgraph.train import data as datasets
from seqgraph.train.checkpoint import read_checkpoint
from seqgraph.train.config import resolve
from seqgraph.train.loop import Trainer
from seqgraph.weights import load_arrays

MODELS = Path(__file__).resolve().parents[2] / "models"
LOG_ACC = """cell Acc(x : [F]) -> h : [F] {
    state h : [F] = 0
    h = h[t-1] + log(x)
}
model LogAcc {
    input x : seq[float, 2]
    target y : [2]
    h = Acc(x)
    loss = mse(dense(last(h), 2), y)
}
"""
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy's overflow warnings


def _log_acc(x):
    net = sg.compile(sg.parse(LOG_ACC, "logacc.sg").model(), dtype="float64")
    net.forward({"x": x, "y": np.zeros((x.shape[1], 2))})
    return net


def test_first_nonfinite_names_the_op_its_layer_its_line_and_the_step():
    x = np.ones((5, 3, 2))
    x[2, 1, 0] = -1.0  # log(-1) at step 2 only; later steps inherit the NaN through h[t-1]
    fault = _log_acc(x).first_nonfinite()
    assert (fault.node, fault.op, fault.layer, fault.step, str(fault.span)) == \
        ("Acc_0/log", "log", "Acc_0", 2, "logacc.sg:3:18")
    assert str(fault) == ("the value of Acc_0/log (log in layer Acc_0) at time step 2, "
                          "from logacc.sg:3:18: h = h[t-1] + log(x)")


def test_first_nonfinite_finds_a_gradient_that_overflows_when_every_value_is_finite():
    x = np.ones((5, 3, 2))
    x[3, 0, 1] = 1e-320  # log is finite (-737), its gradient 1/x is not
    net = _log_acc(x)
    assert np.isfinite(net.value(net.model.outputs["loss"]))
    fault = net.first_nonfinite()
    assert (fault.phase, fault.node, fault.step, fault.into) == ("gradient", "Acc_0/log", 3, "Acc_0/x")
    assert str(fault).startswith("the gradient through Acc_0/log (log in layer Acc_0) at time step 3 "
                                 "into Acc_0/x")


def test_first_nonfinite_is_none_for_a_healthy_run():
    assert _log_acc(np.ones((4, 2, 2))).first_nonfinite() is None


def _trainer(tmp_path, dataset, *settings, echo=None):
    model = sg.load(MODELS / "rnn_adding.sg").model().with_sizes(hidden=8)
    overrides = dict(s.split("=", 1) for s in ("valid = 0", "batch = 16", "epochs = 1") + settings)
    config = resolve(model.train, {k.strip(): v.strip() for k, v in overrides.items()})
    return Trainer(model, config, tmp_path, dataset, echo=echo or (lambda *a: None), show_progress=False)


def _poisoned(dataset, example=5, step=3):
    arrays = {k: v.copy() for k, v in dataset.arrays.items()}
    arrays["x"][example, step, 0] = np.nan
    return datasets.Dataset(arrays, dataset.kind, dataset.metric, dict(dataset.time_axes), name="poisoned")


def _finite_checkpoint(path):
    arrays, header = load_arrays(path)
    assert all(np.isfinite(a).all() for k, a in arrays.items() if k.startswith("param/"))
    return header


def test_a_nan_in_the_data_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    clean = datasets.builtin("adding", n=64, seed=0, length=6)
    trainer = _trainer(tmp_path, clean)
    trainer.run()
    saved = {name: (tmp_path / name).read_bytes() for name in ("last.npz", "best.npz")}
    trainer.config.epochs = 2
    trainer.train_data = _poisoned(clean)
    with pytest.raises(SeqgraphError) as caught:
        trainer.run()
    message = caught.value.render()
    assert "training stopped at epoch 2, batch " in message
    assert ": the loss became nan; the first non-finite is the value of x (input) at time step 3, " \
           f"from {MODELS / 'rnn_adding.sg'}:11:12: input  x : seq[float, 2]" in message
    assert f"hint: the last good checkpoint is kept: {tmp_path / 'last.npz'}; lower the learning rate" in message
    for name, content in saved.items():
        assert (tmp_path / name).read_bytes() == content
        assert _finite_checkpoint(tmp_path / name)["kind"] == "checkpoint"


def test_skip_nonfinite_skips_the_step_with_a_warning_and_trains_on(tmp_path):
    said = []
    trainer = _trainer(tmp_path, _poisoned(datasets.builtin("adding", n=64, seed=0, length=6)),
                       "skip_nonfinite = 1", "epochs = 2", echo=said.append)
    history = trainer.run()
    warnings = [line for line in said if line.startswith("warning: skipped")]
    assert len(warnings) == 2  # the poisoned example sits in one batch of each epoch
    assert "the loss became nan; the first non-finite is the value of x (input) at time step 3" in warnings[0]
    assert all(np.isfinite(row["train_loss"]) for row in history)
    assert trainer.optimizer.state_dict()["step/dense_0.weight"] == 2 * 4 - 2  # 4 batches an epoch
    header = _finite_checkpoint(tmp_path / "final.npz")
    assert header["epoch"] == 2


def test_an_epoch_whose_steps_were_all_skipped_has_no_training_loss(tmp_path):
    """Not 0.0, which would look like a perfect epoch (and be saved as the best)."""
    dataset = datasets.builtin("adding", n=16, seed=0, length=6)
    dataset.arrays["x"][:, 2, 0] = np.nan
    trainer = _trainer(tmp_path, dataset, "skip_nonfinite = 1")
    assert np.isnan(trainer.run()[0]["train_loss"])
    assert not (tmp_path / "best.npz").exists()


def test_an_update_that_overflows_stops_even_when_skipping(tmp_path):
    """1e39 is inf in float32, so the first update makes weights infinite; skipping cannot
    help (the step is done), so training stops before anything is saved."""
    trainer = _trainer(tmp_path, datasets.builtin("adding", n=64, seed=0, length=6),
                       "optimizer = sgd(lr = 1e39)", "clip = 0", "skip_nonfinite = 1")
    with pytest.raises(SeqgraphError) as caught:
        trainer.run()
    assert caught.value.message.startswith("training stopped at epoch 1, batch ")
    assert ": an update made a parameter NaN or infinite; the first non-finite is parameter " in \
        caught.value.message
    assert caught.value.hint == "no checkpoint was written yet; lower the learning rate or set clip"
    assert not list(tmp_path.glob("*.npz"))


def test_a_checkpoint_is_never_written_with_nonfinite_parameters(tmp_path):
    trainer = _trainer(tmp_path, datasets.builtin("adding", n=32, seed=0, length=4))
    trainer.run()
    before = (tmp_path / "last.npz").read_bytes()
    trainer.net.params["dense_0.bias"][0] = np.inf
    with pytest.raises(SeqgraphError, match="refusing to write last.npz: a parameter is not finite; "
                                            "the first non-finite is parameter dense_0.bias"):
        trainer._save("last.npz")
    assert (tmp_path / "last.npz").read_bytes() == before
    assert read_checkpoint(tmp_path)[1]["epoch"] == 1
