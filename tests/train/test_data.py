"""Datasets: the built-in generators, batching, BPTT windows, and loading a user's files."""

import math
import pickle
import re

import numpy as np
import pytest

from seqgraph.errors import SeqgraphError
from seqgraph.train import data as D
from seqgraph.train.data import grammar
from seqgraph.train.data import (BUILTIN, CharCorpus, Dataset, batches, bptt_windows, builtin,
                                 load_npz, load_text, rename, split, unigram_entropy)


def arrays_equal(a: Dataset, b: Dataset) -> bool:
    return a.arrays.keys() == b.arrays.keys() and all(
        np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)


SMALL = {"grammar_text": 5_000, "digits8x8": 200}  # sizes that keep the tests fast


# ------------------------------------------------------------------ every generator


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_generators_are_deterministic_from_the_seed(name):
    n = SMALL.get(name, 300)
    a, b, c = builtin(name, n, seed=3), builtin(name, n, seed=3), builtin(name, n, seed=4)
    assert arrays_equal(a, b)
    assert not arrays_equal(a, c)
    assert a.metric in D.METRICS and a.kind in D.KINDS


@pytest.mark.parametrize("name", sorted(set(BUILTIN) - {"grammar_text"}))
def test_generators_make_n_examples_with_ids_in_range(name):
    data = builtin(name, 300)
    assert len(data) == 300
    for key, array in data.arrays.items():
        assert array.shape[0] == 300
        if array.dtype.kind == "i":
            assert array.dtype == np.int64 and array.min() >= 0
            limit = data.vocab_size if key in ("x", "src") else data.num_classes
            assert array.max() < limit, key


def test_adding_targets_are_the_sums_of_the_marked_values():
    data = builtin("adding", 500, seed=1, length=20)
    x, y = data.arrays["x"], data.arrays["y"]
    assert x.shape == (500, 20, 2) and x.dtype == np.float32
    assert y.shape == (500, 1) and y.dtype == np.float32
    values, marker = x[..., 0], x[..., 1]
    assert values.min() >= 0 and values.max() < 1
    assert set(np.unique(marker)) == {0.0, 1.0}
    assert (marker[:, :10].sum(axis=1) == 1).all()   # one mark in the first half
    assert (marker[:, 10:].sum(axis=1) == 1).all()   # and one in the second
    np.testing.assert_allclose(y[:, 0], (values * marker).sum(axis=1), rtol=1e-6)
    assert data.time_axes == {"x": "time"} and data.lengths is None and data.metric == "mse"


def test_copy_task_recalls_the_symbols_after_the_delimiter():
    data = builtin("copy", 50, symbols=5, count=4, delay=7)
    x, y = data.arrays["x"], data.arrays["y"]
    steps = 2 * 4 + 7 + 1
    assert x.shape == y.shape == (50, steps)
    symbols = x[:, :4]
    assert symbols.min() >= 1 and symbols.max() <= 5
    assert (x[:, 4:11] == 0).all() and (x[:, 11] == 6).all() and (x[:, 12:] == 0).all()
    assert (y[:, :12] == 0).all()
    np.testing.assert_array_equal(y[:, 12:], symbols)
    assert data.metric_steps == (12, 16)
    assert data.vocab_size == data.num_classes == 7


def test_parity_labels_count_the_ones_in_the_valid_steps():
    data = builtin("parity", 400, min_length=3, max_length=9)
    x, label, lengths = data.arrays["x"], data.arrays["label"], data.lengths["time"]
    assert x.shape == (400, 9) and label.shape == (400,)
    assert lengths.min() >= 3 and lengths.max() <= 9 and len(set(lengths)) > 3
    for row, n, lab in zip(x, lengths, label):
        assert (row[n:] == 0).all()
        assert lab == row[:n].sum() % 2
    assert 0.35 < label.mean() < 0.65


def test_majority_labels_and_no_ties():
    data = builtin("majority", 400, symbols=4, min_length=4, max_length=11)
    x, label, lengths = data.arrays["x"], data.arrays["label"], data.lengths["time"]
    ones, twos = (x == 1).sum(axis=1), (x == 2).sum(axis=1)
    assert (ones != twos).all()
    np.testing.assert_array_equal(label, ones > twos)
    assert ((x > 0).sum(axis=1) == lengths).all()  # ids 1..symbols, padding 0
    assert 0.3 < label.mean() < 0.7


@pytest.mark.parametrize("task, expect", [("reverse", lambda s: s[::-1]), ("sort", sorted)])
def test_seq2seq_targets(task, expect):
    data = builtin(task, 200, symbols=6, min_length=2, max_length=8)
    src, tgt_in, tgt_out = (data.arrays[k] for k in ("src", "tgt_in", "tgt_out"))
    bos, eos = data.info["bos"], data.info["eos"]
    assert src.shape == (200, 8) and tgt_in.shape == tgt_out.shape == (200, 9)
    np.testing.assert_array_equal(data.lengths["tgt"], data.lengths["src"] + 1)
    for i, n in enumerate(data.lengths["src"]):
        target = list(expect(list(src[i, :n])))
        assert min(src[i, :n]) >= 3 and (src[i, n:] == 0).all()
        assert list(tgt_in[i, :n + 1]) == [bos] + target and (tgt_in[i, n + 1:] == 0).all()
        assert list(tgt_out[i, :n + 1]) == target + [eos] and (tgt_out[i, n + 1:] == 0).all()
    assert data.time_axes == {"src": "src", "tgt_in": "tgt", "tgt_out": "tgt"}


def test_digits_are_8x8_images_with_class_structure():
    data = builtin("digits8x8", 600, seed=2)
    img, label = data.arrays["img"], data.arrays["label"]
    assert img.shape == (600, 1, 8, 8) and img.dtype == np.float32
    assert img.min() >= 0 and img.max() <= 1 and img.max() > 0.9
    assert set(label) == set(range(10)) and data.num_classes == 10 and data.kind == "image"
    # classes differ: a nearest-class-mean rule trained on 400 beats chance by far on 200
    flat = img.reshape(600, -1)
    means = np.stack([flat[:400][label[:400] == k].mean(axis=0) for k in range(10)])
    guess = np.argmin(((flat[400:, None] - means[None]) ** 2).sum(axis=-1), axis=1)
    assert (guess == label[400:]).mean() > 0.5


def test_grammar_text_is_sentences_of_known_words():
    data = builtin("grammar_text", 20_000, seed=5)
    corpus = data.corpus()
    text = corpus.decode(data.arrays["ids"])
    assert 20_000 <= len(text) < 21_000
    assert data.kind == "text" and data.metric == "perplexity"
    assert data.vocab == sorted(set(text)) and data.vocab_size == len(data.vocab)
    lexicon = set()
    for table in (grammar._ANIMATE, grammar._THINGS, grammar._TRANSITIVE, grammar._INTRANSITIVE):
        lexicon.update(w for entry in table for w in entry)
    for table in (grammar._PLACES, grammar._ADJECTIVES, grammar._NAMES, grammar._SINGULAR_DETS,
                  grammar._PLURAL_DETS, grammar._PREPOSITIONS, grammar._ADVERBS, grammar._JOINERS,
                  grammar._SUBORDINATORS):
        lexicon.update(w for phrase in table for w in phrase.split())
    lexicon.update("an that he she they we do does did not said".split())
    words = set(re.findall(r"[A-Za-z]+", text))
    assert {w for w in words if w not in lexicon and w.lower() not in lexicon} == set()
    for mark in ".,?!\"\n":
        assert mark in text
    # agreement: a plain plural subject at the start of a sentence takes the plural verb
    assert re.search(r"(^|\. )The cats (see|like|chase)s\b", text) is None
    assert 2.5 < unigram_entropy(data.arrays["ids"]) < 3.5


def test_grammar_text_default_size_and_determinism():
    a = builtin("grammar_text")
    assert 200_000 <= len(a) <= 500_000
    assert np.array_equal(a.arrays["ids"], builtin("grammar_text").arrays["ids"])


def test_unigram_entropy_in_nats():
    assert unigram_entropy([0, 1, 2, 3] * 5) == pytest.approx(math.log(4))
    assert unigram_entropy([7, 7, 7]) == 0.0
    assert unigram_entropy([0, 0, 0, 1]) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))


def test_builtin_unknown_names_and_sizes():
    with pytest.raises(SeqgraphError, match="unknown built-in dataset 'addding'") as e:
        builtin("addding")
    assert "did you mean 'adding'" in e.value.hint
    with pytest.raises(SeqgraphError, match="no size 'lenght'") as e:
        builtin("adding", lenght=10)
    assert "did you mean 'length'" in e.value.hint
    with pytest.raises(SeqgraphError, match="length must be an integer of at least 2"):
        builtin("adding", length=1)
    with pytest.raises(SeqgraphError, match="min_length .* larger than max_length"):
        builtin("parity", min_length=9, max_length=3)


# ------------------------------------------------------------------ text and BPTT


def test_char_corpus_vocab_encode_decode():
    corpus = CharCorpus("héllo wörld ✓")
    assert corpus.vocab == sorted(set("héllo wörld ✓"))
    assert corpus.decode(corpus.ids) == "héllo wörld ✓"
    assert corpus.encode("lol").tolist() == [corpus.vocab.index(c) for c in "lol"]
    assert corpus.ids.dtype == np.int64
    with pytest.raises(SeqgraphError, match="not in the vocabulary: 'z'"):
        corpus.encode("zoo")
    assert CharCorpus.from_vocab(corpus.vocab).decode([1, 2]) == corpus.vocab[1] + corpus.vocab[2]


def test_bptt_windows_are_contiguous_streams_and_y_is_x_shifted():
    ids = np.arange(103) * 2  # y must be the next id, x + 2
    windows = list(bptt_windows(ids, batch_size=4, window=7))
    assert [x.shape for x, _ in windows] == [(7, 4), (7, 4), (7, 4), (4, 4)]  # 25 = 7+7+7+4
    xs = np.concatenate([x for x, _ in windows])
    ys = np.concatenate([y for _, y in windows])
    for b in range(4):  # column b is one contiguous stream of 25 ids across windows
        np.testing.assert_array_equal(xs[:, b], ids[b * 25:(b + 1) * 25])
    np.testing.assert_array_equal(ys, xs + 2)
    assert len(list(bptt_windows(ids, 4, 7, drop_last=True))) == 3
    with pytest.raises(SeqgraphError, match="too short"):
        list(bptt_windows(np.arange(4), batch_size=4, window=2))


def test_text_split_keeps_contiguous_text():
    data = D.text_dataset("abcdefghij" * 10)
    train, valid = split(data, 0.2)
    assert len(train) == 80 and len(valid) == 20
    np.testing.assert_array_equal(np.concatenate([train.arrays["ids"], valid.arrays["ids"]]),
                                  data.arrays["ids"])
    with pytest.raises(SeqgraphError, match="bptt_windows"):
        next(batches(data, 4, rng=0))


# ------------------------------------------------------------------ batches and splits


def test_batches_are_time_major_padded_to_the_longest_in_the_batch():
    data = builtin("parity", 10, min_length=2, max_length=9, seed=7)
    stored_x, stored_n = data.arrays["x"], data.lengths["time"]
    for k, (arrays, lengths) in enumerate(batches(data, 4, shuffle=False)):
        rows = range(4 * k, min(4 * k + 4, 10))  # in order: batch k holds examples 4k ..
        x, n = arrays["x"], lengths["time"]
        np.testing.assert_array_equal(n, stored_n[rows])
        assert x.shape == (stored_n[rows].max(), len(rows)) and x.flags.c_contiguous
        np.testing.assert_array_equal(x, stored_x[rows, :len(x)].T)
        np.testing.assert_array_equal(arrays["label"], data.arrays["label"][rows])
        for b in range(len(rows)):
            assert (x[n[b]:, b] == 0).all()


def test_batches_order_shuffle_and_drop_last():
    data = builtin("adding", 10, length=6)
    plain = list(batches(data, 4, shuffle=False))
    assert [a["x"].shape for a, _ in plain] == [(6, 4, 2), (6, 4, 2), (6, 2, 2)]
    assert all(lengths == {} for _, lengths in plain)  # fixed length: nothing to mask
    np.testing.assert_array_equal(plain[0][0]["x"], data.arrays["x"][:4].transpose(1, 0, 2))
    np.testing.assert_array_equal(plain[2][0]["y"], data.arrays["y"][8:])
    one = [a["y"] for a, _ in batches(data, 4, rng=5)]
    two = [a["y"] for a, _ in batches(data, 4, rng=np.random.default_rng(5))]
    assert all(np.array_equal(p, q) for p, q in zip(one, two))
    assert not np.array_equal(np.concatenate(one), data.arrays["y"])
    np.testing.assert_array_equal(np.sort(np.concatenate(one)[:, 0]), np.sort(data.arrays["y"][:, 0]))
    assert len(list(batches(data, 4, rng=0, drop_last=True))) == 2
    with pytest.raises(SeqgraphError, match="batch size must be an integer of at least 1"):
        next(batches(data, 0, rng=0))


def test_batches_clear_padding_and_seq2seq_lengths():
    data = builtin("reverse", 6, min_length=2, max_length=5)
    data.arrays["src"][data.arrays["src"] == 0] = 99  # junk past the lengths is cleared
    arrays, lengths = next(batches(data, 6, shuffle=False))
    assert arrays["src"].shape == (lengths["src"].max(), 6)
    assert arrays["tgt_in"].shape == arrays["tgt_out"].shape == (lengths["tgt"].max(), 6)
    for b, n in enumerate(lengths["src"]):
        assert (arrays["src"][n:, b] == 0).all() and (arrays["src"][:n, b] != 99).all()


def test_split_is_a_seeded_partition():
    data = builtin("majority", 100)
    train, valid = split(data, 0.25, seed=1)
    assert len(train) == 75 and len(valid) == 25
    rows = lambda d: {tuple(r) + (l,) for r, l in zip(d.arrays["x"], d.lengths["time"])}
    assert len(rows(train) | rows(valid)) == len(rows(data))
    assert arrays_equal(split(data, 0.25, seed=1)[1], valid)
    assert not arrays_equal(split(data, 0.25, seed=2)[1], valid)
    assert valid.lengths["time"].shape == (25,) and valid.num_classes == data.num_classes
    with pytest.raises(SeqgraphError, match="strictly between 0 and 1"):
        split(data, 1.5)


def test_rename_feeds_a_model_with_other_names():
    data = rename(builtin("copy", 20, count=2, delay=3), {"y": "tag"})
    assert set(data.arrays) == {"x", "tag"} and data.time_axes == {"x": "time", "tag": "time"}
    assert next(batches(data, 4, rng=0))[0]["tag"].shape == (8, 4)
    with pytest.raises(SeqgraphError, match="cannot rename 'z'"):
        rename(data, {"z": "w"})
    with pytest.raises(SeqgraphError, match="the same name"):
        rename(data, {"x": "tag"})


def test_dataset_checks_itself():
    x = np.zeros((3, 4), dtype=np.int64)
    with pytest.raises(SeqgraphError, match="disagree on the number of examples"):
        Dataset({"x": x, "y": np.zeros(2)}, kind="sequence")
    with pytest.raises(SeqgraphError, match="longer than the data"):
        Dataset({"x": x}, kind="sequence", time_axes={"x": "time"},
                lengths={"time": np.array([1, 5, 2])})
    with pytest.raises(SeqgraphError, match="unknown dataset kind 'texts'"):
        Dataset({"x": x}, kind="texts")


# ------------------------------------------------------------------ a user's files


def test_load_text(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("to be or not to be\n", encoding="utf-8")
    data = load_text(path)
    assert data.kind == "text" and data.vocab == sorted(set("to be or not to be\n"))
    assert data.corpus().decode(data.arrays["ids"]) == "to be or not to be\n"


def test_load_text_refuses_empty_and_undecodable_files(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(SeqgraphError, match=r"'.*empty\.txt' is empty"):
        load_text(empty)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("first line\ncaf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(SeqgraphError, match=r"latin1\.txt' is not valid UTF-8: byte 0xe9") as e:
        load_text(bad)
    assert (e.value.span.line, e.value.span.col) == (2, 4)
    assert "latin1.txt:2:4: error" in str(e.value)
    with pytest.raises(SeqgraphError, match="does not exist"):
        load_text(tmp_path / "missing.txt")


def test_load_npz_reads_arrays_and_lengths(tmp_path):
    path = tmp_path / "data.npz"
    x = np.array([[1, 2, 3], [4, 5, 0]], dtype=np.int32)
    np.savez(path, x=x, label=np.array([0, 1]), lengths=np.array([3, 2]))
    data = load_npz(path, expected={"x": ("i", 2), "label": ("i", 1)})
    assert data.time_axes == {"x": "time"} and data.arrays["x"].dtype == np.int64
    np.testing.assert_array_equal(data.lengths["time"], [3, 2])
    arrays, lengths = next(batches(data, 2, shuffle=False))
    np.testing.assert_array_equal(arrays["x"], x.T)


def test_load_npz_per_array_lengths_and_explicit_time_axes(tmp_path):
    path = tmp_path / "pairs.npz"
    src = np.ones((3, 5), dtype=np.int64)
    tgt = np.ones((3, 4), dtype=np.int64)
    np.savez(path, src=src, tgt=tgt, src_lengths=[5, 2, 1], tgt_lengths=[4, 4, 3])
    data = load_npz(path)
    assert data.time_axes == {"src": "src", "tgt": "tgt"}
    assert data.lengths["src"].tolist() == [5, 2, 1]
    path2 = tmp_path / "adding.npz"
    np.savez(path2, x=np.zeros((4, 6, 2), np.float32), y=np.zeros((4, 1), np.float32))
    data = load_npz(path2, time_axes={"x": "time"})
    assert data.lengths is None and next(batches(data, 4, rng=0))[0]["x"].shape == (6, 4, 2)


def test_load_npz_refuses_pickled_objects(tmp_path):
    path = tmp_path / "ragged.npz"
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = [1, 2, 3], [4]
    np.savez(path, x=ragged)
    with pytest.raises(SeqgraphError, match="array 'x' holds Python objects.*refuses pickled") as e:
        load_npz(path)
    assert "ragged.npz" in e.value.message
    pickled = tmp_path / "data.pkl"
    pickled.write_bytes(pickle.dumps({"x": [1, 2]}))
    with pytest.raises(SeqgraphError, match="data.pkl' is a Python pickle; seqgraph refuses"):
        load_npz(pickled)


def test_load_npz_refuses_other_files(tmp_path):
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(SeqgraphError, match="x.npy' is an .npy file"):
        load_npz(npy)
    text = tmp_path / "notes.npz"
    text.write_text("hello")
    with pytest.raises(SeqgraphError, match="notes.npz' is not an .npz file"):
        load_npz(text)
    with pytest.raises(SeqgraphError, match="does not exist"):
        load_npz(tmp_path / "nothing.npz")


def npz(tmp_path, **arrays):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize("arrays, expected, message", [
    (dict(x=np.zeros((2, 3))), {"y": ("f", 2)}, "has no array 'y'"),
    (dict(x=np.zeros((2, 3))), {"x": ("f", 3)}, "array 'x' has 2 axes .* expected 3"),
    (dict(x=np.zeros((2, 3))), {"x": ("i", 2)}, "array 'x' holds float64 values; expected integer"),
    (dict(x=np.zeros((2, 3), np.int64)), {"x": ("f", 2)}, "array 'x' holds int64 values; expected floats"),
    (dict(x=np.array([[1, -4]])), None, r"array 'x' holds a negative id \(-4 at index \(0, 1\)\)"),
    (dict(x=np.zeros((2, 3)), y=np.zeros(3)), None, "disagree on the number of examples"),
    (dict(x=np.array([[0.0, np.nan]])), None, "array 'x' holds NaN"),
    (dict(x=np.array(["a", "b"])), None, "array 'x' has dtype <U1"),
    (dict(x=np.zeros((2, 3)), lengths=np.array([3, 4])), None,
     "example 1 has length 4, longer than the data: 'x' holds only 3 steps"),
    (dict(x=np.zeros((2, 3)), lengths=np.array([3, 0])), None, "example 1 has length 0"),
    (dict(x=np.zeros((2, 3)), z_lengths=np.array([3, 1])), None, "lengths for 'z', but there is no such array"),
])
def test_load_npz_bad_data_messages(tmp_path, arrays, expected, message):
    with pytest.raises(SeqgraphError, match=message) as e:
        load_npz(npz(tmp_path, **arrays), expected=expected)
    assert "bad.npz" in e.value.message
