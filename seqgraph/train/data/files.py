"""A user's own data: a UTF-8 text file or an ``.npz`` of named arrays (never pickles),
checked array by array."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from ...errors import SeqgraphError, decode_utf8, did_you_mean
from ...weights import read_npz
from .dataset import ID_DTYPE, TIME, Dataset
from .text import CharCorpus
from .validation import check_lengths


def load_text(path) -> Dataset:
    """A text dataset from a UTF-8 file; its vocabulary is the file's sorted characters.

    An unreadable file, an empty one, or bytes that are not UTF-8 are a SeqgraphError naming
    the file (and, for bad bytes, the line and column where they are).
    """
    label = str(path)
    text = read_utf8(path, f"text file '{label}'")
    if not text:
        raise SeqgraphError(f"text file '{label}' is empty", hint="training needs some text")
    return CharCorpus(text, name=label).dataset()


def read_utf8(path, what: str) -> str:
    """The text of the UTF-8 file at ``path`` (a byte-order mark dropped); a missing or
    unreadable file, or bytes that are not UTF-8, are a SeqgraphError naming ``what``."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise SeqgraphError(f"{what} does not exist") from None
    except OSError as error:
        raise SeqgraphError(f"cannot read {what}: {error.strerror or error}") from None
    return decode_utf8(raw, str(path), what).removeprefix("\ufeff")  # the mark is not text


def load_npz(path, expected: Optional[dict] = None,
             time_axes: Optional[dict] = None) -> Dataset:
    """A dataset from an ``.npz`` file of named arrays, stored example-major.

    The file is read with ``allow_pickle=False``: an array of Python objects is refused,
    since unpickling can run arbitrary code. Lengths come from optional integer arrays:
    ``<name>_lengths`` for the sequence ``name`` (or for a time axis called ``name``), and
    ``lengths`` for every sequence without one of its own.

    - ``expected``: name -> ``(kind, ndim)`` with kind ``'f'`` (floats) or ``'i'`` (integer
      ids or labels) and ndim counting the stored axes, examples first; e.g.
      ``{"x": ("i", 2), "label": ("i", 1)}``.
    - ``time_axes``: name -> time-axis name for each array that is a sequence ``(N, T, ...)``
      (the training loop takes these from the model). When None, an array with its own
      ``<name>_lengths`` is a sequence over an axis called ``name``, and if a plain
      ``lengths`` array is present every other array with 2 or more axes is a sequence
      over ``"time"``.

    Every problem is a SeqgraphError naming the file and the array: a missing array, a wrong
    number of axes or kind of number, a disagreeing number of examples, lengths longer than
    the data, negative ids, values that are not finite.
    """
    label = str(path)
    arrays = _read_npz(Path(path))
    where = f"data file '{label}'"

    def fail(message, hint=None):
        raise SeqgraphError(f"{where}: {message}", hint=hint)

    length_arrays = {k: arrays.pop(k) for k in list(arrays)
                     if k == "lengths" or k.endswith("_lengths")}
    if not arrays:
        fail("holds only lengths, no data arrays")
    for name, array in arrays.items():
        if array.dtype.kind not in "fiu":
            fail(f"array '{name}' has dtype {array.dtype}; seqgraph reads only float and "
                 "integer arrays", hint="save numbers: e.g. np.savez(path, x=x.astype(np.float32))")
    for name, (kind, ndim) in (expected or {}).items():
        if name not in arrays:
            fail(f"has no array '{name}' (it holds {', '.join(sorted(arrays))})",
                 did_you_mean(name, arrays))
        array = arrays[name]
        if array.ndim != ndim:
            fail(f"array '{name}' has {array.ndim} axes (shape {array.shape}); expected {ndim}")
        if kind == "f" and array.dtype.kind != "f":
            fail(f"array '{name}' holds {array.dtype} values; expected floats",
                 hint=f"save it with {name}.astype(np.float32)")
        if kind == "i" and array.dtype.kind not in "iu":
            fail(f"array '{name}' holds {array.dtype} values; expected integer ids or labels",
                 hint=f"save it with {name}.astype(np.int64)")
    counts = {name: a.shape[0] if a.ndim else None for name, a in arrays.items()}
    for name, count in counts.items():
        if count is None:
            fail(f"array '{name}' is a single number; arrays need an examples axis first")
    if len(set(counts.values())) > 1:
        fail("arrays disagree on the number of examples ("
             + ", ".join(f"'{k}' has {v}" for k, v in counts.items()) + ")")
    if 0 in counts.values():
        fail("holds no examples (its arrays have length 0)")
    for name, array in arrays.items():
        if array.dtype.kind == "i" and array.size and array.min() < 0:
            index = np.unravel_index(int(np.argmin(array)), array.shape)
            fail(f"array '{name}' holds a negative id ({array[index]} at index "
                 f"{tuple(int(i) for i in index)}); ids and labels count from 0")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            fail(f"array '{name}' holds NaN or infinite values")
    if time_axes is None:
        time_axes = _guess_time_axes(arrays, length_arrays)
    for name, axis in time_axes.items():
        if name not in arrays:
            fail(f"has no array '{name}' (it holds {', '.join(sorted(arrays))})",
                 did_you_mean(name, arrays))
        if arrays[name].ndim < 2:
            fail(f"array '{name}' is a sequence, so it needs (examples, steps, ...) axes, "
                 f"but it has shape {arrays[name].shape}")
        if arrays[name].shape[1] == 0:
            fail(f"array '{name}' is a sequence of no steps (shape {arrays[name].shape})")
    lengths = _assign_lengths(where, arrays, length_arrays, time_axes)
    arrays = {k: a.astype(ID_DTYPE) if a.dtype.kind in "iu" else a for k, a in arrays.items()}
    kind = "image" if not time_axes and any(a.ndim == 4 for a in arrays.values()) else "sequence"
    return Dataset(arrays=arrays, kind=kind, time_axes=dict(time_axes), lengths=lengths or None,
                   name=label)


def _read_npz(path: Path) -> dict:
    """Every array in the .npz at ``path``, refusing pickles and anything not an .npz."""
    arrays = read_npz(path, f"data file '{path}'")
    if not arrays:
        raise SeqgraphError(f"data file '{path}' holds no arrays")
    return arrays


def _guess_time_axes(arrays: dict, length_arrays: dict) -> dict:
    """Which arrays are sequences, when the caller does not say (see :func:`load_npz`)."""
    axes = {k[:-len("_lengths")]: k[:-len("_lengths")] for k in length_arrays
            if k != "lengths" and k[:-len("_lengths")] in arrays}
    if "lengths" in length_arrays:
        for name, array in arrays.items():
            if name not in axes and array.ndim >= 2:
                axes[name] = TIME
    return axes


def _assign_lengths(where: str, arrays: dict, length_arrays: dict, time_axes: dict) -> dict:
    """The lengths of each time axis, from ``<name>_lengths`` and ``lengths`` arrays."""
    steps_of = {}
    for name, axis in time_axes.items():
        first = steps_of.setdefault(axis, (name, arrays[name].shape[1]))
        if first[1] != arrays[name].shape[1]:
            raise SeqgraphError(f"{where}: arrays '{first[0]}' and '{name}' share time axis "
                                f"'{axis}' but have {first[1]} and {arrays[name].shape[1]} steps")
    count = len(next(iter(arrays.values())))
    lengths, source = {}, {}
    specific = [k for k in length_arrays if k != "lengths"]
    for key in specific + (["lengths"] if "lengths" in length_arrays else []):
        if key == "lengths":
            axes = [axis for axis in steps_of if axis not in lengths]
            if not steps_of:
                raise SeqgraphError(f"{where}: array 'lengths' is given but no array is a "
                                    "sequence")
        else:
            base = key[:-len("_lengths")]
            if base in time_axes:
                axes = [time_axes[base]]
            elif base in steps_of:
                axes = [base]
            elif base in arrays:
                raise SeqgraphError(f"{where}: array '{key}' gives lengths for '{base}', which "
                                    "is not a sequence")
            else:
                raise SeqgraphError(f"{where}: array '{key}' gives lengths for '{base}', but "
                                    "there is no such array", hint=did_you_mean(base, arrays))
        value = length_arrays[key]
        for axis in axes:
            over = steps_of[axis][0]
            check_lengths(where, f"array '{key}'", value, count, steps_of[axis][1], over)
            if axis in lengths and not np.array_equal(lengths[axis], value):
                raise SeqgraphError(f"{where}: arrays '{source[axis]}' and '{key}' give different "
                                    f"lengths for time axis '{axis}'")
            lengths[axis], source[axis] = value.astype(ID_DTYPE), key
    return lengths
