"""Batches of a dataset, handed out time-major, and truncated-BPTT windows over a text
stream."""

from __future__ import annotations

from typing import Iterator, Union

import numpy as np

from ...errors import SeqgraphError
from .dataset import ID_DTYPE, PAD, Dataset
from .validation import check_count


def batches(data: Dataset, batch_size: int, rng: Union[np.random.Generator, int, None] = None,
            shuffle: bool = True, drop_last: bool = False) -> Iterator[tuple]:
    """Yield ``(arrays, lengths)`` batches, time-major, covering every example once.

    ``arrays`` maps each name to its batch: a sequence ``(T, B, ...)``, cut to the longest
    example in this batch and padded with 0 past each example's length; anything else
    ``(B, ...)``. ``lengths`` maps each time axis that has variable lengths to the ``(B,)``
    valid steps of the batch's examples (empty when every sequence fills its axis).
    The order is a permutation drawn from ``rng`` (a Generator or a seed; required) when
    ``shuffle``, else the stored order. The last batch is smaller when ``batch_size`` does
    not divide the data (unless ``drop_last``). Text datasets are walked with
    :func:`bptt_windows` instead.
    """
    if data.kind == "text":
        raise SeqgraphError(f"{data.name}: a text dataset is one stream of characters; walk it "
                            "with bptt_windows(ids, batch_size, window), not batches()")
    check_count(data.name, "the batch size", batch_size, 1)
    n = len(data)
    if shuffle:
        if rng is None:
            raise SeqgraphError(f"{data.name}: shuffled batches need rng, a numpy Generator or "
                                "a seed, so that a run can be repeated")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        order = rng.permutation(n)
    else:
        order = np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield _batch(data, order[start:start + batch_size])


def _batch(data: Dataset, index: np.ndarray) -> tuple:
    """The examples ``index`` as a time-major batch (see :func:`batches`)."""
    lengths = {axis: v[index] for axis, v in (data.lengths or {}).items()}
    arrays = {}
    for name, array in data.arrays.items():
        part = array[index]  # fancy indexing copies, so padding can be cleared in place
        axis = data.time_axes.get(name)
        if axis is not None:
            if axis in lengths:
                steps = int(lengths[axis].max()) if len(index) else 0
                part = part[:, :steps]
                part[np.arange(steps)[None, :] >= lengths[axis][:, None]] = PAD
            part = np.ascontiguousarray(np.swapaxes(part, 0, 1))
        arrays[name] = part
    return arrays, lengths


def bptt_windows(ids, batch_size: int, window: int,
                 drop_last: bool = False) -> Iterator[tuple]:
    """Yield ``(x, y)`` windows of a stream of ids for truncated backprop through time.

    The stream is cut into ``batch_size`` equal contiguous pieces, one per batch column
    (the few ids at the end that do not divide evenly are dropped). Windows then walk all
    columns forward together, and **each column is contiguous across windows**: column ``b``
    of one window starts exactly where column ``b`` of the previous window ended. So the
    hidden state left at the end of one window is the right initial state for the next:
    carry it forward (but do not backpropagate into the previous window). ``y`` is ``x``
    shifted by one character: the id to predict at every step. In loop form::

        L = (len(ids) - 1) // batch_size                      # steps per column
        for k, start in enumerate(range(0, L, window)):
            stop = min(start + window, L)
            x[t, b] = ids[b * L + start + t]                  # for t in range(stop - start)
            y[t, b] = ids[b * L + start + t + 1]

    Every ``x`` and ``y`` is ``(window, batch_size)`` int64, time-major; the last window is
    shorter when ``window`` does not divide ``L``, unless ``drop_last`` skips it.
    """
    ids = np.asarray(ids)
    batch_size = check_count("bptt_windows", "the batch size", batch_size, 1)
    window = check_count("bptt_windows", "the window (bptt) length", window, 1)
    if ids.ndim != 1:
        raise SeqgraphError(f"bptt_windows: expected a 1-D stream of ids, got shape {ids.shape}")
    steps = (len(ids) - 1) // batch_size
    if steps < 1:
        raise SeqgraphError(f"bptt_windows: a text of {len(ids)} characters is too short to "
                            f"fill {batch_size} streams of at least 2 characters",
                            hint="use a longer text or a smaller batch")
    used = ids[:steps * batch_size + 1].astype(ID_DTYPE, copy=False)
    xs = used[:-1].reshape(batch_size, steps).T
    ys = used[1:].reshape(batch_size, steps).T
    for start in range(0, steps, window):
        stop = min(start + window, steps)
        if drop_last and stop - start < window:
            return
        yield np.ascontiguousarray(xs[start:stop]), np.ascontiguousarray(ys[start:stop])
