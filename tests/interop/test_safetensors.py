"""safetensors beside .npz: parameters and checkpoints round-trip exactly, every place that
reads weights takes either format by its extension, and a damaged file is a clear error."""

from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph import SeqgraphError
from seqgraph.cli import main
from seqgraph.train import optim
from seqgraph.train.checkpoint import read_checkpoint, read_params, restore, save_checkpoint
from seqgraph.train.run import run
from seqgraph.weights import HEADER, load_params, save_params

safetensors = pytest.importorskip("safetensors.numpy")

MODELS = Path(__file__).resolve().parents[2] / "models"
QUIET = dict(progress=False, echo=lambda *args: None)
TINY = ["steps = 2", "examples = 64", 'data = builtin("adding", length = 6)']


def _network(dtype="float64", seed=0):
    model = sg.load(MODELS / "lstm_adding.sg").model().with_sizes(hidden=5)
    return sg.compile(model, dtype=dtype, seed=seed)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_params_round_trip_through_safetensors_exactly(tmp_path, dtype):
    saved, loaded = _network(dtype, seed=1), _network(dtype, seed=2)
    assert not np.array_equal(saved.params["lstm_0.weight_ih"], loaded.params["lstm_0.weight_ih"])
    path = tmp_path / "weights.safetensors"
    save_params(saved, path)
    load_params(loaded, path)
    assert sorted(loaded.params) == sorted(saved.params)
    for key, value in saved.params.items():
        assert loaded.params[key].dtype == value.dtype
        assert np.array_equal(loaded.params[key], value), key


def test_the_file_is_plain_safetensors_with_our_header_as_metadata(tmp_path):
    network = _network()
    path = tmp_path / "weights.safetensors"
    save_params(network, path)
    arrays = safetensors.load_file(path)
    assert sorted(arrays) == sorted(network.params)
    np.testing.assert_array_equal(arrays["dense_0.weight"], network.params["dense_0.weight"])
    from safetensors import safe_open
    with safe_open(str(path), framework="np") as file:
        assert '"model": "LSTMAdding"' in file.metadata()[HEADER]
    params, sizes = read_params(path)
    assert sizes == {"hidden": 5} and sorted(params) == sorted(network.params)


def test_a_checkpoint_round_trips_through_safetensors_with_its_optimiser_state(tmp_path):
    network = _network()
    optimizer = optim.make_optimizer("adam", lr=0.01)
    x = np.random.default_rng(0).normal(size=(4, 3, 2))
    batch = {"x": x, "y": np.ones((3, 1))}
    network.forward(batch)
    optimizer.step(network.params, network.backward())
    header = {"epoch": 1, "batch": 2, "history": [{"epoch": 0, "loss": 1.5}]}
    save_checkpoint(tmp_path / "last.safetensors", network, optimizer, header)

    arrays, read_header = read_checkpoint(tmp_path)  # a run folder holding only last.safetensors
    assert read_header["path"].endswith("last.safetensors") and read_header["epoch"] == 1
    fresh, fresh_optimizer = _network(seed=5), optim.make_optimizer("adam", lr=0.01)
    restore(fresh, fresh_optimizer, arrays, read_header)
    for key, value in network.params.items():
        assert np.array_equal(fresh.params[key], value), key
    ours, theirs = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert sorted(ours) == sorted(theirs)
    for key, value in ours.items():
        assert np.array_equal(np.asarray(theirs[key]), np.asarray(value)), key
    # one more step from each gives the same weights again
    for net, opt in ((network, optimizer), (fresh, fresh_optimizer)):
        net.forward(batch)
        opt.step(net.params, net.backward())
    for key, value in network.params.items():
        assert np.array_equal(fresh.params[key], value), key


def test_resume_init_and_grads_take_safetensors_files(tmp_path, capsys):
    model = MODELS / "rnn_adding.sg"
    trained = run(model, epochs=1, out=tmp_path / "run", sizes={"hidden": 4}, settings=TINY, **QUIET)
    arrays, header = read_checkpoint(tmp_path / "run" / "final.npz")
    converted = tmp_path / "converted"
    network = trained.net
    from seqgraph.weights import save_arrays
    save_arrays(converted / "last.safetensors", arrays, {k: v for k, v in header.items() if k != "path"})

    resumed = run(model, epochs=2, out=converted, resume=str(converted), sizes={"hidden": 4},
                  settings=TINY, **QUIET)
    assert resumed.epoch == 2 and len(resumed.history) == 2
    assert resumed.history[0] == trained.history[0]

    weights = tmp_path / "weights.safetensors"
    save_params(network, weights)
    started = run(model, epochs=1, lr=0.0, out=tmp_path / "started", init=str(weights), sizes={"hidden": 4},
                  settings=TINY, **QUIET)
    for key, value in network.params.items():
        assert np.array_equal(started.net.params[key], value), key

    assert main(["grads", str(model), "--weights", str(weights), "--inputs", "random", "--steps", "4",
                 "--out", str(tmp_path / "g.png")]) == 0
    assert f"weights of {weights}" in capsys.readouterr().out


@pytest.mark.parametrize("damage, message", [
    (lambda data: b"", "is empty"),
    (lambda data: data[: len(data) // 2], "is not a readable safetensors file"),
    (lambda data: b"not a safetensors file at all", "is not a readable safetensors file"),
])
def test_a_damaged_safetensors_file_is_a_clear_error(tmp_path, damage, message):
    good = tmp_path / "good.safetensors"
    save_params(_network(), good)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(damage(good.read_bytes()))
    with pytest.raises(SeqgraphError, match=message) as caught:
        load_params(_network(), broken)
    assert caught.value.message.startswith(str(broken))
    assert main(["grads", str(MODELS / "lstm_adding.sg"), "--weights", str(broken)]) == 1
