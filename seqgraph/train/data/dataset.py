"""The :class:`Dataset` record: named arrays stored example-major, and what a training loop
must know about them; renaming its arrays and splitting off a validation part."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from ...errors import SeqgraphError, did_you_mean
from .validation import validate

ID_DTYPE = np.int64
PAD = 0  # the value every sequence is padded with past its length
TIME = "time"  # the time axis a model's sequences share unless their type names another


@dataclass(eq=False)
class Dataset:
    """Named arrays, stored example-major, and what a training loop needs to know about them.

    - ``arrays``: name -> array, named after the model's inputs and targets. The first axis
      counts examples. A text dataset holds one array, ``"ids"``: the whole corpus as one
      stream of character ids (its first axis counts characters).
    - ``kind``: ``"text"``, ``"sequence"`` or ``"image"``.
    - ``metric``: what to report besides the loss: ``"perplexity"``, ``"accuracy"``,
      ``"mse"``, or None (the training loop decides from the loss).
    - ``time_axes``: name -> time-axis name, for every array that is a sequence
      ``(N, T, ...)``. Arrays that share a time axis have the same length (a decoder's input
      and output both run over ``"tgt"``, its source over ``"src"``). A model's sequences
      share the axis ``"time"`` unless their type names another (``seq[int, V, time = src]``).
    - ``lengths``: time-axis name -> ``(N,)`` int array, the valid steps of each example, or
      None when every sequence fills its whole time axis. Steps past a length hold 0.
    - ``vocab``: the characters of a text dataset (id ``i`` is ``vocab[i]``).
    - ``vocab_size``: how many distinct input ids there are (ids run 0 .. vocab_size-1).
    - ``num_classes``: how many target classes (class labels or per-step target ids).
    - ``metric_steps``: ``(start, stop)``, the steps a per-step metric counts (the copy
      task's recall steps); None means every valid step.
    - ``info``: anything else worth knowing, e.g. special ids (``"pad"``, ``"bos"``,
      ``"eos"``) and the sizes a generator was called with.
    - ``name``: where the data came from, used in messages.
    """

    arrays: dict
    kind: str
    metric: Optional[str] = None
    time_axes: dict = field(default_factory=dict)
    lengths: Optional[dict] = None
    vocab: Optional[list] = None
    vocab_size: Optional[int] = None
    num_classes: Optional[int] = None
    metric_steps: Optional[tuple] = None
    info: dict = field(default_factory=dict)
    name: str = "<dataset>"

    def __post_init__(self):
        self.arrays = {k: np.asarray(v) for k, v in self.arrays.items()}
        if self.lengths is not None:
            self.lengths = {k: np.asarray(v) for k, v in self.lengths.items()}
        validate(self)

    def __len__(self) -> int:
        """The number of examples (characters, for text)."""
        return len(next(iter(self.arrays.values())))

    def steps(self, axis: str) -> int:
        """The stored (padded) length of time axis ``axis``."""
        for name, ax in self.time_axes.items():
            if ax == axis:
                return self.arrays[name].shape[1]
        raise KeyError(axis)

    def corpus(self):
        """A :class:`CharCorpus` (or, for word-level text, a :class:`~seqgraph.train.words.WordCorpus`)
        with this dataset's vocabulary, to encode and decode."""
        if self.vocab is None:
            raise SeqgraphError(f"{self.name}: this {self.kind} dataset has no vocabulary")
        from .text import corpus_from_vocab  # text builds Datasets, so it imports this module
        return corpus_from_vocab(self.vocab, self.info.get("tokenizer"))


def _subset(data: Dataset, index) -> Dataset:
    """The examples ``index`` (an int array or a slice) of ``data``, metadata unchanged."""
    lengths = None if data.lengths is None else {k: v[index] for k, v in data.lengths.items()}
    return dataclasses.replace(data, arrays={k: v[index] for k, v in data.arrays.items()},
                               lengths=lengths)


def rename(data: Dataset, names: dict) -> Dataset:
    """``data`` with its arrays renamed by ``names`` (old name -> new name; the rest keep
    theirs), so a dataset can feed a model that calls its inputs or targets differently:
    ``rename(builtin("copy"), {"y": "tag"})``. Time-axis names stay as they are."""
    for old in names:
        if old not in data.arrays:
            raise SeqgraphError(f"{data.name}: cannot rename '{old}': there is no such array",
                                hint=did_you_mean(old, data.arrays))
    new_names = [names.get(k, k) for k in data.arrays]
    if len(set(new_names)) != len(new_names):
        raise SeqgraphError(f"{data.name}: renaming {names} gives two arrays the same name")
    return dataclasses.replace(
        data, arrays={names.get(k, k): v for k, v in data.arrays.items()},
        time_axes={names.get(k, k): axis for k, axis in data.time_axes.items()})


def split(data: Dataset, valid_fraction: float, seed: int = 0) -> tuple:
    """``(train, valid)``: a random ``valid_fraction`` of the examples, drawn from ``seed``.

    A text dataset is split without shuffling: its last ``valid_fraction`` of characters
    becomes the validation stream, so both halves stay contiguous text.
    """
    if not 0.0 < valid_fraction < 1.0:
        raise SeqgraphError(f"{data.name}: the validation fraction must lie strictly between 0 "
                            f"and 1, not {valid_fraction}")
    n = len(data)
    n_valid = int(round(n * valid_fraction))
    smallest = 2 if data.kind == "text" else 1  # a text stream needs an input and its next id
    if n_valid < smallest or n - n_valid < smallest:
        raise SeqgraphError(f"{data.name}: {n} examples are too few to hold out "
                            f"{valid_fraction:g} of them for validation")
    if data.kind == "text":
        return _subset(data, slice(0, n - n_valid)), _subset(data, slice(n - n_valid, n))
    order = np.random.default_rng(seed).permutation(n)
    return _subset(data, np.sort(order[n_valid:])), _subset(data, np.sort(order[:n_valid]))
