"""The built-in synthetic sequence tasks, generated from a seed: adding, copy, parity,
majority, and the sequence-to-sequence reverse and sort."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...errors import SeqgraphError
from .dataset import ID_DTYPE, PAD, TIME, Dataset
from .validation import check_count


def adding(n: int = 10_000, seed: int = 0, *, length: int = 50) -> Dataset:
    """The adding problem (Hochreiter & Schmidhuber, 1997; as in Le et al., 2015).

    ``x`` is ``(N, length, 2)`` float32: channel 0 holds values drawn uniformly from [0, 1),
    channel 1 is a marker that is 1 at exactly two steps, one in the first half and one in
    the second half, and 0 elsewhere. The target ``y`` is ``(N, 1)``: the sum of the two
    marked values. Predicting the mean, 1, scores an MSE of about 1/6; solving it needs
    memory across the whole sequence. Metric mse.
    """
    where = "builtin dataset 'adding'"
    n = check_count(where, "n", n, 1)
    length = check_count(where, "length", length, 2)
    rng = np.random.default_rng(seed)
    values = rng.random((n, length))
    half = length // 2
    first = rng.integers(0, half, n)
    second = rng.integers(half, length, n)
    marker = np.zeros((n, length))
    rows = np.arange(n)
    marker[rows, first] = 1.0
    marker[rows, second] = 1.0
    x = np.stack([values, marker], axis=-1).astype(np.float32)
    y = (x[rows, first, 0] + x[rows, second, 0])[:, None]
    return Dataset(arrays={"x": x, "y": y}, kind="sequence", metric="mse",
                   time_axes={"x": TIME}, name="builtin:adding",
                   info={"sizes": {"n": n, "seed": seed, "length": length}})


def copy(n: int = 10_000, seed: int = 0, *, symbols: int = 8, count: int = 10,
         delay: int = 50) -> Dataset:
    """The copy (memory) task (Hochreiter & Schmidhuber, 1997; Arjovsky et al., 2016).

    Ids: 0 is the blank, ``1 .. symbols`` are symbols, ``symbols + 1`` is the delimiter.
    Each example runs ``2 * count + delay + 1`` steps::

        x:  s_1 .. s_count | 0 x delay | delimiter | 0 x count
        y:  0 ................................... | s_1 .. s_count

    ``x`` and ``y`` are ``(N, steps)`` int64 with a target at every step; the model must
    output blanks until the delimiter, then recall the symbols. Metric accuracy over the
    recall steps only (``metric_steps``). A model without memory gets 1/symbols of them.
    """
    where = "builtin dataset 'copy'"
    n = check_count(where, "n", n, 1)
    symbols = check_count(where, "symbols", symbols, 1)
    count = check_count(where, "count", count, 1)
    delay = check_count(where, "delay", delay, 0)
    rng = np.random.default_rng(seed)
    steps = 2 * count + delay + 1
    recall = steps - count
    data = rng.integers(1, symbols + 1, (n, count))
    x = np.zeros((n, steps), dtype=ID_DTYPE)
    y = np.zeros((n, steps), dtype=ID_DTYPE)
    x[:, :count] = data
    x[:, count + delay] = symbols + 1
    y[:, recall:] = data
    return Dataset(arrays={"x": x, "y": y}, kind="sequence", metric="accuracy",
                   time_axes={"x": TIME, "y": TIME}, vocab_size=symbols + 2,
                   num_classes=symbols + 2, metric_steps=(recall, steps), name="builtin:copy",
                   info={"blank": 0, "delimiter": symbols + 1,
                         "sizes": {"n": n, "seed": seed, "symbols": symbols, "count": count,
                                   "delay": delay}})


def _variable_lengths(where: str, rng, n: int, min_length: int, max_length: int) -> np.ndarray:
    """``n`` lengths drawn uniformly from ``min_length .. max_length``."""
    min_length = check_count(where, "min_length", min_length, 1)
    max_length = check_count(where, "max_length", max_length, 1)
    if min_length > max_length:
        raise SeqgraphError(f"{where}: min_length ({min_length}) is larger than max_length "
                            f"({max_length})")
    return rng.integers(min_length, max_length + 1, n).astype(ID_DTYPE)


def _past_length(lengths: np.ndarray, steps: int) -> np.ndarray:
    """``(N, steps)`` booleans: True at the padding, past each example's length."""
    return np.arange(steps)[None, :] >= lengths[:, None]


def parity(n: int = 10_000, seed: int = 0, *, min_length: int = 2,
           max_length: int = 20) -> Dataset:
    """Parity of a variable-length bit string: ``label`` is 1 when ``x`` holds an odd
    number of 1s.

    ``x`` is ``(N, max_length)`` bits (ids 0 and 1; padding is 0, which leaves the parity
    unchanged), lengths drawn uniformly from ``min_length .. max_length``; ``label`` is
    ``(N,)``. Every bit matters, so it cannot be solved from a few positions. Metric
    accuracy.
    """
    where = "builtin dataset 'parity'"
    n = check_count(where, "n", n, 1)
    rng = np.random.default_rng(seed)
    lengths = _variable_lengths(where, rng, n, min_length, max_length)
    x = rng.integers(0, 2, (n, int(max_length))).astype(ID_DTYPE)
    x[_past_length(lengths, x.shape[1])] = PAD
    label = (x.sum(axis=1) % 2).astype(ID_DTYPE)
    return Dataset(arrays={"x": x, "label": label}, kind="sequence", metric="accuracy",
                   time_axes={"x": TIME}, lengths={TIME: lengths}, vocab_size=2, num_classes=2,
                   name="builtin:parity",
                   info={"sizes": {"n": n, "seed": seed, "min_length": min_length,
                                   "max_length": max_length}})


def majority(n: int = 10_000, seed: int = 0, *, symbols: int = 4, min_length: int = 5,
             max_length: int = 30) -> Dataset:
    """Does a variable-length sequence hold more of symbol 1 than of symbol 2?

    ``x`` is ``(N, max_length)`` ids in ``1 .. symbols`` (0 is padding), lengths drawn
    uniformly from ``min_length .. max_length``; ``label`` is 1 when symbol 1 occurs more
    often than symbol 2, else 0. Ties never occur (one symbol of a tied sequence is
    redrawn). The model has to count over the whole sequence. Metric accuracy.
    """
    where = "builtin dataset 'majority'"
    n = check_count(where, "n", n, 1)
    symbols = check_count(where, "symbols", symbols, 2)
    rng = np.random.default_rng(seed)
    lengths = _variable_lengths(where, rng, n, min_length, max_length)
    x = rng.integers(1, symbols + 1, (n, int(max_length))).astype(ID_DTYPE)
    x[_past_length(lengths, x.shape[1])] = PAD
    for i in np.flatnonzero((x == 1).sum(axis=1) == (x == 2).sum(axis=1)):
        j = rng.integers(0, lengths[i])  # a tie: flip one step to break it
        x[i, j] = {1: 2, 2: 1}.get(int(x[i, j]), int(rng.integers(1, 3)))
    label = ((x == 1).sum(axis=1) > (x == 2).sum(axis=1)).astype(ID_DTYPE)
    return Dataset(arrays={"x": x, "label": label}, kind="sequence", metric="accuracy",
                   time_axes={"x": TIME}, lengths={TIME: lengths}, vocab_size=symbols + 1,
                   num_classes=2, name="builtin:majority",
                   info={"pad": PAD, "sizes": {"n": n, "seed": seed, "symbols": symbols,
                                               "min_length": min_length,
                                               "max_length": max_length}})


BOS, EOS, FIRST_SYMBOL = 1, 2, 3  # the special ids of every sequence-to-sequence task


def _seq2seq(task: str, n: int, seed: int, symbols: int, min_length: int, max_length: int,
             transform: Callable) -> Dataset:
    """A sequence-to-sequence dataset whose target is ``transform(src, lengths)``.

    Ids: 0 padding, 1 BOS, 2 EOS, ``3 .. symbols + 2`` symbols. ``src`` is ``(N, S)``;
    ``tgt_in`` is BOS then the target and ``tgt_out`` is the target then EOS, both
    ``(N, S + 1)``, so ``tgt_out[t]`` is what the decoder must say after reading
    ``tgt_in[: t + 1]``. Time axes ``"src"`` and ``"tgt"``; target lengths are source
    lengths + 1.
    """
    where = f"builtin dataset '{task}'"
    n = check_count(where, "n", n, 1)
    symbols = check_count(where, "symbols", symbols, 1)
    rng = np.random.default_rng(seed)
    lengths = _variable_lengths(where, rng, n, min_length, max_length)
    steps = int(max_length)
    src = rng.integers(FIRST_SYMBOL, symbols + FIRST_SYMBOL, (n, steps)).astype(ID_DTYPE)
    src[_past_length(lengths, steps)] = PAD
    target = transform(src, lengths)
    rows = np.arange(n)
    tgt_in = np.zeros((n, steps + 1), dtype=ID_DTYPE)
    tgt_in[:, 0] = BOS
    tgt_in[:, 1:] = target
    tgt_out = np.zeros((n, steps + 1), dtype=ID_DTYPE)
    tgt_out[:, :steps] = target
    tgt_out[rows, lengths] = EOS
    return Dataset(arrays={"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}, kind="sequence",
                   metric="accuracy", time_axes={"src": "src", "tgt_in": "tgt", "tgt_out": "tgt"},
                   lengths={"src": lengths, "tgt": lengths + 1}, vocab_size=symbols + FIRST_SYMBOL,
                   num_classes=symbols + FIRST_SYMBOL, name=f"builtin:{task}",
                   info={"pad": PAD, "bos": BOS, "eos": EOS,
                         "sizes": {"n": n, "seed": seed, "symbols": symbols,
                                   "min_length": min_length, "max_length": max_length}})


def _reversed_rows(src: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each row's first ``lengths[i]`` ids in reverse order, padded with 0."""
    index = lengths[:, None] - 1 - np.arange(src.shape[1])[None, :]
    out = np.take_along_axis(src, np.maximum(index, 0), axis=1)
    out[index < 0] = PAD
    return out


def _sorted_rows(src: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Each row's first ``lengths[i]`` ids in ascending order, padded with 0."""
    padding = _past_length(lengths, src.shape[1])
    out = np.sort(np.where(padding, np.iinfo(ID_DTYPE).max, src), axis=1)
    out[padding] = PAD
    return out


def reverse(n: int = 10_000, seed: int = 0, *, symbols: int = 10, min_length: int = 3,
            max_length: int = 12) -> Dataset:
    """Sequence to sequence: the target is the source reversed (see :func:`_seq2seq` for
    the arrays ``src``, ``tgt_in``, ``tgt_out``). Metric token accuracy."""
    return _seq2seq("reverse", n, seed, symbols, min_length, max_length, _reversed_rows)


def sort(n: int = 10_000, seed: int = 0, *, symbols: int = 10, min_length: int = 3,
         max_length: int = 12) -> Dataset:
    """Sequence to sequence: the target is the source sorted ascending (repeats kept; see
    :func:`_seq2seq` for the arrays). Metric token accuracy."""
    return _seq2seq("sort", n, seed, symbols, min_length, max_length, _sorted_rows)
