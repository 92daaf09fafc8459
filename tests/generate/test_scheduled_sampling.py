"""Scheduled sampling: the schedules, the rate at which generated tokens are fed, training."""

import math

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.generate import Decoder
from seqgraph.train.config import Call
from seqgraph.train.run import run
from seqgraph.train.scheduled import make_sampling_schedule, mixed_inputs

MODEL = sg.load("models/seq2seq_attention.sg").model().with_sizes(hidden=8, embed=6)


@pytest.mark.parametrize("call, step, total, expected", [
    (Call("linear", (), {"start": 0.1, "end": 0.5}), 0, 100, 0.1),
    (Call("linear", (), {"start": 0.1, "end": 0.5}), 50, 100, 0.3),
    (Call("linear", (), {"end": 0.5}), 100, 100, 0.5),
    (Call("exponential", (), {"k": 0.9}), 3, 100, 1 - 0.9 ** 3),
    (Call("inverse_sigmoid", (), {"k": 10}), 0, 100, 1 - 10 / 11),
    (Call("inverse_sigmoid", (), {"k": 10}), 40, 100, 1 - 10 / (10 + math.exp(4))),
])
def test_schedules(call, step, total, expected):
    assert make_sampling_schedule(call, MODEL)(step, total) == pytest.approx(expected, abs=1e-12)


def test_schedule_mistakes():
    with pytest.raises(sg.SeqgraphError, match="did you mean 'linear'"):
        make_sampling_schedule(Call("lineer"), MODEL)
    with pytest.raises(sg.SeqgraphError, match="has no argument 'stop'"):
        make_sampling_schedule(Call("linear", (), {"stop": 1}), MODEL)
    tagger = sg.load("models/gru_tagger.sg").model()
    with pytest.raises(sg.SeqgraphError, match="needs an input fed back"):
        make_sampling_schedule(Call("linear"), tagger)


def _batch(batch=300, steps=8, seed=0):
    rng = np.random.default_rng(seed)
    src = rng.integers(3, 13, (steps - 1, batch))
    truth = np.vstack([np.ones((1, batch), dtype=int), rng.integers(3, 13, (steps - 1, batch))])
    return {"src": src, "tgt_in": truth}


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_generated_tokens_are_fed_at_the_scheduled_rate(rate):
    """Each step from the second on is the model's own token with probability ``rate``: the
    greedy choice after reading the mixed prefix (checked against the whole model reading
    it), else the ground truth."""
    net = sg.compile(MODEL, dtype="float64", seed=1)
    inputs = _batch()
    fed, generated = mixed_inputs(Decoder(net), inputs, None, rate, np.random.default_rng(4),
                                  choose=lambda logp: logp.argmax(axis=1))
    assert not generated[0].any()
    assert generated[1:].mean() == pytest.approx(rate, abs=0.02)
    truth = inputs["tgt_in"]
    np.testing.assert_array_equal(fed[~generated], truth[~generated])
    logits = np.log(net.predict({"src": inputs["src"], "tgt_in": fed})["probs"])
    own = np.vstack([truth[:1], logits.argmax(-1)[:-1]])
    np.testing.assert_array_equal(fed[generated], own[generated])
    if 0 < rate < 1:
        assert (own[generated] != truth[generated]).mean() > 0.5  # the own tokens differ from the truth


def test_training_feeds_generated_tokens_at_the_scheduled_rate(tmp_path):
    lines = []
    trainer = run("models/seq2seq_attention.sg", epochs=2, out=str(tmp_path), sizes={"hidden": 8},
                  settings=["examples = 400", "batch = 40", "show = 0",
                            "scheduled_sampling = linear(start = 0.2, end = 0.6)"],
                  progress=False, echo=lines.append)
    first, second = (row["fed_generated"] for row in trainer.history)
    # the rate rises linearly over the 18 steps: on average 0.3 in the first epoch, 0.5 in the second
    assert first == pytest.approx(0.2 + 0.4 * 4 / 18, abs=0.04)
    assert second == pytest.approx(0.2 + 0.4 * 13 / 18, abs=0.04)
    assert sum("scheduled sampling:" in line for line in lines) == 2
    assert all(math.isfinite(row["train_loss"]) for row in trainer.history)


def test_scheduled_sampling_runs_repeat_exactly(tmp_path):
    settings = ["examples = 200", "batch = 40", "show = 0", "scheduled_sampling = exponential(k = 0.8)"]
    losses = [[row["train_loss"] for row in run("models/seq2seq_attention.sg", epochs=1, out=str(tmp_path / name),
                                                 sizes={"hidden": 8}, settings=settings, progress=False,
                                                 echo=lambda *a: None).history]
              for name in ("a", "b")]
    assert losses[0] == losses[1]
