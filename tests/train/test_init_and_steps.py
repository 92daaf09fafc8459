"""Starting a run from given weights (``--init WEIGHTS``) and the per-step callbacks."""

from pathlib import Path

import numpy as np
import pytest

from seqgraph import SeqgraphError, cli
from seqgraph.train.run import run

MODEL = Path(__file__).resolve().parents[2] / "models" / "rnn_adding.sg"
QUIET = dict(progress=False, echo=lambda *args: None)
SETTINGS = ["examples = 64", 'data = builtin("adding", length = 5)', "epochs = 1", "batch = 16",
            "valid = 0", "clip = 0.01"]


def _trained(tmp_path, name, **options):
    steps = []
    trainer = run(MODEL, out=tmp_path / name, settings=SETTINGS, on_step=[steps.append], **QUIET, **options)
    return trainer, steps


def test_each_step_reports_its_loss_norm_and_clipping(tmp_path):
    trainer, steps = _trained(tmp_path, "a")
    assert [(s.epoch, s.batch, s.step) for s in steps] == [(1, i, i) for i in range(1, 5)]
    assert all(s.clipped and s.grad_norm > 0.01 and s.lr == trainer.optimizer.lr for s in steps)
    assert sum(s.loss for s in steps) / 4 == pytest.approx(trainer.history[0]["train_loss"], rel=1e-12)


def test_a_run_starts_from_a_run_folder_a_checkpoint_or_plain_arrays(tmp_path):
    first, _ = _trained(tmp_path, "a", seed=1)
    _, fresh = _trained(tmp_path, "b", seed=2)
    plain = tmp_path / "plain.npz"
    np.savez(plain, **{k: np.asarray(v) for k, v in first.net.params.items()})
    starts = []
    for weights in (tmp_path / "a", tmp_path / "a" / "final.npz", plain):
        again, steps = _trained(tmp_path, "c", seed=2, init=str(weights))
        starts.append(steps[0].loss)
    assert starts[0] == starts[1] == starts[2] != fresh[0].loss


@pytest.mark.parametrize("change, message, hint", [
    (lambda w: w.pop("rnn_0.weight_hh"), "does not match model RNNAdding: missing rnn_0.weight_hh",
     "the keys are <layer>.<param>"),
    (lambda w: w.update(extra=np.zeros(2)), "unexpected extra", "the keys are <layer>.<param>"),
    (lambda w: w.update({"rnn_0.weight_hh": np.zeros((2, 2))}), "parameter 'rnn_0.weight_hh' has shape (2, 2)",
     "--size NAME=N"),
])
def test_weights_that_do_not_fit_are_one_error_with_a_hint(tmp_path, capsys, change, message, hint):
    trainer, _ = _trained(tmp_path, "a")
    weights = {k: np.asarray(v) for k, v in trainer.net.params.items()}
    change(weights)
    np.savez(tmp_path / "w.npz", **weights)
    status = cli.main(["run", str(MODEL), "--out", str(tmp_path / "b"), "--init", str(tmp_path / "w.npz"),
                       "--quiet"] + [arg for item in SETTINGS for arg in ("--set", item)])
    err = capsys.readouterr().err
    assert status == 1 and message in err and hint in err, err


def test_init_and_resume_together_are_refused(tmp_path):
    with pytest.raises(SeqgraphError, match="--init and --resume cannot be used together"):
        run(MODEL, out=tmp_path, init=str(tmp_path), resume=str(tmp_path), settings=SETTINGS, **QUIET)
