"""A train block's data source takes only the keyword arguments it knows: any other is an
error at that argument, with the source's own arguments offered."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph import SeqgraphError
from seqgraph.train.config import resolve
from seqgraph.train.loop import load_dataset

MODEL = """model Tagger {
    input  x : seq[int, 5]
    target y : seq[int, 5]
    loss = cross_entropy(dense(embedding(x, 5, 4), 5), y)
}
train {
    data = %s
}
"""


def _load(tmp_path, source: str):
    path = tmp_path / "m.sg"
    path.write_text(MODEL % source)
    (tmp_path / "f.txt").write_text("abcde " * 50)
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 3), dtype=np.int64), y=np.zeros((4, 3), dtype=np.int64))
    model = sg.load(path).model()
    return load_dataset(resolve(model.train), model, tmp_path)


@pytest.mark.parametrize("source, column, message, hint", [
    ('text("f.txt", level = word)', 26, "data source text(...) has no argument 'level'",
     "text(...) takes no keyword arguments"),
    ('npz("a.npz", lengths = 3)', 25, "data source npz(...) has no argument 'lengths'",
     "npz(...) takes no keyword arguments"),
    ('builtin("adding", lenght = 50)', 30, "built-in dataset 'adding' has no size 'lenght'",
     "did you mean 'length'?"),
    ('text("builtin:grammar_text", seed = 2)', 41, "built-in dataset 'grammar_text' has no size 'seed'",
     "'grammar_text' takes no sizes"),
])
def test_an_unknown_keyword_argument_is_an_error_at_it(tmp_path, source, column, message, hint):
    with pytest.raises(SeqgraphError) as caught:
        _load(tmp_path, source)
    rendered = caught.value.render()
    assert rendered.splitlines()[0] == f"{tmp_path / 'm.sg'}:7:{column}: error: {message}"
    assert rendered.splitlines()[-1] == f"hint: {hint}"


def test_known_arguments_still_load(tmp_path):
    assert _load(tmp_path, 'text("f.txt")').kind == "text"
    assert _load(tmp_path, 'npz("a.npz")').arrays["x"].shape == (4, 3)
    assert _load(tmp_path, 'builtin("adding", length = 7)').arrays["x"].shape[1] == 7


@pytest.mark.parametrize("source, message, hint", [
    ('txt("f.txt")', "unknown data source txt(...)", "did you mean 'text'?"),
    ('text("f.txt", "g.txt")', "data source text(...) takes one argument before its keywords, got 2",
     'use builtin("name", sizes...), text("file.txt") or npz("arrays.npz")'),
])
def test_a_wrong_source_or_argument_count_says_which(tmp_path, source, message, hint):
    with pytest.raises(SeqgraphError) as caught:
        _load(tmp_path, source)
    assert (caught.value.message, caught.value.hint) == (message, hint)
