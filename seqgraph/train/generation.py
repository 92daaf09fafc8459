"""Generating from a dataset's examples and scoring what was *generated* (not teacher-forced).

Behind ``seqgraph generate`` and the pairs a training run prints after each epoch for models
with a fed-back decoder input. The decoder reads every input of an example except the
fed-back one and the targets; what it generates is compared with the target sequence:

- **exact match**: the fraction of examples whose generated sequence (up to its end token)
  is the target's, token for token;
- **token accuracy**: the fraction of target tokens (the end token included) that the
  generated sequence has at the same step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy

from ..ir import node_of
from . import data as datasets


@dataclass
class Decoded:
    """The examples of a dataset with what was generated for them (lists of ids, no end
    token) and what the targets say."""
    generated: list
    expected: list
    end: int

    def exact_match(self) -> float:
        """The fraction of examples generated exactly."""
        return sum(g == e for g, e in zip(self.generated, self.expected)) / max(len(self.expected), 1)

    def token_accuracy(self) -> float:
        """The fraction of target tokens (end token included) generated at their step."""
        right = total = 0
        tail = [] if self.end is None else [self.end]
        for generated, expected in zip(self.generated, self.expected):
            generated, expected = generated + tail, expected + tail
            right += sum(g == e for g, e in zip(generated, expected))
            total += len(expected)
        return right / max(total, 1)


def decoder_inputs(model) -> list:
    """The input names a decoder reads: all but the fed-back ones and the targets."""
    return [name for name in model.checked.inputs if name not in model.checked.feedback]


def decoder_feed(model, arrays: dict, lengths) -> tuple:
    """``(inputs, lengths)`` of a batch that a decoder reads (no fed-back input, no target)."""
    names = decoder_inputs(model)
    axes = {node_of(model.graph, model.inputs[n]).time for n in names}
    given = {axis: value for axis, value in (lengths or {}).items() if axis in axes}
    return {name: arrays[name] for name in names}, given or None


def decode_dataset(net, data: datasets.Dataset, target: str, batch: int = 256, **options) -> Decoded:
    """Generate for every example of ``data`` (``options`` as for ``net.generate``) and
    collect the ``target`` sequences beside them."""
    model = net.model
    feedback = next(iter(model.checked.feedback.values()))
    generated, expected = [], []
    for arrays, lengths in datasets.batches(data, batch, shuffle=False):
        result = net.generate(*decoder_feed(model, arrays, lengths), **options)
        generated.extend(result.sequences())
        expected.extend(_target_rows(arrays[target], lengths.get(data.time_axes.get(target)), feedback.end))
    return Decoded(generated, expected, feedback.end)


def _target_rows(target, lengths, end: int) -> list:
    """Each column of a time-major target up to its length, without its end token."""
    rows = []
    for b in range(target.shape[1]):
        row = [int(t) for t in target[: (lengths[b] if lengths is not None else target.shape[0]), b]]
        rows.append(row[:-1] if row and end is not None and row[-1] == end else row)
    return rows


def source_rows(data: datasets.Dataset, name: str) -> list:
    """The examples of input ``name`` as lists of ids (sequences up to their length)."""
    array = data.arrays[name]
    axis = data.time_axes.get(name)
    if axis is None or array.ndim != 2:
        return [None] * len(array)
    lengths = data.lengths[axis] if data.lengths and axis in data.lengths else [array.shape[1]] * len(array)
    return [[int(t) for t in row[:n]] for row, n in zip(array, lengths)]


def render(ids, data: datasets.Dataset = None, vocab=None) -> str:
    """A sequence of ids as text: characters of a text vocabulary, the letters of a
    captioning task, else the ids themselves."""
    if vocab:
        return "".join(vocab[i] for i in ids)
    letters = (data.info.get("letters") if data is not None else None)
    if letters:
        first = data.info.get("eos", 2) + 1
        return "".join(letters[i - first] if i >= first else "?" for i in ids)
    return " ".join(str(i) for i in ids)


def pair_lines(decoded: Decoded, data: datasets.Dataset, source: str, show: int) -> list:
    """``source -> generated (target ...)`` for the first ``show`` examples."""
    sources = source_rows(data, source) if source else [None] * len(decoded.generated)
    lines = []
    for index, (src, got, want) in enumerate(list(zip(sources, decoded.generated, decoded.expected))[:show]):
        mark = "ok" if got == want else f"want {render(want, data)}"
        shown = f"example {index}" if src is None else render(src, data)
        lines.append(f"  {shown}  ->  {render(got, data)}   ({mark})")
    return lines


def summary(decoded: Decoded) -> str:
    """One line: how well the generated outputs match the targets."""
    return (f"generated exact match {decoded.exact_match():.3f}, token accuracy "
            f"{decoded.token_accuracy():.3f} on {len(decoded.expected)} examples")


def as_numpy_rows(decoded_rows: list) -> tuple:
    """Lists of ids → ``(tokens (N, T) padded with 0, lengths (N,))``."""
    lengths = numpy.array([len(r) for r in decoded_rows], dtype=numpy.int64)
    tokens = numpy.zeros((len(decoded_rows), max(lengths.max(initial=0), 1)), dtype=numpy.int64)
    for row, ids in enumerate(decoded_rows):
        tokens[row, :len(ids)] = ids
    return tokens, lengths
