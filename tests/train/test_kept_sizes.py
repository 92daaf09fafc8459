"""Sizes given on the command line stay when the corpus's vocabulary replaces the model's."""

from pathlib import Path

import numpy as np

import seqgraph as sg
from seqgraph import cli

ROOT = Path(__file__).resolve().parents[2]


def test_a_second_with_sizes_keeps_the_first():
    model = sg.load(ROOT / "models" / "char_lstm.sg").model()
    resized = model.with_sizes(hidden=8).with_sizes(vocab=12)
    assert resized.sizes == {**model.sizes, "hidden": 8, "vocab": 12}
    assert resized.params["lstm_0.weight_hh"][0] == (32, 8)
    assert resized.params["dense_0.weight"][0] == (12, 8)


def test_a_sized_run_on_a_corpus_of_its_own_vocabulary_keeps_the_size(tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcabd cab dab " * 200)  # 5 distinct characters: the model says 45
    out = tmp_path / "run"
    argv = ["run", str(ROOT / "models" / "char_lstm.sg"), "--data", str(corpus), "--out", str(out),
            "--epochs", "1", "--quiet", "--size", "hidden=8", "--set", "steps = 2", "--set", "sample = 0"]
    assert cli.main(argv) == 0
    assert "note: vocab = 5" in capsys.readouterr().out
    with np.load(out / "final.npz") as saved:
        assert saved["param/lstm_0.weight_hh"].shape == (32, 8)
        assert saved["param/dense_0.weight"].shape == (5, 8)


def test_a_size_left_to_its_default_still_follows_the_sizes_it_reads():
    model = sg.parse("""
    model M(vocab = 6, hidden = 8, embed = hidden) {
        input  x : seq[int, vocab]
        target y : seq[int, vocab]
        loss = cross_entropy(dense(lstm(embedding(x, vocab, embed), hidden), vocab), y)
    }""").model()
    resized = model.with_sizes(hidden=4).with_sizes(vocab=9)
    assert resized.sizes == {"vocab": 9, "hidden": 4, "embed": 4}
