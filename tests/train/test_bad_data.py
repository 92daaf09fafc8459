"""Bad data and files that would run code: each is a SeqgraphError naming the file and what
is wrong, and nothing in a file is ever unpickled."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from seqgraph import SeqgraphError
from seqgraph.train.data import load_npz
from seqgraph.train.run import run, sample
from seqgraph.weights import HEADER, load_arrays

MODELS = Path(__file__).resolve().parents[2] / "models"
QUIET = dict(progress=False, echo=lambda *args: None)
QUICK = ["steps = 1", "valid = 0", "sample = 0"]


def _train(model: str, data: Path, *settings):
    return run(MODELS / model, data=str(data), out=data.parent / "out", epochs=1, settings=QUICK + list(settings),
               **QUIET)


def _error(model: str, data: Path, *settings) -> SeqgraphError:
    with pytest.raises(SeqgraphError) as caught:
        _train(model, data, *settings)
    return caught.value


# --- text ---------------------------------------------------------------------------------------

def test_an_empty_text_file(tmp_path):
    (tmp_path / "empty.txt").write_bytes(b"")
    error = _error("char_lstm.sg", tmp_path / "empty.txt")
    assert error.message == f"text file '{tmp_path / 'empty.txt'}' is empty"


def test_a_text_file_holding_only_a_byte_order_mark_is_empty(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbf")
    assert _error("char_lstm.sg", tmp_path / "bom.txt").message.endswith("bom.txt' is empty")


def test_undecodable_text_names_the_byte_and_its_place(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("first line\nun caf\u00e9 noir\n".encode("latin-1"))
    error = _error("char_lstm.sg", tmp_path / "latin1.txt")
    assert error.message == (f"text file '{tmp_path / 'latin1.txt'}' is not valid UTF-8: byte 0xe9 at "
                             "offset 17 cannot be decoded")
    assert (error.span.line, error.span.col) == (2, 7)
    assert "iconv" in error.hint


def test_a_missing_file(tmp_path):
    assert _error("char_lstm.sg", tmp_path / "nowhere.txt").message == \
        f"text file '{tmp_path / 'nowhere.txt'}' does not exist"


# --- arrays ---------------------------------------------------------------------------------------

X = np.random.default_rng(0).random((10, 5, 2)).astype(np.float32)
Y = X[:, :, 0].sum(1, keepdims=True)
IDS = np.random.default_rng(0).integers(0, 10, (6, 4))


def _npz(tmp_path, name="data.npz", **arrays) -> Path:
    np.savez(tmp_path / name, **arrays)
    return tmp_path / name


@pytest.mark.parametrize("arrays, message", [
    (dict(x=np.zeros((10, 5, 3), np.float32), y=Y),
     "array 'x' has shape (10, 5, 3), but the model's 'x' is seq[float, 2]: it needs (examples, steps, 2)"),
    (dict(x=np.zeros((10, 5), np.float32), y=Y),
     "array 'x' has shape (10, 5), but the model's 'x' is seq[float, 2]: it needs (examples, steps, 2)"),
    (dict(x=X, y=np.zeros((10, 2), np.float32)),
     "array 'y' has shape (10, 2), but the model's 'y' is [1]: it needs (examples, 1)"),
])
def test_arrays_of_the_wrong_shape_for_the_model(tmp_path, arrays, message):
    path = _npz(tmp_path, **arrays)
    error = _error("rnn_adding.sg", path)
    assert error.message == f"data '{path}': {message}"
    assert error.span.filename == str(MODELS / "rnn_adding.sg")  # the input's declaration


@pytest.mark.parametrize("arrays, message", [
    (dict(x=X.astype(bool), y=Y), "array 'x' has dtype bool; seqgraph reads only float and integer arrays"),
    (dict(x=X.astype(complex), y=Y), "array 'x' has dtype complex128; seqgraph reads only float and "
                                      "integer arrays"),
    (dict(x=np.array(["a", "b"]), y=Y[:2]), "array 'x' has dtype <U1"),
    (dict(x=X, y=Y[:7]), "arrays disagree on the number of examples ('x' has 10, 'y' has 7)"),
    (dict(x=X[:0], y=Y[:0]), "holds no examples (its arrays have length 0)"),
    (dict(x=X[:, :0], y=Y), "array 'x' is a sequence of no steps (shape (10, 0, 2))"),
    (dict(x=np.where(X > 0.5, np.nan, X), y=Y), "array 'x' holds NaN or infinite values"),
    (dict(x=X, y=Y, lengths=np.full(10, 6)),
     "array 'lengths': example 0 has length 6, longer than the data: 'x' holds only 5 steps"),
    (dict(x=X, y=Y, lengths=np.array([5] * 9 + [-2])),
     "array 'lengths': example 9 has length -2; every sequence needs at least one step"),
    (dict(x=X, y=Y, lengths=np.full(10, 2.5)), "array 'lengths' has dtype float64; lengths are integers"),
    (dict(x=X), "has no array for 'y'"),
    (dict(lengths=np.full(10, 3)), "holds only lengths, no data arrays"),
])
def test_bad_arrays_are_refused_naming_the_file(tmp_path, arrays, message):
    path = _npz(tmp_path, **arrays)
    error = _error("rnn_adding.sg", path)
    assert message in error.message
    assert str(path) in error.message


def test_ids_out_of_the_models_range(tmp_path):
    ids = IDS.copy()
    ids[2, 3] = 12
    path = _npz(tmp_path, x=ids, y=IDS)
    error = _error("gru_tagger.sg", path)
    assert error.message == (f"data '{path}': array 'x' holds id 12 (at index (2, 3)), but the model's "
                             "'x' is seq[int, 10]: ids 0..9")
    assert str(error.span) == f"{MODELS / 'gru_tagger.sg'}:10:12"
    negative = _npz(tmp_path, "negative.npz", x=IDS, y=np.where(IDS == IDS[1, 1], -1, IDS))
    assert "array 'y' holds a negative id (-1 at index (1, 1)); ids and labels count from 0" in \
        _error("gru_tagger.sg", negative).message


def test_float_values_where_the_model_takes_ids(tmp_path):
    path = _npz(tmp_path, x=IDS.astype(np.float64), y=IDS)
    error = _error("gru_tagger.sg", path)
    assert error.message == (f"data '{path}': array 'x' holds float64 values, but the model's 'x' is "
                             "seq[int, 10]: integer ids")
    assert error.hint == "save it with x.astype(np.int64)"


def test_good_arrays_train(tmp_path):
    trainer = _train("rnn_adding.sg", _npz(tmp_path, x=X, y=Y))
    assert np.isfinite(trainer.history[0]["train_loss"])


@pytest.mark.parametrize("content, message", [
    (b"", "is empty"),
    (b"\x93NUMPY\x01\x00", "is an .npy file holding one unnamed array"),
    (b"hello, world", "is not an .npz file (it is not a zip archive)"),
    (b"PK\x03\x04 and then nothing", "is corrupt or truncated and cannot be read"),
])
def test_files_that_are_not_npz_archives(tmp_path, content, message):
    (tmp_path / "data.npz").write_bytes(content)
    assert message in _error("rnn_adding.sg", tmp_path / "data.npz").message


# --- no code from files ---------------------------------------------------------------------------

class Payload:
    """Unpickling this creates the file ``marker``: proof that code from a file ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_the_payload_would_run_if_unpickled(tmp_path):
    """The control: without seqgraph's refusal, loading the payload runs its code."""
    pickle.loads(pickle.dumps(Payload(tmp_path / "ran")))
    assert (tmp_path / "ran").exists()


def test_a_pickled_object_in_data_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = _npz(tmp_path, x=np.array([Payload(marker)], dtype=object), y=Y[:1])
    error = _error("rnn_adding.sg", path)
    assert error.message.startswith(f"data file '{path}': array 'x' holds Python objects, which would have "
                                    "to be unpickled; seqgraph refuses pickled objects")
    with pytest.raises(SeqgraphError, match="refuses pickled objects"):
        load_npz(path)
    pickled = tmp_path / "pickled.npz"  # a pickle under an .npz name
    pickled.write_bytes(pickle.dumps({"x": Payload(marker)}))
    assert "is a Python pickle; seqgraph refuses pickled data" in _error("rnn_adding.sg", pickled).message
    assert not marker.exists()


def test_a_pickled_object_in_a_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    run(MODELS / "char_lstm.sg", epochs=1, out=tmp_path / "run", sizes={"hidden": 8},
        settings=["steps = 1", "examples = 2000", "sample = 0", "valid = 0.1"], **QUIET)
    checkpoint = tmp_path / "run" / "last.npz"
    with np.load(checkpoint, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    arrays["param/dense_0.bias"] = np.array([Payload(marker)], dtype=object)
    np.savez(checkpoint, **arrays)
    for load in (lambda: load_arrays(checkpoint), lambda: sample(tmp_path / "run"),
                 lambda: run(MODELS / "char_lstm.sg", epochs=2, out=tmp_path / "run", resume=str(checkpoint),
                             sizes={"hidden": 8}, settings=["steps = 1", "examples = 2000"], **QUIET)):
        with pytest.raises(SeqgraphError) as caught:
            load()
        assert caught.value.message.startswith(f"{checkpoint}: array 'param/dense_0.bias' holds Python "
                                               "objects")
    header = json.loads(bytes(arrays.pop(HEADER)).decode())
    assert header["kind"] == "checkpoint"
    (tmp_path / "evil.npz").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(SeqgraphError, match="is a Python pickle"):
        sample(tmp_path / "evil.npz")
    assert not marker.exists()


def test_no_module_can_unpickle():
    """Every numpy.load in the package passes allow_pickle=False, and nothing imports pickle."""
    import ast

    package = Path(__file__).resolve().parents[2] / "seqgraph"
    loads = 0
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "cPickle", "dill", "joblib"} & set(names), path
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    node.func.attr == "load" and getattr(node.func.value, "id", "") in ("np", "numpy"):
                loads += 1
                keywords = {k.arg: k.value for k in node.keywords}
                assert getattr(keywords.get("allow_pickle"), "value", None) is False, \
                    f"{path.name}:{node.lineno} calls numpy.load without allow_pickle=False"
    assert loads >= 1
