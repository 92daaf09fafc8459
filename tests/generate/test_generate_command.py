"""seqgraph generate: held-out examples scored on what was generated, given ids, .npz files."""

import re
from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph import cli
from seqgraph.train.generation import Decoded, decode_dataset

MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "seq2seq"
    argv = ["run", str(MODELS / "seq2seq_attention.sg"), "--out", str(out), "--epochs", "2", "--quiet",
            "--size", "hidden=12", "--set", "examples = 600", "--set", "batch = 20"]
    assert cli.main(argv) == 0
    return out


def test_generate_scores_the_held_out_examples(trained, capsys):
    capsys.readouterr()
    assert cli.main(["generate", str(trained), "--show", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "60 held-out examples of builtin:reverse:"
    assert len(lines) == 5 and all(" -> " in line for line in lines[1:4])
    found = re.fullmatch(r"generated exact match ([0-9.]+), token accuracy ([0-9.]+) on 60 examples", lines[4])
    loaded = sg.load_run(trained)
    decoded = decode_dataset(loaded.net, loaded.held_out(), "tgt_out")
    assert float(found.group(1)) == pytest.approx(decoded.exact_match(), abs=5e-4)
    assert float(found.group(2)) == pytest.approx(decoded.token_accuracy(), abs=5e-4)


def test_generate_decodes_given_ids_and_saves_them(trained, capsys, tmp_path):
    saved = tmp_path / "out.npz"
    assert cli.main(["generate", str(trained), "--input", "3 4 5", "--input", "9 8 7 6", "--beam", "3",
                     "--output", str(saved)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("3 4 5  ->  ") and lines[1].startswith("9 8 7 6  ->  ")
    arrays = np.load(saved)
    expected = sg.load_run(trained).generate({"src": np.array([[3, 9], [4, 8], [5, 7], [0, 6]])},
                                             {"src": np.array([3, 4])}, beam=3).sequences()
    for row, ids in enumerate(expected):
        assert arrays["lengths"][row] == len(ids)
        assert list(arrays["tokens"][row, :len(ids)]) == ids
        assert lines[row].endswith("->  " + " ".join(map(str, ids)))


def test_generate_reads_an_npz_of_inputs(trained, capsys, tmp_path):
    path = tmp_path / "in.npz"
    np.savez(path, src=np.array([[3, 4, 5, 0], [6, 7, 8, 9]]))
    assert cli.main(["generate", str(trained), "--input", str(path), "--greedy"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ->  ")[0] for line in lines] == ["example 0", "example 1"]


def test_generate_sampling_is_seeded(trained, capsys):
    runs = []
    for seed in ("1", "1", "2"):
        assert cli.main(["generate", str(trained), "--input", "3 4 5 6 7 8 9 10", "--temperature", "3",
                         "--seed", seed, "--input", "10 9 8 7 6 5 4 3"]) == 0
        runs.append(capsys.readouterr().out)
    assert runs[0] == runs[1] != runs[2]


@pytest.mark.parametrize("argv, message", [
    (["--input", "3 x"], "is not a list of ids in 0..12"),
    (["--beam", "0"], "beam = 0 is out of range"),
])
def test_generate_mistakes_are_errors(trained, capsys, argv, message):
    assert cli.main(["generate", str(trained), *argv]) == 1
    assert message in capsys.readouterr().err


def test_generated_metrics():
    decoded = Decoded(generated=[[5, 4], [3], [7, 7, 7]], expected=[[5, 4], [3, 9], [7]], end=2)
    assert decoded.exact_match() == pytest.approx(1 / 3)
    # targets with end tokens: [5 4 2] all right, [3 9 2] one right, [7 2] one right
    assert decoded.token_accuracy() == pytest.approx((3 + 1 + 1) / 8)


def test_generate_continues_text_for_a_language_model(tmp_path, capsys):
    out = tmp_path / "lm"
    assert cli.main(["run", str(MODELS / "char_lstm.sg"), "--out", str(out), "--epochs", "1", "--quiet",
                     "--size", "hidden=8", "--set", "steps = 2", "--set", "examples = 5000",
                     "--set", "sample = 0"]) == 0
    capsys.readouterr()
    assert cli.main(["generate", str(out), "--input", "The ", "--temperature", "0.8", "--max-length", "30"]) == 0
    text = capsys.readouterr().out[:-1]
    assert text.startswith("The ") and len(text) == 30
    assert cli.main(["generate", str(out)]) == 1
    assert "needs a prefix" in capsys.readouterr().err


def test_generate_spaces_the_words_of_a_word_language_model(tmp_path, capsys):
    text = (MODELS / "word_lstm.sg").read_text()
    model = tmp_path / "words.sg"
    model.write_text(text.replace("input  x : seq[int, vocab]", "input  x : seq[int, vocab] = feedback(logits, max_length = 20)"))
    out = tmp_path / "words"
    assert cli.main(["run", str(model), "--out", str(out), "--epochs", "1", "--quiet",
                     "--size", "hidden=8", "--set", "steps = 2", "--set", "sample = 0"]) == 0
    capsys.readouterr()
    assert cli.main(["generate", str(out), "--input", "the dog", "--max-length", "6"]) == 0
    generated = capsys.readouterr().out[:-1]
    assert generated.startswith("the dog ") and len(generated.split()) == 6
