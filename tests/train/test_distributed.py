"""Data-parallel training: 2 ranks under mpiexec against 1 process with twice the batch, a
rank that dies, an interrupted run resumed on another number of ranks; and the pieces that
need no MPI (shards, threads, the NCCL path with stand-ins for CuPy)."""

import os
import shutil
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from seqgraph.errors import SeqgraphError
from seqgraph.train import distributed
from seqgraph.train.checkpoint import read_checkpoint

MODELS = Path(__file__).resolve().parents[2] / "models"
WORKER = Path(__file__).with_name("mpi_worker.py")
TIMEOUT = 120
# 20 steps each: the LM is 2 epochs of 10 truncated-BPTT windows (the state carried between
# them); the classifier's 315 training examples end each epoch on a batch of 27 (ranks of 13
# and 14 examples), the translator's 293 on a batch of 5 (2 and 3 sequences of their own
# lengths), so the ranks' losses average over different counts.
LANGUAGE_MODEL = ("char_lstm.sg", "bptt = 8", "steps = 10", "epochs = 2", "examples = 6000",
                  "valid = 0.05", "sample = 0", "size:hidden=16", "size:embed=8")
VARIABLE_LENGTHS = {"classifier": ("bilstm_classifier.sg", "examples = 350", "epochs = 2", "size:hidden=8"),
                    "seq2seq": ("seq2seq_attention.sg", "examples = 326", "epochs = 2", "size:hidden=16")}


def _mpiexec():
    beside = Path(sys.executable).with_name("mpiexec")
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def _launch(ranks: int, result: Path, out: Path, model: str, *options) -> list:
    command = [sys.executable, str(WORKER), str(result), str(MODELS / model), str(out), *options]
    return [_mpiexec(), "-n", str(ranks), *command] if ranks > 1 else command


def _train(tmp_path, name: str, ranks: int, batch: int, model: str, *options, code: int = 0) -> dict:
    """Train with ``ranks`` ranks of ``batch`` each; the losses and parameters rank 0 saved."""
    result = tmp_path / f"{name}.npz"
    done = subprocess.run(_launch(ranks, result, tmp_path / name.split("-")[0], model, f"batch = {batch}",
                                  *options), capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == code, done.stdout + done.stderr
    return dict(np.load(result))


def _assert_same(one: dict, two: dict) -> None:
    assert len(one["losses"]) == 20
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=0, atol=1e-10)
    keys = [key for key in one if key.startswith("param/")]
    assert keys and sorted(keys) == sorted(k for k in two if k.startswith("param/"))
    for key in keys:
        np.testing.assert_allclose(two[key], one[key], rtol=0, atol=1e-10, err_msg=key)


@pytest.fixture(scope="module")
def mpi():
    pytest.importorskip("mpi4py")
    if _mpiexec() is None:
        pytest.skip("mpiexec is not installed")


@pytest.fixture(scope="module")
def language_model_alone(tmp_path_factory, mpi):
    return _train(tmp_path_factory.mktemp("alone"), "alone", 1, 32, *LANGUAGE_MODEL)


def test_two_ranks_of_16_train_a_language_model_as_one_process_of_32(tmp_path, language_model_alone):
    two = _train(tmp_path, "two", 2, 16, *LANGUAGE_MODEL)
    _assert_same(language_model_alone, two)
    other = np.load(tmp_path / "two.npz.rank1.npz")
    for key in language_model_alone:
        if key.startswith("param/"):  # every rank applied the same update: the same bits
            np.testing.assert_array_equal(other[key], two[key], err_msg=key)


@pytest.mark.parametrize("model", VARIABLE_LENGTHS)
def test_two_ranks_of_16_train_on_variable_lengths_as_one_process_of_32(tmp_path, mpi, model):
    one = _train(tmp_path, "one", 1, 32, *VARIABLE_LENGTHS[model])
    _assert_same(one, _train(tmp_path, "two", 2, 16, *VARIABLE_LENGTHS[model]))


def test_run_interrupted_on_two_ranks_resumes_on_one(tmp_path, language_model_alone):
    """Ctrl-C on rank 0 during step 12 stops both ranks after step 13, mid-epoch, with the
    carried LSTM states of both ranks' columns in the checkpoint; one process of batch 32
    goes on from there as if never stopped."""
    first = _train(tmp_path, "run-two", 2, 16, *LANGUAGE_MODEL, "interrupt:12", code=130)
    assert len(first["losses"]) == 14
    header = read_checkpoint(tmp_path / "run" / "last.npz")[1]
    assert (header["epoch"], header["batch"]) == (1, 4)
    rest = _train(tmp_path, "run-one", 1, 32, *LANGUAGE_MODEL, "resume")
    joined = {**rest, "losses": np.concatenate([first["losses"], rest["losses"]])}
    _assert_same(language_model_alone, joined)


@pytest.mark.parametrize("how", ["killed", "raises"])
def test_a_rank_that_stops_stops_every_rank_and_the_checkpoint_stays_readable(tmp_path, mpi, how):
    out = tmp_path / "run"
    options = [*LANGUAGE_MODEL[1:], "epochs = 100", "steps = 3"]
    if how == "raises":
        options.append("fail:10")
    process = subprocess.Popen(_launch(2, tmp_path / "result.npz", out, LANGUAGE_MODEL[0], "batch = 4",
                                       *options), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        if how == "killed":
            deadline = time.monotonic() + TIMEOUT
            while not (out / "last.npz").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            os.kill(int((out / "rank1.pid").read_text()), signal.SIGKILL)
        output, _ = process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()
    assert process.returncode != 0
    if how == "killed":  # the launcher's words: MPICH's, or Open MPI's
        assert "signal 9" in output or "Killed" in output, output
    else:
        assert "rank 1 of 2 stopped: error: a failure on rank 1 alone" in output
        assert "stopping all 2 ranks" in output
    header = read_checkpoint(out / "last.npz")[1]
    assert header["epoch"] >= 1 and header["history"]


def test_ranks_with_different_data_stop_with_one_error_instead_of_waiting(tmp_path, mpi):
    result = subprocess.run(_launch(2, tmp_path / "result.npz", tmp_path / "run", *LANGUAGE_MODEL,
                                    "batch = 16", "rank1:examples = 9000"),
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 1
    assert result.stderr.count("error: the ranks' training data differ: rank 0 has 23 batches, "
                               "rank 1 has 34") == 1, result.stderr


# --- without MPI ------------------------------------------------------------------------------


def test_shards_cover_a_batch_in_rank_order():
    parts = [distributed.shard(27, rank, 2) for rank in range(2)]
    assert parts == [slice(0, 13), slice(13, 27)]
    assert [distributed.shard(1, rank, 3) for rank in range(3)] == [slice(0, 0), slice(0, 0), slice(0, 1)]


def test_threads_per_rank_never_oversubscribe_the_cores():
    assert distributed.threads_per_rank(local_ranks=2, cores=2, allowed=2) == 1
    assert distributed.threads_per_rank(local_ranks=3, cores=16, allowed=16) == 5
    assert distributed.threads_per_rank(local_ranks=4, cores=2, allowed=2) == 1
    assert distributed.threads_per_rank(local_ranks=4, cores=16, allowed=4) == 4  # bound by the launcher


def test_a_launch_on_several_ranks_without_mpi4py_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("PMI_SIZE", "4")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py fails
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    distributed.world.cache_clear()
    try:
        with pytest.raises(SeqgraphError, match="started 4 processes, but mpi4py is not installed"):
            distributed.world()
    finally:
        distributed.world.cache_clear()


def test_without_a_launcher_training_is_not_distributed(monkeypatch):
    for name in distributed.LAUNCHER_SIZES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    distributed.world.cache_clear()
    assert distributed.world() is None


class _DeviceArray(np.ndarray):
    """A NumPy array standing in for a CuPy one: ``.data.ptr`` is its address."""

    @property
    def data(self):
        return types.SimpleNamespace(ptr=self.__array_interface__["data"][0])


def test_nccl_sums_one_fused_device_buffer_bootstrapped_over_mpi(monkeypatch):
    """The NCCL path with stand-ins for cupy.cuda.nccl and MPI (it has not run on a GPU here):
    rank 0's unique id goes to every rank through MPI, and a step is one allReduce of the whole
    buffer, in place, on the current stream."""
    calls = []
    buffers = {}

    class Communicator:
        def __init__(self, size, unique_id, rank):
            calls.append(("init", size, unique_id, rank))

        def allReduce(self, send, receive, count, dtype, op, stream):
            calls.append(("allReduce", send == receive, count, dtype, op, stream))
            buffers[send][...] *= 2  # the sum over two ranks holding the same numbers

        def bcast(self, pointer, count, dtype, root, stream):
            calls.append(("bcast", count, dtype, root))

    nccl = types.SimpleNamespace(get_unique_id=lambda: b"id-of-rank-0", NcclCommunicator=Communicator,
                                 NCCL_FLOAT32=7, NCCL_FLOAT64=8, NCCL_SUM=0)
    cuda = types.SimpleNamespace(nccl=nccl, get_current_stream=lambda: types.SimpleNamespace(ptr=42))
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    monkeypatch.setitem(sys.modules, "cupy.cuda.nccl", nccl)
    comm = types.SimpleNamespace(bcast=lambda value, root: calls.append(("mpi bcast", value, root)) or value)
    world = types.SimpleNamespace(comm=comm, rank=0, size=2)
    reducer = distributed.NcclReducer(world, sys.modules["cupy"])

    params = {"w": np.arange(6.0).reshape(2, 3), "b": np.ones(2)}
    fused = distributed.FusedBuffer(np, params, extra=4)
    fused.flat = fused.flat.view(_DeviceArray)
    buffers[fused.flat.data.ptr] = fused.flat
    fused.pack(params, scale=0.5)
    reducer.sum(fused.flat)
    assert calls == [("mpi bcast", b"id-of-rank-0", 0), ("init", 2, b"id-of-rank-0", 0),
                     ("allReduce", True, 12, 8, 0, 42)]
    np.testing.assert_array_equal(fused.views()["w"], params["w"])
    np.testing.assert_array_equal(fused.views()["b"], params["b"])
