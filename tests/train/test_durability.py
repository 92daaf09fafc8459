"""Durable runs: files are replaced atomically, a run killed at any moment resumes, and a
damaged or mismatched checkpoint is a clear error naming the file."""

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from seqgraph import SeqgraphError
from seqgraph.train.checkpoint import read_checkpoint
from seqgraph.train.loop import holding_interrupts
from seqgraph.train.run import run, sample
from seqgraph.weights import HEADER, atomic_write, load_arrays, remove_temporaries

MODELS = Path(__file__).resolve().parents[2] / "models"
QUIET = dict(progress=False, echo=lambda *args: None)
SMALL = ["steps = 2", "examples = 200", 'data = builtin("adding", length = 10)']
CHECKPOINTS = ("last.npz", "best.npz", "final.npz")


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "metrics.csv"
    atomic_write(target, lambda file: file.write(b"old"))

    def crash(file):
        file.write(b"half of the new")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's private 0o600


def test_remove_temporaries_deletes_only_atomic_write_leftovers(tmp_path):
    (tmp_path / ".last.npz.abc123.tmp").write_bytes(b"PK")
    (tmp_path / "last.npz").write_bytes(b"kept")
    (tmp_path / "notes.tmp").write_bytes(b"kept too")
    assert remove_temporaries(tmp_path) == [".last.npz.abc123.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.npz", "notes.tmp"]


def test_ctrl_c_during_a_step_lets_the_step_finish_first():
    """SIGINT inside the block is held until the block ends, then raised; afterwards Ctrl-C
    interrupts at once again."""
    finished = []
    with pytest.raises(KeyboardInterrupt):
        with holding_interrupts():
            signal.raise_signal(signal.SIGINT)
            finished.append("the rest of the step")
    assert finished == ["the rest of the step"]
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
        finished.append("not reached")
    assert len(finished) == 1


def _wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.005)


def _check_run_folder(folder: Path) -> list:
    """Every checkpoint, metrics.csv and config.json in ``folder`` reads; the checkpoints'
    epochs are returned."""
    epochs = []
    for name in CHECKPOINTS:
        if (folder / name).exists():
            arrays, header = read_checkpoint(folder / name)
            assert all(np.isfinite(a).all() for k, a in arrays.items() if k.startswith("param/"))
            epochs.append(header["epoch"])
    if (folder / "metrics.csv").exists():
        rows = list(csv.DictReader(open(folder / "metrics.csv")))
        assert [int(row["epoch"]) for row in rows] == list(range(1, len(rows) + 1))
    if (folder / "config.json").exists():
        assert json.loads((folder / "config.json").read_text())["model"] == "RNNAdding"
    return epochs


def test_a_run_killed_at_random_moments_resumes_every_time(tmp_path):
    """SIGKILL at seeded random moments: once during start-up, then each time a little after
    the run has saved progress (between or inside file writes). After each kill every file
    left is readable and the run resumes from it; the last resume finishes with every epoch
    in its history exactly once."""
    out, epochs = tmp_path / "run", 300  # a few ms each, so kills land at every stage of a run
    command = [sys.executable, "-m", "seqgraph", "run", str(MODELS / "rnn_adding.sg"), "--out", str(out),
               "--quiet", "--epochs", str(epochs), "--size", "hidden=8"]
    for setting in SMALL:
        command += ["--set", setting]
    moments = random.Random(8)
    last, resumed, killed = out / "last.npz", 0, 0
    for attempt in range(5):
        saved = last.stat().st_mtime_ns if last.exists() else None
        resume = ["--resume"] if any((out / name).exists() for name in CHECKPOINTS) else []
        process = subprocess.Popen(command + resume, cwd=tmp_path, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        if attempt == 0:  # somewhere in start-up or the first epochs
            time.sleep(moments.uniform(0.2, 1.5))
        else:  # once this run has saved progress, a moment later: between or inside writes
            _wait_until(lambda: process.poll() is not None or
                        (last.exists() and last.stat().st_mtime_ns != saved))
            time.sleep(moments.uniform(0.0, 0.3))
        if process.poll() is None:
            process.kill()
            killed += 1
        _, errors = process.communicate()
        assert process.returncode in (0, -signal.SIGKILL), errors.decode()
        resumed += bool(resume)
        _check_run_folder(out)
    finished = subprocess.run(command + ["--resume"], cwd=tmp_path, capture_output=True, timeout=120)
    assert finished.returncode == 0, finished.stderr.decode()
    assert resumed >= 3 and killed >= 3
    history = read_checkpoint(out / "final.npz")[1]["history"]
    assert [row["epoch"] for row in history] == list(range(1, epochs + 1))
    assert max(_check_run_folder(out)) == epochs
    assert not list(out.glob(".*.tmp"))


# --- damaged and mismatched checkpoints ---------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished small char-LSTM run (a checkpoint both run --resume and sample read)."""
    folder = tmp_path_factory.mktemp("trained")
    run(MODELS / "char_lstm.sg", epochs=1, out=folder, sizes={"hidden": 8},
        settings=["steps = 2", "examples = 3000", "sample = 0", "valid = 0.1"], **QUIET)
    return folder


def _rewrite(source: Path, target: Path, change) -> Path:
    with np.load(source, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    header = json.loads(bytes(arrays.pop(HEADER)).decode())
    change(arrays, header)
    arrays[HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(target, **arrays)
    return target


def _without(key):
    return lambda arrays, header: arrays.pop(key)


def _reshaped(key):
    return lambda arrays, header: arrays.update({key: np.zeros((3, 3), np.float32)})


def _header(**values):
    return lambda arrays, header: header.update(values)


def _nan_param(arrays, header):
    arrays["param/dense_0.bias"] = np.full_like(arrays["param/dense_0.bias"], np.nan)


def _bad_optimizer_state(arrays, header):
    arrays["optim/exp_avg/dense_0.bias"] = np.zeros(7, np.float32)


DAMAGE = {
    "truncated": (lambda data: data[: len(data) // 2], "is corrupt or truncated and cannot be read"),
    "empty": (lambda data: b"", "is empty"),
    "random bytes": (lambda data: bytes(random.Random(1).randrange(256) for _ in range(999)),
                     "is not an .npz file (it is not a zip archive)"),
    "flipped bytes": (lambda data: data[:200] + bytes(b ^ 0xFF for b in data[200:260]) + data[260:],
                      "is corrupt or truncated"),
}
MISMATCH = {
    "other sizes": (_header(sizes={"vocab": 40, "embed": 32, "hidden": 8}),
                    r"was saved from model CharLSTM with sizes \{'vocab': 40"),
    "other model": (_header(model="GRUTagger"), "was saved from model GRUTagger"),
    "missing key": (_without("param/dense_0.bias"), "does not match model CharLSTM: missing dense_0.bias"),
    "other shape": (_reshaped("param/dense_0.bias"), "parameter 'dense_0.bias' has shape \\(3, 3\\)"),
    "no header fields": (lambda arrays, header: header.pop("epoch"), "damaged checkpoint: its header lacks epoch"),
    "not a checkpoint": (_header(kind="params"), "is not a seqgraph training checkpoint"),
    "non-finite": (_nan_param, "parameter 'dense_0.bias' holds NaN or infinite values"),
    "optimizer state": (_bad_optimizer_state, "optimiser state 'exp_avg/dense_0.bias' has shape \\(7,\\)"),
}


def _resume(trained, checkpoint):
    run(MODELS / "char_lstm.sg", epochs=2, out=checkpoint.parent, resume=str(checkpoint),
        sizes={"hidden": 8}, settings=["steps = 2", "examples = 3000", "sample = 0", "valid = 0.1"],
        **QUIET)


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_a_damaged_checkpoint_is_a_clear_error(trained, tmp_path, case):
    damage, message = DAMAGE[case]
    broken = tmp_path / "last.npz"
    broken.write_bytes(damage((trained / "last.npz").read_bytes()))
    for load in (lambda: _resume(trained, broken), lambda: sample(broken)):
        with pytest.raises(SeqgraphError) as caught:
            load()
        assert caught.value.message.startswith(str(broken))
        assert message in caught.value.message


@pytest.mark.parametrize("case", sorted(MISMATCH))
def test_a_mismatched_checkpoint_is_a_clear_error(trained, tmp_path, case):
    change, message = MISMATCH[case]
    broken = _rewrite(trained / "last.npz", tmp_path / "last.npz", change)
    with pytest.raises(SeqgraphError, match=message) as caught:
        _resume(trained, broken)
    assert str(broken) in caught.value.message


def test_a_damaged_header_is_a_clear_error(trained, tmp_path):
    with np.load(trained / "last.npz", allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays[HEADER] = np.frombuffer(b"{not json", dtype=np.uint8)
    np.savez(tmp_path / "last.npz", **arrays)
    with pytest.raises(SeqgraphError, match="last.npz is corrupt: its header is not readable JSON"):
        load_arrays(tmp_path / "last.npz")
