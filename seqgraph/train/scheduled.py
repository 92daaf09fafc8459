"""Scheduled sampling (Bengio et al., 2015): train a fed-back decoder on its own tokens too.

Teacher forcing feeds a decoder the true previous token at every step; when generating it
reads its own, and its mistakes compound. With ``scheduled_sampling`` set, each training
step decides per example and per time step whether the decoder reads the true previous
token or one drawn from its own output there, the latter with a probability ``p`` that
rises over training:

========================================  ============================================
setting                                   ``p`` at training step ``i`` of ``n``
========================================  ============================================
``linear(start = 0, end = 0.25)``         ``start + (end - start) * i / n``
``exponential(k = 0.999)``                ``1 - k ** i``
``inverse_sigmoid(k = 200)``              ``1 - k / (k + exp(i / k))``
========================================  ============================================

The drawn tokens come from running the decoder step by step (:class:`~seqgraph.generate.
Decoder`) over the mixed prefix, so a token read at step t is what the model says after the
very inputs it read before t; they are plain ids in the training pass, so no gradient flows
through the sampling.
"""

from __future__ import annotations

import math

import numpy

from ..errors import SeqgraphError, did_you_mean
from ..generate import Decoder, draw
from .optim import build_checked, check_number


def _linear(start: float = 0.0, end: float = 0.25):
    start = check_number("linear", "start", start, 0, 1)
    end = check_number("linear", "end", end, 0, 1)
    return lambda i, n: start + (end - start) * min(i / max(n, 1), 1.0)


def _exponential(k: float = 0.999):
    k = check_number("exponential", "k", k, 0, 1)
    return lambda i, n: 1.0 - k ** i


def _inverse_sigmoid(k: float = 200.0):
    k = check_number("inverse_sigmoid", "k", k, 1)
    return lambda i, n: 1.0 - k / (k + math.exp(min(i / k, 700.0)))


SCHEDULES = {"linear": _linear, "exponential": _exponential, "inverse_sigmoid": _inverse_sigmoid}
OFF = "off"


def make_sampling_schedule(call, model):
    """``p(i, n)`` for the ``scheduled_sampling`` setting ``call``, or None when it is off."""
    if call.name == OFF:
        return None
    if call.name not in SCHEDULES:
        raise SeqgraphError(f"unknown scheduled sampling '{call.name}'", call.span,
                            did_you_mean(call.name, [*SCHEDULES, OFF]))
    if not model.checked.feedback:
        raise SeqgraphError(f"scheduled sampling needs an input fed back from the output; model "
                            f"{model.name} has none", call.span,
                            "declare one: input y_in : seq[int, V] = feedback(logits, start = 1, "
                            "end = 2, max_length = 20)")
    if call.args:
        raise SeqgraphError("scheduled sampling takes named arguments", call.span,
                            f"write {call.name}(" + ("start = 0, end = 0.25" if call.name == "linear"
                                                      else "k = ...") + ")")
    return build_checked(SCHEDULES[call.name], call.name, f"scheduled sampling '{call.name}'", call.span,
                  dict(call.kwargs))


def mixed_inputs(decoder: Decoder, inputs: dict, lengths, probability: float, rng, choose=None) -> tuple:
    """``(fed, generated)``: the fed-back input of a training batch with each step t >= 1
    of each example replaced, with ``probability``, by a token drawn from the decoder's
    output after reading ``fed[:t]``; ``generated`` marks the replaced places. ``choose``
    picks a token per row from log-probabilities (default: a sample)."""
    from .generation import decoder_feed
    choose = choose or (lambda logp: draw(logp, 1.0, 0, 1.0, rng))
    name = next(n for n, node in decoder.net.model.checked.inputs.items() if node == decoder.feedback.input)
    truth = numpy.asarray(decoder.net.backend.to_host(inputs[name]))
    generated = rng.random(truth.shape) < probability
    generated[0] = False  # the first step reads the start token
    fed = truth.copy()
    if not generated.any():
        return fed, generated
    context = decoder.start(*decoder_feed(decoder.net.model, inputs, lengths))
    states = context.states
    for t in range(1, len(truth)):
        logp, states = decoder.step(fed[t - 1], context, states)
        fed[t] = numpy.where(generated[t], choose(logp), truth[t])
        if not generated[t + 1:].any():
            break
    return fed, generated
