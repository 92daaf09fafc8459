"""Inference without targets (net.predict) and trained runs loaded in one call (sg.load_run)."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.train.run import run


def test_predict_needs_no_target_and_matches_forward():
    net = sg.compile(sg.load("models/seq2seq_attention.sg").model().with_sizes(hidden=8), dtype="float64")
    rng = np.random.default_rng(0)
    src, tgt_in = rng.integers(3, 13, (4, 2)), rng.integers(1, 13, (5, 2))
    lengths = {"src": np.array([4, 2]), "tgt": np.array([5, 3])}
    predicted = net.predict({"src": src, "tgt_in": tgt_in}, lengths)
    assert set(predicted) == {"probs"}  # the loss needs the target: not computed
    full = net.forward({"src": src, "tgt_in": tgt_in, "tgt_out": np.zeros_like(tgt_in)}, lengths)
    np.testing.assert_allclose(predicted["probs"], full["probs"], rtol=1e-12)


def test_predict_refuses_an_output_that_needs_a_target():
    net = sg.compile(sg.load("models/char_lstm.sg").model().with_sizes(hidden=8), dtype="float64")
    with pytest.raises(sg.SeqgraphError, match="cannot predict 'loss': it needs a target"):
        net.predict({"x": np.zeros((3, 1), dtype=int)}, outputs=["loss"])
    with pytest.raises(sg.SeqgraphError, match="did you mean 'probs'"):
        net.predict({"x": np.zeros((3, 1), dtype=int)}, outputs=["prob"])


def test_load_run_brings_back_model_weights_and_settings(tmp_path):
    trainer = run("models/seq2seq_attention.sg", epochs=1, out=str(tmp_path), sizes={"hidden": 8},
                  settings=["examples = 200", "batch = 50"], progress=False, echo=lambda *a: None)
    loaded = sg.load_run(tmp_path)
    assert loaded.config.batch == 50 and loaded.config.examples == 200
    assert loaded.net.model.sizes["hidden"] == 8
    for key, value in trainer.net.params.items():
        np.testing.assert_array_equal(loaded.net.params[key], value)
    held = loaded.held_out()
    assert len(held) == 20  # valid = 0.1 of 200 examples
    generated = loaded.generate({"src": held.arrays["src"][:3].T}, {"src": held.lengths["src"][:3]})
    assert generated.tokens.shape[1] == 3
