"""Word-level text and CSV/TSV tables: tokenizing, capped vocabularies, the unknown token,
labels and sequences read from columns, and models trained on them from a train block."""

import csv

import numpy as np
import pytest

import seqgraph as sg
from seqgraph import cli
from seqgraph.errors import SeqgraphError
from seqgraph.train import data, tables, words
from seqgraph.train.config import resolve
from seqgraph.train.loop import load_dataset
from seqgraph.train.run import run, sample

from .test_training import MODELS, QUIET

TEXT = "The cat sat. The cat ran!\nA dog sat, then the dog slept."


def test_tokenize_keeps_words_marks_and_line_breaks():
    assert words.tokenize("Don't stop, rock'n'roll!\n  Ok") == ["Don't", "stop", ",", "rock'n'roll", "!", "\n", "Ok"]
    assert words.tokenize("The CAT", lower=True) == ["the", "cat"]
    assert words.detokenize(["the", "cat", ",", "(", "a", "dog", ")", ".", "\n", "Yes"]) == "the cat, (a dog).\nYes"


def test_the_vocabulary_is_capped_by_frequency_with_the_unknown_token_first():
    corpus = words.WordCorpus(TEXT, max_vocab=5)
    # counts: . 2, The 2, cat 2, dog 2, sat 2, then ! , A \n ran slept the then once each
    assert corpus.vocab == ["<unk>", ".", "The", "cat", "dog"]
    assert corpus.ids.tolist() == [2, 3, 0, 1, 2, 3, 0, 0, 0, 0, 4, 0, 0, 0, 0, 4, 0, 1]
    assert corpus.unknown_share() == pytest.approx(10 / 18)
    assert corpus.decode(corpus.encode("The dog flew.")) == "The dog <unk>."
    whole = words.WordCorpus(TEXT, unknown="UNK", lower=True)
    assert whole.vocab[0] == "UNK" and whole.vocab_size == 13 and whole.unknown_share() == 0
    assert whole.vocab[1:6] == ["the", ".", "cat", "dog", "sat"]  # lower-cased, "the" counts 3


def _text_config(tmp_path, source):
    (tmp_path / "t.txt").write_text(TEXT * 3)
    program = sg.parse(f"""
model M(vocab = 7, hidden = 4) {{
    input x : seq[int, vocab]
    target y : seq[int, vocab]
    loss = cross_entropy(dense(lstm(embedding(x, vocab, 3), hidden), vocab), y)
}}
train {{ data = {source} }}
""", filename="m.sg")
    model = program.model()
    return load_dataset(resolve(model.train), model, tmp_path)


def test_text_at_word_level_from_a_train_block(tmp_path):
    dataset = _text_config(tmp_path, 'text("t.txt", level = word, max_vocab = 6, lower = true)')
    assert dataset.kind == "text" and dataset.vocab == ["<unk>", "the", ".", "cat", "dog", "sat"]
    assert len(dataset.arrays["ids"]) == 54 and dataset.vocab_size == 6
    assert dataset.info["tokenizer"] == {"level": "word", "lower": True}
    chars = _text_config(tmp_path, 'text("t.txt")')
    assert chars.vocab_size == len(set(TEXT)) and len(chars.arrays["ids"]) == 3 * len(TEXT)


@pytest.mark.parametrize("source, message, hint", [
    ('text("t.txt", levle = word)', "data source text(...) has no argument 'levle'", "did you mean 'level'"),
    ('text("t.txt", level = words)', "level must be char or word, not 'words'", "did you mean 'word'"),
    ('text("t.txt", max_vocab = 10)', "max_vocab applies to words", "level = word"),
    ('text("t.txt", level = word, max_vocab = 1)', "max_vocab must be a whole number of at least 2", None),
    ('text("t.txt", level = word, unknown = 3)', "unknown must be a string", '"<unk>"'),
    ('npz("a.npz", label = y)', "data source npz(...) has no argument 'label'", "takes no keyword arguments"),
    ('csv("t.csv", lable = y)', "data source csv(...) has no argument 'lable'", "did you mean 'label'"),
])
def test_data_source_mistakes_point_at_the_call(tmp_path, source, message, hint):
    with pytest.raises(SeqgraphError) as e:
        _text_config(tmp_path, source)
    assert message in e.value.message and e.value.span.line == 7
    if hint:
        assert hint in e.value.hint


def test_a_word_language_model_trains_and_samples_words(tmp_path):
    trainer = run(MODELS / "word_lstm.sg", epochs=2, out=tmp_path, sizes={"hidden": 32},
                  settings=["sample = 0"], **QUIET)
    assert trainer.net.model.sizes["vocab"] == 150
    entropy = data.unigram_entropy(trainer.dataset.arrays["ids"])
    assert trainer.history[-1]["valid_loss"] < entropy - 0.8  # context helps
    text = sample(tmp_path, length=12, prime="the dog")
    assert text.startswith("the dog ") and len(words.tokenize(text.replace("<unk>", "unk"))) == 14


def _write_table(path, header, rows, delimiter=","):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)


def test_a_feature_table_with_a_named_label_column(tmp_path):
    _write_table(tmp_path / "f.csv", ["a", "kind", "b"], [[0.5, "cat", 1], [2, "dog", -1.5], [3, "cat", 0]])
    dataset = tables.load_table(tmp_path / "f.csv", label="kind")
    np.testing.assert_array_equal(dataset.arrays["x"], [[0.5, 1], [2, -1.5], [3, 0]])
    np.testing.assert_array_equal(dataset.arrays["kind"], [0, 1, 0])
    assert dataset.info["classes"] == ["cat", "dog"] and dataset.metric == "accuracy"
    _write_table(tmp_path / "r.csv", ["a", "b", "target"], [[0.5, 1, 0.25], [2, -1.5, 7]])
    regression = tables.load_table(tmp_path / "r.csv", label="target", features="inputs")
    assert regression.arrays["target"].tolist() == [[0.25], [7.0]] and regression.metric == "mse"
    np.testing.assert_array_equal(regression.arrays["inputs"], [[0.5, 1], [2, -1.5]])


def test_a_tsv_of_word_and_number_sequences(tmp_path):
    _write_table(tmp_path / "s.tsv", ["text", "label"], [["the cat sat", 1], ["a dog", 0], ["the dog sat down", 2]],
                 delimiter="\t")
    dataset = tables.load_table(tmp_path / "s.tsv", sequence="text")
    assert dataset.vocab == ["<unk>", "dog", "sat", "the", "a", "cat", "down"]
    np.testing.assert_array_equal(dataset.arrays["text"], [[3, 5, 2, 0], [4, 1, 0, 0], [3, 1, 2, 6]])
    np.testing.assert_array_equal(dataset.lengths["time"], [3, 2, 4])
    assert dataset.arrays["label"].tolist() == [1, 0, 2] and dataset.num_classes == 3
    _write_table(tmp_path / "n.csv", ["steps", "y"], [["0.5 1 2", 3.5], ["-1 2", 1]])
    numbers = tables.load_table(tmp_path / "n.csv", label="y", sequence="steps", dtypes={"steps": "float", "y": "float"})
    np.testing.assert_array_equal(numbers.arrays["steps"][..., 0], [[0.5, 1, 2], [-1, 2, 0]])
    assert numbers.arrays["y"].tolist() == [[3.5], [1.0]] and numbers.lengths["time"].tolist() == [3, 2]


@pytest.mark.parametrize("text, options, message", [
    ("a,b\n1,2\n3\n", {"label": "b"}, "line 3: 1 cells, but the header names 2 columns"),
    ("a,b\n1,x\n", {"label": "a"}, "row 1 of column 'b' holds 'x', not a number"),
    ("a,b\n1,2\n", {"label": "c"}, "has no column 'c' (the label column)"),
    ("a,b\n", {"label": "a"}, "has a header but no rows"),
    ("s,l\n,1\n", {"label": "l", "sequence": "s"}, "row 1 of column 's' is empty"),
    ("a;b\n1;2\n", {"label": "b", "delimiter": "semi"}, "delimiter must be one character"),
    ("a,b\n1,2\n", {"label": 1}, "label names a column, so it is a string, not 1"),
])
def test_table_mistakes_name_the_row_or_column(text, options, message):
    with pytest.raises(SeqgraphError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tables.table_dataset(text, "t.csv", **options)


def test_a_missing_table_file_is_an_error(tmp_path):
    with pytest.raises(SeqgraphError, match="table '.*none.csv' does not exist"):
        tables.load_table(tmp_path / "none.csv")


def test_a_dense_classifier_learns_a_feature_table_from_seqgraph_run(tmp_path, capsys):
    rng = np.random.default_rng(0)
    centres = {"north": (0, 3), "south": (0, -3), "east": (3, 0)}
    rows = [[*(np.array(c) + rng.normal(size=2)).round(4), name] for name, c in centres.items() for _ in range(100)]
    _write_table(tmp_path / "points.csv", ["px", "py", "side"], rows)
    (tmp_path / "points.sg").write_text("""
model Points(classes = 3) {
    input  x    : [2]
    target side : int[classes]
    loss = cross_entropy(dense(relu(dense(x, 16)), classes), side)
}
train { data = csv("points.csv", label = "side")  optimizer = adam(lr = 0.03)  batch = 32  epochs = 15 }
""")
    assert cli.main(["run", str(tmp_path / "points.sg"), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert float(rows[-1]["metric_value"]) > 0.9


def test_the_generated_tense_table_trains_a_classifier_to_high_accuracy(tmp_path):
    table = tables.tense_text(4, seed=1)
    assert table.splitlines()[0] == "sentence\ttense" and len(table.splitlines()) == 5
    assert all(line.rsplit("\t", 1)[1] in ("past", "present") for line in table.splitlines()[1:])
    trainer = run(MODELS / "tense_classifier.sg", epochs=3, out=tmp_path, settings=["examples = 1200"], **QUIET)
    assert trainer.dataset.info["classes"] == ["past", "present"]
    assert trainer.history[-1]["metric_value"] > 0.9
