"""Generation with output feedback: greedy, sampled and beam-search decoding.

A model says which of its inputs is fed back from its own output::

    input tgt_in : seq[int, vocab, time = tgt] = feedback(logits, start = 1, end = 2, max_length = 13)

In training ``tgt_in`` is given (teacher forcing); when generating, its step t is the token
chosen from ``logits`` at step t-1. :class:`Decoder` compiles two parts of the model
(:mod:`seqgraph.parts`): the *context*, everything that does not depend on the fed-back
input (an encoder, an image's features), run once per batch; and the *step*, the decoder at
one time step with its recurrent states cut off as inputs and handed back as outputs, run
once per generated token. ``T`` tokens cost one context run and ``T`` step runs: no step
re-runs the prefix. What :func:`generate` means, as a plain loop::

    context, states = decoder.start(inputs)
    tokens = [start] * batch
    for t in range(max_length):
        scores, states = decoder.step(tokens, context, states)   # log-probabilities (B, V)
        tokens = choose(scores)         # the argmax, a sample, or the best extensions of beams
        # a row that has emitted the end token is finished: it adds nothing more

Beam search keeps ``beam`` rows per example; each step extends every row by every token,
keeps the best ``beam`` extensions (ranked by the sum of log-probabilities divided by
``length ** length_penalty``) and reorders the recurrent states to follow their rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import networkx as nx
import numpy

from .errors import SeqgraphError, did_you_mean
from .ir import node_of, nodes_of
from .parts import compile_part

# ops that read a whole sequence at once: on the decoder's time axis they would need steps
# not generated yet
WHOLE_SEQUENCE_OPS = ("reverse", "max_over_time", "mean_over_time", "last", "first", "attention")


@dataclass
class Generated:
    """What a decoder produced: ``tokens`` (T, B) ids, time-major like every sequence, 0
    past each row's length; ``lengths`` (B,) the tokens of each row (the end token counted
    where it was emitted); ``scores`` (B,) the sum of the chosen tokens' log-probabilities."""
    tokens: numpy.ndarray
    lengths: numpy.ndarray
    scores: numpy.ndarray
    end: Optional[int]

    def sequences(self) -> list:
        """Each row's tokens (the prefix included) without the end token, as lists of ids."""
        rows = [[int(t) for t in self.tokens[:n, b]] for b, n in enumerate(self.lengths)]
        return [row[:-1] if row and self.end is not None and row[-1] == self.end else row for row in rows]


@dataclass
class Context:
    """A batch's context values by node id, and the decoder's initial states by state."""
    values: dict
    states: dict
    batch: int


class Decoder:
    """A model with a fed-back input, split into a context part and a one-step part."""

    def __init__(self, net, name: Optional[str] = None):
        model = net.model
        self.net = net
        self.feedback = _chosen_feedback(model, name)
        graph = model.graph
        self.axis = node_of(graph, self.feedback.input).time
        source = self.feedback.source
        self.scores = node_of(graph, source).args[0] if node_of(graph, source).op == "softmax" else source
        on_axis = {n for n, d in nodes_of(graph) if d.time == self.axis}
        stepped = on_axis.union(*(nx.descendants(graph, n) for n in on_axis))
        self.finals = {prev: model.checked.final_states[key] for key, prev in model.checked.states.items()
                       if prev in stepped}
        self.lengths = model.checked.time_axes[self.axis]
        self.starts = {prev: f"{prev}:start" for prev in self.finals}
        boundary = {arg for node in stepped for arg in node_of(graph, node).args if arg not in stepped
                    and node_of(graph, arg).op not in ("param", "const", "dropout_mask")}
        self.step_part = compile_part(model, {"scores": self.scores, **self.finals},
                                      cut=boundary | {self.lengths},
                                      renamed_args={prev: {1: leaf} for prev, leaf in self.starts.items()})
        # only what one step computes must be causal (a loss may well read the whole axis)
        _check_causal(model, stepped & set(self.step_part.graph), self.axis, set(self.finals.values()))
        self.cut = sorted(n for n in boundary if n in self.step_part.graph and n != self.lengths)
        for name, node in self.step_part.checked.inputs.items():
            if node != self.feedback.input and node not in self.cut:
                raise SeqgraphError(f"input '{name}' runs on the decoder's time axis '{self.axis}': "
                                    "its steps are not known ahead when generating",
                                    node_of(graph, node).span, "feed it back too, or move it to "
                                                               "another time axis")
        initial = {node_of(graph, prev).args[1] for prev in self.finals}
        wanted = {node: node for node in set(self.cut) | initial}
        self.context_part = compile_part(model, wanted) if wanted else None

    def start(self, inputs: dict, lengths=None, copies: int = 1, count: int = 1) -> Context:
        """Run the context part on ``inputs`` (no fed-back input, no targets) and repeat each
        example's rows ``copies`` times (one row per beam). A model with no such input makes
        ``count`` examples."""
        from .runtime import prepare_feed
        net, values, batch = self.net, {}, 1
        part = self.context_part
        if part is not None:
            feed = prepare_feed(part, net.backend, net.dtype, inputs, lengths)
            env = part.program.forward(net.backend.xp, feed, net.params, net.dtype).env
            values, batch = {node: env[node] for node in part.checked.outputs.values()}, feed.batch
        if part is None or not part.checked.inputs:
            copies *= count  # one example, made count times
        values = {node: self._repeat(node, value, copies) for node, value in values.items()}
        states = {prev: values[node_of(self.net.model.graph, prev).args[1]] for prev in self.finals}
        return Context({node: values[node] for node in self.cut}, states, batch * copies)

    def _repeat(self, node, value, copies: int):
        vtype = node_of(self.net.model.graph, node).type
        if copies == 1 or not vtype.batched:
            return value
        return self.net.backend.xp.repeat(value, copies, axis=1 if vtype.is_seq else 0)

    def step(self, tokens, context: Context, states: dict) -> tuple:
        """One generated step for every row: the log-probabilities of the next token (host
        float64, ``(B, V)``) after reading ``tokens`` (B,), and the states after it."""
        from .runtime import Feed, dropout_masks
        net = self.net
        backend, xp, rows = net.backend, net.backend.xp, context.batch
        arrays = {self.feedback.input: backend.asarray(numpy.asarray(tokens).reshape(1, rows), dtype="int64"),
                  self.lengths: xp.ones(rows, dtype="int64"), **context.values}
        arrays.update({self.starts[prev]: value for prev, value in states.items()})
        steps = {self.axis: 1}
        masks = dropout_masks(self.step_part.graph, backend, net.dtype, steps, rows, False, None)
        env = self.step_part.program.forward(xp, Feed(arrays, steps, rows, masks), net.params, net.dtype).env
        logits = backend.to_host(env[self.scores])[0].astype(numpy.float64)
        return log_softmax(logits), {prev: env[final] for prev, final in self.finals.items()}

    def reorder(self, states: dict, rows) -> dict:
        """The states with row ``i`` taken from row ``rows[i]`` (beams follow their parents)."""
        index = self.net.backend.asarray(numpy.asarray(rows), dtype="int64")
        return {prev: self.net.backend.xp.take(value, index, axis=0) for prev, value in states.items()}


def _chosen_feedback(model, name):
    feedback = model.checked.feedback
    usage = "input y_in : seq[int, V] = feedback(logits, start = 1, end = 2, max_length = 20)"
    if not feedback:
        raise SeqgraphError(f"model {model.name} has no input fed back from its output; nothing to "
                            "generate", model.ast.span, f"declare one: {usage}")
    if name is None:
        if len(feedback) > 1:
            raise SeqgraphError(f"model {model.name} feeds back {', '.join(feedback)}: name one")
        return next(iter(feedback.values()))
    if name not in feedback:
        raise SeqgraphError(f"model {model.name} has no fed-back input '{name}'",
                            hint=did_you_mean(name, feedback))
    return feedback[name]


def _check_causal(model, stepped: set, axis: str, finals: set) -> None:
    """A decoder step may not read later steps of its own time axis."""
    graph = model.graph
    for node in stepped - finals:
        data = node_of(graph, node)
        read = data.args[1:2] if data.op == "attention" else data.args[:1]
        if data.op in WHOLE_SEQUENCE_OPS and any(node_of(graph, a).time == axis for a in read):
            raise SeqgraphError(f"{data.op}(...) reads the whole of time axis '{axis}', which is "
                                "generated one step at a time", data.span,
                                "a fed-back decoder may only look back, through its states")


def log_softmax(z):
    """Row-wise log-probabilities of scores ``z`` (host arrays)."""
    z = z - z.max(axis=-1, keepdims=True)
    return z - numpy.log(numpy.exp(z).sum(axis=-1, keepdims=True))


def generate(net, inputs: dict, lengths=None, *, feedback: Optional[str] = None, beam: int = 1,
             sample: bool = False, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             seed: int = 0, max_length: Optional[int] = None, length_penalty: float = 1.0,
             count: int = 1, prefix=None) -> Generated:
    """Decode ``inputs`` (the model's inputs but the fed-back one and the targets) with
    output feedback: greedy by default; ``sample=True`` draws each token (``temperature``,
    ``top_k`` most likely, ``top_p`` nucleus; reproducible from ``seed``); ``beam=K`` runs
    beam search with ``length_penalty``. ``max_length`` overrides the declared one; ``count``
    rows are made when the model has no other input to take the batch from. ``prefix``
    (ids, or one list of ids per row) is the start of every output, given rather than chosen
    (a decoder without a start token needs one)."""
    decoder = net.decoder(feedback)
    limit = max_length or decoder.feedback.max_length
    _check_options(beam, temperature, top_k, top_p, limit, count)
    if beam > 1:
        return _beam_search(decoder, inputs, lengths, beam, limit, length_penalty, count, prefix)
    rng = numpy.random.default_rng(seed)
    choose = (lambda logp: draw(logp, temperature, top_k, top_p, rng)) if sample else \
        (lambda logp: logp.argmax(axis=1))
    return _each_step(decoder, decoder.start(inputs, lengths, count=count), limit, choose, prefix)


def _opening(feedback, prefix, rows: int, limit: int) -> tuple:
    """``(forced, first, done)``: the ids each row's output must have at each step
    (``(limit, rows)``, -1 where free), the tokens fed first, and how many output steps are
    given before the first run (1 without a start token: the prefix's first id)."""
    forced = numpy.full((limit, rows), -1, dtype=numpy.int64)
    given = [] if prefix is None else list(prefix)
    per_row = given if given and not numpy.isscalar(given[0]) else [given] * rows
    if len(per_row) != rows:
        raise SeqgraphError(f"prefix has {len(per_row)} rows, the batch {rows}")
    for row, ids in enumerate(per_row):
        ids = [int(i) for i in ids][:limit]
        forced[:len(ids), row] = ids
    if feedback.start is not None:
        return forced, numpy.full(rows, feedback.start), 0
    if (forced[0] < 0).any():
        raise SeqgraphError("this decoder has no start token: generating needs a prefix for every row",
                            feedback.span, "give a prefix (a prime; --input TEXT on the command "
                                           "line), or declare feedback(..., start = ID)")
    return forced, forced[0].copy(), 1


def _end(feedback) -> int:
    """The end token, or -1 (no id) when sequences run to their length."""
    return -1 if feedback.end is None else feedback.end


def _check_options(beam, temperature, top_k, top_p, limit, count) -> None:
    for name, value, ok in (("beam", beam, beam >= 1), ("temperature", temperature, temperature > 0),
                            ("top_k", top_k, top_k >= 0), ("top_p", top_p, 0 < top_p <= 1),
                            ("max_length", limit, limit >= 1), ("count", count, count >= 1)):
        if not ok:
            raise SeqgraphError(f"{name} = {value} is out of range",
                                hint="beam, max_length and count are at least 1, temperature is "
                                     "positive, top_k at least 0, top_p in (0, 1]")


def _each_step(decoder: Decoder, context: Context, limit: int, choose, prefix=None) -> Generated:
    """Greedy or sampled decoding: one token per row per step, chosen by ``choose`` where
    the prefix does not say."""
    end = _end(decoder.feedback)
    rows = numpy.arange(context.batch)
    forced, tokens, done = _opening(decoder.feedback, prefix, context.batch, limit)
    out = numpy.zeros((limit, context.batch), dtype=numpy.int64)
    out[:done] = forced[:done]
    finished = numpy.zeros(context.batch, dtype=bool)
    lengths, scores = numpy.full(context.batch, done, dtype=numpy.int64), numpy.zeros(context.batch)
    states = context.states
    for t in range(done, limit):
        logp, states = decoder.step(tokens, context, states)
        chosen = numpy.where(forced[t] >= 0, forced[t], choose(logp))
        scores += numpy.where(finished, 0.0, logp[rows, chosen])
        out[t] = numpy.where(finished, 0, chosen)
        lengths += ~finished
        finished |= chosen == end
        tokens = numpy.where(finished, end, chosen)
        if finished.all():
            break
    return Generated(out[:lengths.max()], lengths, scores, decoder.feedback.end)


def draw(logp, temperature: float, top_k: int, top_p: float, rng):
    """One token per row drawn from ``softmax(logp / temperature)``, cut to the ``top_k``
    most likely tokens and to the smallest set whose probability reaches ``top_p``."""
    z = logp / temperature
    order = numpy.argsort(-z, axis=1, kind="stable")
    ranked = numpy.take_along_axis(z, order, axis=1)
    if top_k:
        ranked[:, top_k:] = -numpy.inf
    p = numpy.exp(log_softmax(ranked))
    if top_p < 1:
        before = numpy.cumsum(p, axis=1) - p  # the probability of the better-ranked tokens
        p = numpy.where(before < top_p, p, 0.0)
        p /= p.sum(axis=1, keepdims=True)
    u = rng.random(len(p))[:, None]
    picked = numpy.minimum((numpy.cumsum(p, axis=1) < u).sum(axis=1), p.shape[1] - 1)
    return order[numpy.arange(len(p)), picked]


def _beam_search(decoder: Decoder, inputs, lengths, width: int, limit: int, alpha: float,
                 count: int, prefix=None) -> Generated:
    """The best of ``width`` beams per example (see the module docstring)."""
    end = _end(decoder.feedback)
    context = decoder.start(inputs, lengths, copies=width, count=count)
    batch = context.batch // width
    forced, first, done = _opening(decoder.feedback, prefix, batch, limit)
    scores = numpy.full((batch, width), -numpy.inf)
    scores[:, 0] = 0.0  # every beam starts alike: expand one of them
    history = numpy.repeat(forced[:done].T[:, None, :], width, axis=1)
    finished = numpy.zeros((batch, width), dtype=bool)
    sizes = numpy.full((batch, width), done, dtype=numpy.int64)
    tokens, states, examples = numpy.repeat(first, width), context.states, numpy.arange(batch)[:, None]
    for t in range(done, limit):
        logp, states = decoder.step(tokens, context, states)
        logp = logp.reshape(batch, width, -1)
        vocab = logp.shape[2]
        given = forced[t] >= 0  # rows whose prefix says this step's token
        logp[given] = numpy.where(numpy.arange(vocab) == forced[t][given, None, None], logp[given], -numpy.inf)
        logp[finished] = -numpy.inf
        logp[finished, end] = 0.0  # a finished beam stays as it is
        total = (scores[:, :, None] + logp).reshape(batch, -1)
        grown = (sizes + ~finished)[:, :, None].repeat(vocab, axis=2).reshape(batch, -1)
        best = numpy.argsort(-(total / grown ** alpha), axis=1, kind="stable")[:, :width]
        parent, token = best // vocab, best % vocab
        was_finished = finished[examples, parent]
        scores = numpy.take_along_axis(total, best, axis=1)
        sizes = sizes[examples, parent] + ~was_finished
        history = numpy.concatenate([history[examples, parent], numpy.where(was_finished, 0, token)[:, :, None]],
                                    axis=2)
        finished = was_finished | (token == end)
        states = decoder.reorder(states, (examples * width + parent).reshape(-1))
        tokens = numpy.where(finished, end, token).reshape(-1)
        if finished.all():
            break
    chosen = numpy.argmax(scores / numpy.maximum(sizes, 1) ** alpha, axis=1)
    tokens = history[numpy.arange(batch), chosen].T
    lengths = sizes[numpy.arange(batch), chosen]
    return Generated(tokens[:lengths.max()], lengths, scores[numpy.arange(batch), chosen],
                     decoder.feedback.end)
