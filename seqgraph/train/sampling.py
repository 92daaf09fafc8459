"""Generating text from a character language model, one character at a time.

Each new character is fed back as the next input; the recurrent states are carried from
one call to the next, so a sample of ``n`` characters costs ``n`` one-step runs.
"""

from __future__ import annotations

import numpy

from ..errors import SeqgraphError


def sample_text(network, roles, corpus, length: int, temperature: float = 0.8, prime: str = "",
                seed: int = 0) -> str:
    """``prime`` followed by ``length`` sampled characters."""
    rng = numpy.random.default_rng(seed)
    to_host = network.backend.to_host
    prime = prime or _default_prime(corpus.vocab, getattr(corpus, "unknown", None))
    ids = corpus.encode(prime)
    out = list(ids)
    feed = ids.reshape(-1, 1)
    state = None
    for _ in range(length):
        network.forward({roles.input: feed, roles.target: numpy.zeros_like(feed)}, state=state)
        logits = to_host(network.value(roles.prediction))[-1, 0].astype(numpy.float64)
        probabilities = _softmax(logits / temperature)
        if not numpy.isfinite(probabilities).all():
            raise SeqgraphError(f"cannot sample: the model's prediction after {len(out)} characters "
                                "is not finite", hint="its parameters have overflowed; lower the "
                                                      "learning rate or set clip")
        token = int(rng.choice(len(probabilities), p=probabilities))
        out.append(token)
        feed = numpy.array([[token]])
        state = dict(network.final_states)
    return corpus.decode(numpy.array(out))


def _default_prime(vocab, unknown=None) -> str:
    """A token starting with a capital letter if the corpus has one (texts start with one),
    else its first token other than the ``unknown`` one (a word vocabulary's most frequent)."""
    known = [c for c in vocab if c != unknown]
    capitals = [c for c in known if c[:1].isupper()]
    return capitals[0] if capitals else known[0]


def _softmax(z):
    z = z - z.max()
    e = numpy.exp(z)
    return e / e.sum()
