"""Consistency checks of a dataset's arrays, lengths and counts; every problem is a
SeqgraphError naming the data."""

from __future__ import annotations

import numpy as np

from ...errors import SeqgraphError, did_you_mean

KINDS = ("text", "sequence", "image")
METRICS = ("perplexity", "accuracy", "mse")


def validate(data) -> None:
    """Check a dataset is consistent; every problem is a SeqgraphError naming the data."""
    where = data.name

    def fail(message, hint=None):
        raise SeqgraphError(f"{where}: {message}", hint=hint)

    if data.kind not in KINDS:
        fail(f"unknown dataset kind '{data.kind}'", did_you_mean(data.kind, KINDS))
    if data.metric is not None and data.metric not in METRICS:
        fail(f"unknown metric '{data.metric}'", did_you_mean(data.metric, METRICS))
    if not data.arrays:
        fail("the dataset holds no arrays")
    for name, array in data.arrays.items():
        if array.ndim == 0:
            fail(f"'{name}' is a single number; every array needs an examples axis first")
    counts = {name: a.shape[0] for name, a in data.arrays.items()}
    if len(set(counts.values())) != 1:
        listed = ", ".join(f"'{k}' has {v}" for k, v in counts.items())
        fail(f"arrays disagree on the number of examples ({listed})")
    if data.kind == "text":
        ids = data.arrays.get("ids")
        if set(data.arrays) != {"ids"} or ids.ndim != 1:
            fail("a text dataset holds exactly one 1-D array, 'ids'")
    axis_steps: dict = {}
    for name, axis in data.time_axes.items():
        if name not in data.arrays:
            fail(f"time_axes names '{name}', which is not one of its arrays",
                 did_you_mean(name, data.arrays))
        array = data.arrays[name]
        if array.ndim < 2:
            fail(f"'{name}' is a sequence, so it needs (examples, steps, ...) axes, "
                 f"but it has shape {array.shape}")
        steps = axis_steps.setdefault(axis, (name, array.shape[1]))
        if steps[1] != array.shape[1]:
            fail(f"'{steps[0]}' and '{name}' share time axis '{axis}' but have "
                 f"{steps[1]} and {array.shape[1]} steps")
    for axis, lengths in (data.lengths or {}).items():
        if axis not in axis_steps:
            fail(f"lengths given for time axis '{axis}', which no array runs over",
                 did_you_mean(axis, axis_steps))
        check_lengths(where, f"lengths of time axis '{axis}'", lengths, len(data),
                       axis_steps[axis][1], axis_steps[axis][0])


def check_lengths(where: str, what: str, lengths, count: int, steps: int, over: str) -> None:
    """``lengths`` must be ``(count,)`` integers in ``1 .. steps``."""
    if lengths.ndim != 1 or lengths.shape[0] != count:
        raise SeqgraphError(f"{where}: {what} has shape {lengths.shape}; expected ({count},), "
                            "one length per example")
    if lengths.dtype.kind not in "iu":
        raise SeqgraphError(f"{where}: {what} has dtype {lengths.dtype}; lengths are integers")
    if count and lengths.min() < 1:
        i = int(np.argmin(lengths))
        raise SeqgraphError(f"{where}: {what}: example {i} has length {lengths[i]}; "
                            "every sequence needs at least one step")
    if count and lengths.max() > steps:
        i = int(np.argmax(lengths))
        raise SeqgraphError(f"{where}: {what}: example {i} has length {lengths[i]}, "
                            f"longer than the data: '{over}' holds only {steps} steps")


def check_count(where: str, what: str, value, minimum: int) -> int:
    """``value`` must be an int no smaller than ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SeqgraphError(f"{where}: {what} must be an integer of at least {minimum}, "
                            f"not {value!r}")
    return int(value)
