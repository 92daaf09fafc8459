"""Decoding with output feedback: the compiled step loop against plain loops and enumeration."""

import itertools

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.generate import Decoder, _beam_search, log_softmax

TOY = """
cell Tiny(x : [E]) -> h : [H] {
    param W : [H, E + H]
    state h : [H] = 0
    h = tanh(W @ concat(x, h[t-1]))
}
model Toy(vocab = 4, embed = 3, hidden = 5) {
    input  y_in  : seq[int, vocab] = feedback(logits, start = 0, end = 1, max_length = 3)
    target y_out : seq[int, vocab]
    h = Tiny(embedding(y_in, vocab, embed), hidden)
    output logits = dense(h, vocab)
    loss = cross_entropy(logits, y_out)
}
"""


@pytest.fixture(scope="module")
def seq2seq():
    model = sg.load("models/seq2seq_attention.sg").model().with_sizes(hidden=8, embed=6)
    return sg.compile(model, dtype="float64", seed=3)


def _sources(batch=4, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 6, batch)
    lengths[0] = 5
    src = rng.integers(3, 13, (5, batch))
    src[np.arange(5)[:, None] >= lengths[None, :]] = 0
    return src, lengths


def _teacher_forced_logp(net, inputs, feedback, tokens, lengths=None):
    """Log-probabilities of the full model (no step program) reading ``tokens`` shifted right."""
    fed = np.vstack([np.full((1, tokens.shape[1]), feedback.start), tokens[:-1]])
    out = net.predict({**inputs, feedback_name(net): fed}, lengths)
    return np.log(out["probs"]) if "probs" in out else log_softmax(out["logits"])


def feedback_name(net):
    return next(iter(net.model.checked.feedback))


def test_greedy_is_a_plain_loop_over_the_compiled_step(seq2seq):
    src, lengths = _sources()
    lengths_of = {"src": lengths}
    decoder = Decoder(seq2seq)
    context = decoder.start({"src": src}, lengths_of)
    tokens, states, rows = np.full(4, 1), context.states, []
    for _ in range(decoder.feedback.max_length):
        logp, states = decoder.step(tokens, context, states)
        tokens = logp.argmax(axis=1)
        rows.append(tokens)
    loop = np.array(rows)
    generated = seq2seq.generate({"src": src}, lengths_of)
    for b in range(4):
        n = generated.lengths[b]
        assert list(generated.tokens[:n, b]) == list(loop[:n, b])
        assert generated.tokens[n - 1, b] == 2 or n == decoder.feedback.max_length
        assert (generated.tokens[n:, b] == 0).all()


def test_greedy_matches_the_teacher_forced_model(seq2seq):
    """Each step program's scores are those of the whole model reading the prefix: the same
    tokens are the argmax at every step, and the scores add up to the same sum."""
    src, lengths = _sources()
    generated = seq2seq.generate({"src": src}, {"src": lengths}, max_length=6)
    tokens = np.where(generated.tokens == 0, 2, generated.tokens)
    logp = _teacher_forced_logp(seq2seq, {"src": src}, seq2seq.model.checked.feedback["tgt_in"], tokens,
                                {"src": lengths})
    steps = np.arange(tokens.shape[0])[:, None] < generated.lengths[None, :]
    assert (logp.argmax(-1)[steps] == tokens[steps]).all()
    chosen = np.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose((chosen * steps).sum(0), generated.scores, rtol=1e-10)


def test_a_batch_decodes_as_its_examples_do_alone(seq2seq):
    src, lengths = _sources()
    together = seq2seq.generate({"src": src}, {"src": lengths}, beam=3).sequences()
    for b in range(4):
        alone = seq2seq.generate({"src": src[:lengths[b], b:b + 1]}, beam=3).sequences()
        assert alone[0] == together[b]


def test_beam_of_width_one_is_greedy(seq2seq):
    """The beam-search loop itself (generate() sends beam=1 to the greedy loop)."""
    src, lengths = _sources()
    greedy = seq2seq.generate({"src": src}, {"src": lengths})
    for penalty in (0.0, 1.0):
        beam = _beam_search(Decoder(seq2seq), {"src": src}, {"src": lengths}, 1, 13, penalty, 1)
        np.testing.assert_array_equal(beam.tokens, greedy.tokens)
        np.testing.assert_allclose(beam.scores, greedy.scores, rtol=1e-12)


def _toy(seed):
    net = sg.compile(sg.parse(TOY, "toy.sg").model(), dtype="float64", seed=seed)
    for key in net.params:
        net.params[key] = net.params[key] * 4.0  # peaked distributions: greedy is not always best
    return net


def _every_sequence(vocab=4, end=1, limit=3):
    """Every sequence a decoder can emit: ends with the end token, or reaches the limit."""
    for length in range(1, limit + 1):
        for body in itertools.product([t for t in range(vocab) if t != end], repeat=length - 1):
            yield list(body) + [end]
        if length == limit:
            yield from (list(s) for s in itertools.product(range(vocab), repeat=limit) if end not in s)


def _score(net, sequence):
    tokens = np.array(sequence).reshape(-1, 1)
    logp = _teacher_forced_logp(net, {}, net.model.checked.feedback["y_in"], tokens)
    return float(sum(logp[t, 0, s] for t, s in enumerate(sequence)))


def test_wide_beam_finds_the_best_of_every_sequence():
    net = _toy(seed=5)
    scored = {tuple(s): _score(net, s) for s in _every_sequence()}
    assert len(scored) == 3 + 9 + 27 + 1  # [1], [a, 1], [a, b, 1] and the 27 without the end token
    best = max(scored, key=scored.get)
    found = net.generate(beam=64, length_penalty=0.0)
    row = tuple(found.tokens[:found.lengths[0], 0])
    assert row == best
    assert found.scores[0] == pytest.approx(scored[best], abs=1e-10)
    greedy = net.generate()
    assert greedy.scores[0] < scored[best] - 1e-3  # the search had something to find


def test_beam_ranks_by_length_normalised_score():
    net = _toy(seed=5)
    scored = {tuple(s): _score(net, s) for s in _every_sequence()}
    best = max(scored, key=lambda s: scored[s] / len(s))
    found = net.generate(beam=64, length_penalty=1.0)
    assert tuple(found.tokens[:found.lengths[0], 0]) == best


def test_sampling_is_reproducible_from_a_seed(seq2seq):
    src, lengths = _sources(batch=16, seed=2)
    options = dict(sample=True, temperature=1.5)
    first = seq2seq.generate({"src": src}, {"src": lengths}, seed=7, **options)
    again = seq2seq.generate({"src": src}, {"src": lengths}, seed=7, **options)
    other = seq2seq.generate({"src": src}, {"src": lengths}, seed=8, **options)
    np.testing.assert_array_equal(first.tokens, again.tokens)
    assert not np.array_equal(first.tokens, other.tokens)


def test_top_k_of_one_samples_the_greedy_sequence(seq2seq):
    src, lengths = _sources()
    greedy = seq2seq.generate({"src": src}, {"src": lengths})
    sampled = seq2seq.generate({"src": src}, {"src": lengths}, sample=True, top_k=1, seed=1)
    np.testing.assert_array_equal(sampled.tokens, greedy.tokens)


def test_samples_follow_the_model_distribution():
    """First tokens drawn from the toy model: their frequencies match softmax(logits / T),
    and top_p keeps only the most likely tokens that reach p."""
    net = _toy(seed=2)
    decoder = Decoder(net)
    context = decoder.start({}, count=1)
    logp, _ = decoder.step(np.array([0]), context, context.states)
    drawn = net.generate(sample=True, temperature=2.0, count=4000, seed=0, max_length=1).tokens[0]
    expected = np.exp(log_softmax(logp[0] / 2.0))
    counts = np.bincount(drawn, minlength=4) / 4000
    np.testing.assert_allclose(counts, expected, atol=0.03)
    order = np.argsort(-logp[0])
    p = np.exp(logp[0])
    keep = order[:np.searchsorted(np.cumsum(p[order]), 0.6) + 1]
    nucleus = net.generate(sample=True, top_p=0.6, count=500, seed=0, max_length=1).tokens[0]
    assert set(nucleus.tolist()) == set(keep.tolist())


def test_captioner_generates_one_caption_per_image():
    model = sg.load("models/cnn_lstm.sg").model().with_sizes(hidden=8, channels=2)
    net = sg.compile(model, dtype="float64", seed=0)
    images = np.random.default_rng(0).normal(size=(3, 1, 8, 8))
    greedy = net.generate({"img": images})
    beam = net.generate({"img": images}, beam=3)
    assert greedy.tokens.shape[1] == 3 and greedy.lengths.max() <= 6
    assert (beam.scores >= greedy.scores - 1e-12).all()


def test_a_model_without_feedback_cannot_generate():
    net = sg.compile(sg.load("models/gru_tagger.sg").model(), dtype="float64")
    with pytest.raises(sg.SeqgraphError, match="no input fed back"):
        net.generate({"x": np.zeros((3, 2), dtype=int)})


def test_a_decoder_that_reads_its_whole_axis_cannot_generate():
    source = TOY.replace("output logits = dense(h, vocab)",
                         "output logits = dense(h + max_over_time(h), vocab)")
    net = sg.compile(sg.parse(source, "toy.sg").model(), dtype="float64")
    with pytest.raises(sg.SeqgraphError, match="whole of time axis"):
        net.generate()


@pytest.mark.parametrize("option, message", [
    ("feedback(logits, start = 0, end = 1, max_len = 3)", "did you mean 'max_length'"),
    ("feedback(logits, start = 0, end = 9, max_length = 3)", "end token 9 is not an id"),
    ("feedback(h, start = 0, end = 1, max_length = 3)", "scores over its 4 ids"),
    ("feedback(logit, start = 0, end = 1, max_length = 3)", "did you mean 'logits'"),
    ("feedback(logits, start = 0, end = 1)", "needs max_length"),
    ("feedback(logits, start = 0, end = 1, max_length = 0)", "max_length must be at least 1"),
    ("copy(logits)", "says where it comes from"),
])
def test_feedback_declaration_errors(option, message):
    source = TOY.replace("feedback(logits, start = 0, end = 1, max_length = 3)", option)
    with pytest.raises(sg.SeqgraphError) as caught:
        sg.parse(source, "toy.sg")
    text = caught.value.render()
    assert message in text and "toy.sg:8:" in text


def test_feedback_from_probabilities_decodes_as_from_logits():
    from_probs = TOY.replace("feedback(logits,", "feedback(probs,").replace(
        "    loss = cross_entropy", "    output probs = softmax(logits)\n    loss = cross_entropy")
    nets = [sg.compile(sg.parse(text, "toy.sg").model(), dtype="float64", seed=5) for text in (TOY, from_probs)]
    for net in nets:
        for key in net.params:
            net.params[key] = net.params[key] * 4.0
    found = [net.generate(beam=3, count=2) for net in nets]
    np.testing.assert_array_equal(found[0].tokens, found[1].tokens)
    np.testing.assert_allclose(found[0].scores, found[1].scores, rtol=1e-12)


def test_check_says_which_input_is_fed_back(capsys):
    from seqgraph import cli
    assert cli.main(["check", "models/cnn_lstm.sg"]) == 0
    assert "caption_in  seq[int, 18]  (fed back from logits when generating)" in capsys.readouterr().out


LANGUAGE_MODEL = TOY.replace("feedback(logits, start = 0, end = 1, max_length = 3)", "feedback(logits, max_length = 5)")


def test_a_prefix_starts_every_output_and_the_rest_is_greedy():
    net = _toy(seed=3)
    free = net.generate(count=2)
    given = net.generate(count=2, prefix=[[2, 3], [3]])
    assert given.tokens[:2, 0].tolist() == [2, 3] and given.tokens[0, 1] == 3
    for b, prefix in enumerate(([2, 3], [3])):
        row = given.tokens[:given.lengths[b], b]
        fed = np.concatenate([[0], row[:-1]]).reshape(-1, 1)
        logp = log_softmax(net.predict({"y_in": fed})["logits"])[:, 0]
        free_steps = range(len(prefix), len(row))
        assert all(row[t] == logp[t].argmax() for t in free_steps)
    assert free.tokens[0, 0] != 3 or free.tokens[1, 0] != 3  # the prefix changed something


def test_a_language_model_needs_a_prefix_and_runs_to_its_length():
    net = sg.compile(sg.parse(LANGUAGE_MODEL, "lm.sg").model(), dtype="float64", seed=2)
    with pytest.raises(sg.SeqgraphError, match="no start token: generating needs a prefix"):
        net.generate()
    greedy = net.generate(prefix=[3, 1])
    assert greedy.lengths.tolist() == [5] and greedy.tokens[:2, 0].tolist() == [3, 1]
    fed = greedy.tokens[:-1]
    logp = log_softmax(net.predict({"y_in": fed})["logits"])
    assert (logp[1:, 0].argmax(-1) == greedy.tokens[2:, 0]).all()
    beam = net.generate(prefix=[3, 1], beam=4, length_penalty=0.0)
    assert beam.tokens[:2, 0].tolist() == [3, 1] and beam.scores[0] >= greedy.scores[0] - 1e-12
    narrow = _beam_search(Decoder(net), {}, None, 1, 5, 1.0, 1, [3, 1])
    np.testing.assert_array_equal(narrow.tokens, greedy.tokens)
