"""Datasets: plain NumPy arrays that seqgraph generates itself or loads from a user's file.

A :class:`Dataset` stores every array **example-major**: the first axis counts examples, and
a sequence is ``(N, T, ...)``, padded with 0 past each example's valid length. Batches are
handed out **time-major**, the way compiled programs take them::

    for arrays, lengths in batches(data, batch_size=32, rng=np.random.default_rng(0)):
        arrays["x"]      # (T, B) ids or (T, B, F) floats: a sequence, cut to this batch's longest
        arrays["label"]  # (B,) or (B, ...): anything that is not a sequence
        lengths["time"]  # (B,) valid steps of each example, per time axis with variable lengths

Text is the one exception: a text dataset is a single stream of character ids, and
:func:`bptt_windows` cuts it into consecutive windows for truncated backpropagation through
time.

Everything here is reproducible from a seed and nothing is downloaded: the built-in tasks in
:data:`BUILTIN` are generated on the spot (``builtin("adding", length=50)``), and a user's own
data comes from :func:`load_text` (a UTF-8 file) or :func:`load_npz` (named arrays, never
pickles).
"""

from __future__ import annotations

import dataclasses
import inspect
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

import numpy as np

from ..errors import SeqgraphError, Span, decode_utf8, did_you_mean
from ..weights import read_npz

KINDS = ("text", "sequence", "image")
METRICS = ("perplexity", "accuracy", "mse")
ID_DTYPE = np.int64
PAD = 0  # the value every sequence is padded with past its length
TIME = "time"  # the time axis a model's sequences share unless their type names another


# --------------------------------------------------------------------------------------------
# The dataset
# --------------------------------------------------------------------------------------------


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
        _validate(self)

    def __len__(self) -> int:
        """The number of examples (characters, for text)."""
        return len(next(iter(self.arrays.values())))

    def steps(self, axis: str) -> int:
        """The stored (padded) length of time axis ``axis``."""
        for name, ax in self.time_axes.items():
            if ax == axis:
                return self.arrays[name].shape[1]
        raise KeyError(axis)

    def corpus(self) -> "CharCorpus":
        """A :class:`CharCorpus` with this text dataset's vocabulary, to encode and decode."""
        if self.vocab is None:
            raise SeqgraphError(f"{self.name}: this {self.kind} dataset has no character vocabulary")
        return CharCorpus.from_vocab(self.vocab)


def _validate(data: Dataset) -> None:
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
        _check_lengths(where, f"lengths of time axis '{axis}'", lengths, len(data),
                       axis_steps[axis][1], axis_steps[axis][0])


def _check_lengths(where: str, what: str, lengths, count: int, steps: int, over: str) -> None:
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
    _check_count(data.name, "the batch size", batch_size, 1)
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


def _check_count(where: str, what: str, value, minimum: int) -> int:
    """``value`` must be an int no smaller than ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise SeqgraphError(f"{where}: {what} must be an integer of at least {minimum}, "
                            f"not {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------
# Text: a character vocabulary and truncated-BPTT windows
# --------------------------------------------------------------------------------------------


class CharCorpus:
    """A text and its character vocabulary: the sorted unique characters, id ``i`` is
    ``vocab[i]``.

    >>> c = CharCorpus("hello")
    >>> c.vocab, c.ids.tolist(), c.decode(c.encode("hole"))
    (['e', 'h', 'l', 'o'], [1, 0, 2, 2, 3], 'hole')
    """

    def __init__(self, text: str, vocab: Optional[Sequence[str]] = None, name: str = "<string>"):
        self.name = name
        if vocab is None:
            if not text:
                raise SeqgraphError(f"{name}: the text is empty, so there are no characters "
                                    "to learn")
            vocab = [chr(c) for c in np.unique(_codepoints(text))]
        self.vocab = list(vocab)
        if any(len(c) != 1 for c in self.vocab) or len(set(self.vocab)) != len(self.vocab):
            raise SeqgraphError(f"{name}: a vocabulary is a list of distinct single characters")
        order = sorted(range(len(self.vocab)), key=lambda i: self.vocab[i])
        self._codes = np.array([ord(c) for c in self.vocab], dtype=np.uint32)
        self._sorted_codes = self._codes[order]
        self._sorted_ids = np.array(order, dtype=ID_DTYPE)
        self.text = text
        self.ids = self.encode(text)

    @classmethod
    def from_vocab(cls, vocab: Sequence[str]) -> "CharCorpus":
        """A corpus holding no text, only ``vocab``: to encode a prime text or decode samples."""
        return cls("", vocab=vocab)

    @property
    def vocab_size(self) -> int:
        """The number of distinct characters."""
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """The ids of the characters of ``text``, shape ``(len(text),)``, int64."""
        codes = _codepoints(text)
        if not self.vocab:
            if len(codes):
                raise SeqgraphError(f"{self.name}: the vocabulary is empty")
            return np.zeros(0, dtype=ID_DTYPE)
        where = np.minimum(np.searchsorted(self._sorted_codes, codes), len(self.vocab) - 1)
        unknown = self._sorted_codes[where] != codes
        if unknown.any():
            missing = sorted({chr(c) for c in codes[unknown]})
            shown = ", ".join(repr(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise SeqgraphError(f"{self.name}: the text has characters that are not in the "
                                f"vocabulary: {shown}",
                                hint="the vocabulary is the set of characters of the training text")
        return self._sorted_ids[where]

    def decode(self, ids) -> str:
        """The text spelled by ``ids`` (any integer array or sequence)."""
        ids = np.asarray(ids, dtype=ID_DTYPE).ravel()
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.vocab)):
            raise SeqgraphError(f"{self.name}: ids must lie in 0..{len(self.vocab) - 1} to be "
                                f"decoded; got {int(ids.min())}..{int(ids.max())}")
        return self._codes[ids].astype("<u4").tobytes().decode("utf-32-le")

    def dataset(self) -> Dataset:
        """This corpus as a text dataset: ``arrays = {"ids": self.ids}``, metric perplexity."""
        return Dataset(arrays={"ids": self.ids}, kind="text", metric="perplexity",
                       vocab=list(self.vocab), vocab_size=len(self.vocab),
                       num_classes=len(self.vocab), name=self.name)


def _codepoints(text: str) -> np.ndarray:
    """The Unicode code points of ``text`` as a uint32 array."""
    return np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.uint32)


def text_dataset(text: str, name: str = "<string>") -> Dataset:
    """A text dataset from a string (its vocabulary: the string's sorted unique characters)."""
    return CharCorpus(text, name=name).dataset()


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
    batch_size = _check_count("bptt_windows", "the batch size", batch_size, 1)
    window = _check_count("bptt_windows", "the window (bptt) length", window, 1)
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


def unigram_entropy(ids) -> float:
    """The entropy of the ids' frequencies, in nats per id: the loss of a model that knows
    only how often each character occurs, and nothing about context."""
    counts = np.bincount(np.asarray(ids).ravel())
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


# --------------------------------------------------------------------------------------------
# Built-in tasks, generated from a seed
# --------------------------------------------------------------------------------------------


# The grammar of "grammar_text". Nouns and verbs carry their forms, so agreement is a rule
# the model has to learn: singular subjects take "sees", plural ones "see", past takes "saw".
_ANIMATE = [("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("child", "children"),
            ("teacher", "teachers"), ("farmer", "farmers"), ("king", "kings"),
            ("queen", "queens"), ("mouse", "mice"), ("fox", "foxes"), ("wolf", "wolves"),
            ("horse", "horses"), ("baker", "bakers"), ("sailor", "sailors"),
            ("student", "students"), ("owl", "owls")]
_THINGS = [("apple", "apples"), ("book", "books"), ("box", "boxes"), ("letter", "letters"),
           ("song", "songs"), ("stone", "stones"), ("cake", "cakes"), ("boat", "boats"),
           ("key", "keys"), ("house", "houses"), ("lamp", "lamps"), ("egg", "eggs")]
_PLACES = ["river", "garden", "city", "forest", "market", "hill", "bridge", "school", "tower"]
_ADJECTIVES = ["small", "big", "old", "young", "happy", "quiet", "clever", "green", "red",
               "brave", "tired", "lazy", "gentle", "strange", "little", "angry", "early"]
_TRANSITIVE = [("sees", "see", "saw"), ("likes", "like", "liked"), ("finds", "find", "found"),
               ("carries", "carry", "carried"), ("watches", "watch", "watched"),
               ("follows", "follow", "followed"), ("helps", "help", "helped"),
               ("chases", "chase", "chased"), ("knows", "know", "knew"),
               ("wants", "want", "wanted"), ("brings", "bring", "brought"),
               ("loves", "love", "loved"), ("hides", "hide", "hid")]
_INTRANSITIVE = [("sleeps", "sleep", "slept"), ("runs", "run", "ran"), ("sings", "sing", "sang"),
                 ("waits", "wait", "waited"), ("laughs", "laugh", "laughed"),
                 ("dances", "dance", "danced"), ("swims", "swim", "swam"),
                 ("smiles", "smile", "smiled"), ("falls", "fall", "fell"),
                 ("listens", "listen", "listened")]
_NAMES = ["Anna", "Tom", "Maria", "Ben", "Lucy", "Sam", "Nora", "Leo"]
_SINGULAR_DETS = ["the", "the", "the", "a", "a", "this", "that", "every", "my", "our", "her"]
_PLURAL_DETS = ["the", "the", "the", "some", "many", "these", "those", "two", "three", "my",
                "our", "all the"]
_PREPOSITIONS = ["in", "near", "under", "behind", "beside", "across", "from", "to"]
_ADVERBS = ["quickly", "slowly", "quietly", "again", "today", "at night", "every day"]
_JOINERS = ["and", "but", "so"]
_SUBORDINATORS = ["when", "because", "if", "after", "while"]


class _Grammar:
    """A small generative grammar of English-like sentences.

    Sentences are subject-verb(-object) clauses with determiners ("a" before a consonant,
    "an" before a vowel), adjectives, plurals that agree with the verb, past tense,
    negation with do/does/did, prepositional phrases, relative clauses ("the dogs that
    chase the cat sleep"), joined and subordinate clauses, questions, exclamations and
    quotations; paragraphs end in a newline.
    """

    def __init__(self, rnd: random.Random):
        self.rnd = rnd

    def pick(self, options):
        return options[self.rnd.randrange(len(options))]

    def chance(self, p: float) -> bool:
        return self.rnd.random() < p

    def sentence(self) -> str:
        roll = self.rnd.random()
        if roll < 0.10:
            text = self.question()
        elif roll < 0.20:
            text = f"{self.clause()}, {self.pick(_JOINERS)} {self.clause()}."
        elif roll < 0.30:
            text = f"{self.pick(_SUBORDINATORS)} {self.clause()}, {self.clause()}."
        elif roll < 0.34:
            text = f"{self.clause()}!"
        elif roll < 0.38:
            text = f'"{_capital(self.clause())}," said {self.pick(_NAMES)}.'
        else:
            text = f"{self.clause()}."
        return _capital(text)

    def question(self) -> str:
        plural, tense = self.chance(0.35), self.tense()
        aux = "did" if tense == "past" else ("do" if plural else "does")
        verb = self.pick(_TRANSITIVE)
        return f"{aux} {self.noun_phrase(plural, True, 0)} {verb[1]} {self.object_phrase(1)}?"

    def tense(self) -> str:
        return "past" if self.chance(0.3) else "present"

    def clause(self) -> str:
        plural = self.chance(0.35)
        return f"{self.subject(plural)} {self.predicate(plural, self.tense(), 0)}"

    def subject(self, plural: bool) -> str:
        roll = self.rnd.random()
        if roll < 0.10:
            return self.pick(["they", "we"]) if plural else self.pick(["he", "she"])
        if roll < 0.20 and not plural:
            return self.pick(_NAMES)
        return self.noun_phrase(plural, True, 0)

    def predicate(self, plural: bool, tense: str, depth: int) -> str:
        transitive = self.chance(0.65)
        verb = self.pick(_TRANSITIVE if transitive else _INTRANSITIVE)
        if self.chance(0.08):
            aux = "did" if tense == "past" else ("do" if plural else "does")
            words = [aux, "not", verb[1]]
        else:
            words = [verb[2] if tense == "past" else verb[1] if plural else verb[0]]
        if transitive:
            words.append(self.object_phrase(depth + 1))
        if self.chance(0.25):
            words += [self.pick(_PREPOSITIONS), self.article(False, [self.pick(_PLACES)])]
        if self.chance(0.15):
            words.append(self.pick(_ADVERBS))
        return " ".join(words)

    def object_phrase(self, depth: int) -> str:
        return self.noun_phrase(self.chance(0.35), self.chance(0.5), depth)

    def noun_phrase(self, plural: bool, animate: bool, depth: int) -> str:
        words = self.rnd.sample(_ADJECTIVES, self.pick([0, 0, 1, 1, 2]))
        words.append(self.pick(_ANIMATE if animate else _THINGS)[1 if plural else 0])
        phrase = self.article(plural, words)
        if animate and depth < 2 and self.chance(0.12):
            phrase += " that " + self.predicate(plural, self.tense(), depth + 1)
        return phrase

    def article(self, plural: bool, words: list) -> str:
        det = self.pick(_PLURAL_DETS if plural else _SINGULAR_DETS)
        if det == "a" and words[0][0] in "aeiou":
            det = "an"
        return " ".join([det] + words)


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def grammar_text(n: int = 300_000, seed: int = 0) -> Dataset:
    """About ``n`` characters of English-like text from a small generative grammar.

    Whole sentences are generated until the text holds at least ``n`` characters. The
    grammar (see :class:`_Grammar`) has real words, agreement, clauses and punctuation, so
    a character LSTM learns to spell and to agree, and its loss falls well below
    :func:`unigram_entropy`. The same seed gives the same text on every platform (Python's
    ``random.Random``, whose sequence is stable).
    """
    n = _check_count("builtin dataset 'grammar_text'", "n (characters)", n, 1)
    grammar = _Grammar(random.Random(seed))
    parts, size = [], 0
    while size < n:
        sentence = grammar.sentence() + ("\n" if grammar.chance(0.15) else " ")
        parts.append(sentence)
        size += len(sentence)
    data = CharCorpus("".join(parts), name="builtin:grammar_text").dataset()
    data.info.update(sizes={"n": n, "seed": seed})
    return data


def adding(n: int = 10_000, seed: int = 0, *, length: int = 50) -> Dataset:
    """The adding problem (Hochreiter & Schmidhuber, 1997; as in Le et al., 2015).

    ``x`` is ``(N, length, 2)`` float32: channel 0 holds values drawn uniformly from [0, 1),
    channel 1 is a marker that is 1 at exactly two steps, one in the first half and one in
    the second half, and 0 elsewhere. The target ``y`` is ``(N, 1)``: the sum of the two
    marked values. Predicting the mean, 1, scores an MSE of about 1/6; solving it needs
    memory across the whole sequence. Metric mse.
    """
    where = "builtin dataset 'adding'"
    n = _check_count(where, "n", n, 1)
    length = _check_count(where, "length", length, 2)
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
    n = _check_count(where, "n", n, 1)
    symbols = _check_count(where, "symbols", symbols, 1)
    count = _check_count(where, "count", count, 1)
    delay = _check_count(where, "delay", delay, 0)
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
    min_length = _check_count(where, "min_length", min_length, 1)
    max_length = _check_count(where, "max_length", max_length, 1)
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
    n = _check_count(where, "n", n, 1)
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
    n = _check_count(where, "n", n, 1)
    symbols = _check_count(where, "symbols", symbols, 2)
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


_BOS, _EOS, _FIRST_SYMBOL = 1, 2, 3


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
    n = _check_count(where, "n", n, 1)
    symbols = _check_count(where, "symbols", symbols, 1)
    rng = np.random.default_rng(seed)
    lengths = _variable_lengths(where, rng, n, min_length, max_length)
    steps = int(max_length)
    src = rng.integers(_FIRST_SYMBOL, symbols + _FIRST_SYMBOL, (n, steps)).astype(ID_DTYPE)
    src[_past_length(lengths, steps)] = PAD
    target = transform(src, lengths)
    rows = np.arange(n)
    tgt_in = np.zeros((n, steps + 1), dtype=ID_DTYPE)
    tgt_in[:, 0] = _BOS
    tgt_in[:, 1:] = target
    tgt_out = np.zeros((n, steps + 1), dtype=ID_DTYPE)
    tgt_out[:, :steps] = target
    tgt_out[rows, lengths] = _EOS
    return Dataset(arrays={"src": src, "tgt_in": tgt_in, "tgt_out": tgt_out}, kind="sequence",
                   metric="accuracy", time_axes={"src": "src", "tgt_in": "tgt", "tgt_out": "tgt"},
                   lengths={"src": lengths, "tgt": lengths + 1}, vocab_size=symbols + _FIRST_SYMBOL,
                   num_classes=symbols + _FIRST_SYMBOL, name=f"builtin:{task}",
                   info={"pad": PAD, "bos": _BOS, "eos": _EOS,
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


def _arc(cx, cy, rx, ry, start, stop, points=10) -> list:
    """Points on an ellipse, angles in degrees; 0 is right and 90 is down (y grows down)."""
    angles = np.radians(np.linspace(start, stop, points))
    return list(zip(cx + rx * np.cos(angles), cy + ry * np.sin(angles)))


# Each digit is a few polylines in the unit square (x right, y down), drawn like handwriting.
_DIGIT_STROKES = [
    [_arc(0.5, 0.5, 0.27, 0.4, 0, 360, 16)],
    [[(0.33, 0.28), (0.55, 0.1), (0.55, 0.9)]],
    [_arc(0.5, 0.33, 0.27, 0.23, 180, 400) + [(0.22, 0.9), (0.8, 0.9)]],
    [_arc(0.48, 0.3, 0.25, 0.2, 200, 450), _arc(0.48, 0.7, 0.28, 0.2, 270, 520)],
    [[(0.65, 0.9), (0.65, 0.1), (0.2, 0.62), (0.82, 0.62)]],
    [[(0.75, 0.1), (0.3, 0.1), (0.28, 0.47)] + _arc(0.48, 0.65, 0.27, 0.23, 225, 510)],
    [[(0.68, 0.1), (0.42, 0.3), (0.3, 0.55)] + _arc(0.5, 0.68, 0.21, 0.2, 180, 540, 14)],
    [[(0.2, 0.12), (0.8, 0.12), (0.42, 0.9)]],
    [_arc(0.5, 0.3, 0.2, 0.19, 0, 360, 12), _arc(0.5, 0.7, 0.24, 0.21, 0, 360, 12)],
    [_arc(0.5, 0.32, 0.22, 0.2, 0, 360, 12), [(0.72, 0.32), (0.7, 0.65), (0.6, 0.9)]],
]


def _digit_segments() -> list:
    """Every digit's strokes as line segments: a ``(S, 2 ends, 2 coords)`` array per digit."""
    return [np.array([(line[i], line[i + 1]) for line in strokes for i in range(len(line) - 1)])
            for strokes in _DIGIT_STROKES]


def digits8x8(n: int = 5_000, seed: int = 0, *, noise: float = 0.1) -> Dataset:
    """8x8 grayscale images of handwritten-looking digits 0-9, drawn procedurally.

    Each digit's strokes are bent by a random affine map (rotation up to ±15°, scale
    0.8-1.1 per axis, shear, a shift of about a pixel), drawn with a random pen width on a
    16x16 grid, averaged down to 8x8 (like scikit-learn's digits), scaled by a random ink
    intensity and covered in Gaussian ``noise``, then clipped to [0, 1]. ``img`` is
    ``(N, 1, 8, 8)`` float32 and ``label`` ``(N,)`` int64. A small CNN reaches high
    accuracy; a nearest-template rule does not. Metric accuracy.
    """
    where = "builtin dataset 'digits8x8'"
    n = _check_count(where, "n", n, 1)
    if not isinstance(noise, (int, float)) or isinstance(noise, bool) or not 0 <= noise <= 1:
        raise SeqgraphError(f"{where}: noise must be a number in [0, 1], not {noise!r}")
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 10, n).astype(ID_DTYPE)
    angle = rng.uniform(-0.26, 0.26, n)
    scale = rng.uniform(0.8, 1.1, (n, 2))
    shear = rng.uniform(-0.2, 0.2, n)
    shift = rng.uniform(-0.12, 0.12, (n, 2))
    pen = rng.uniform(0.045, 0.085, n)
    ink = rng.uniform(0.6, 1.0, n)
    cos, sin = np.cos(angle), np.sin(angle)
    # (N, 2, 2) maps: rotate . shear . scale, about the centre of the picture
    rotate = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    shear_scale = np.zeros((n, 2, 2))
    shear_scale[:, 0, 0] = scale[:, 0]
    shear_scale[:, 0, 1] = shear * scale[:, 1]
    shear_scale[:, 1, 1] = scale[:, 1]
    maps = rotate @ shear_scale
    fine = 16  # draw on a 16x16 grid, then average 2x2 blocks down to 8x8
    centres = (np.arange(fine) + 0.5) / fine
    pixels = np.stack(np.meshgrid(centres, centres, indexing="ij")[::-1], -1).reshape(-1, 2)
    picture = np.empty((n, fine * fine))
    for digit, strokes in enumerate(_digit_segments()):
        chosen = np.flatnonzero(label == digit)
        for lo in range(0, len(chosen), 256):  # in chunks: (chunk, pixels, segments) stays small
            part = chosen[lo:lo + 256]
            ends = np.einsum("nij,sej->nsei", maps[part], strokes - 0.5)
            ends += 0.5 + shift[part, None, None, :]
            distance = _distance_to_segments(pixels, ends)
            picture[part] = np.clip((pen[part, None] - distance) * fine + 1.0, 0.0, 1.0)
    img = picture.reshape(n, 8, 2, 8, 2).mean(axis=(2, 4)) * ink[:, None, None]
    img = img + rng.normal(0.0, noise, img.shape)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)[:, None]
    return Dataset(arrays={"img": img, "label": label}, kind="image", metric="accuracy",
                   num_classes=10, name="builtin:digits8x8",
                   info={"sizes": {"n": n, "seed": seed, "noise": noise}})


_DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def digit_captions(n: int = 5_000, seed: int = 0, *, noise: float = 0.1) -> Dataset:
    """Image captioning (one-to-many): the 8x8 digits of :func:`digits8x8`, each captioned
    with its name spelled out ("seven").

    Ids: 0 padding, 1 BOS, 2 EOS, then the letters of the ten names. ``img`` is
    ``(N, 1, 8, 8)``; ``caption_in`` is BOS then the letters and ``caption_out`` the
    letters then EOS, both ``(N, 6)`` on time axis ``"time"`` with lengths ``len(name) + 1``.
    Metric token accuracy.
    """
    images = digits8x8(n, seed, noise=noise)
    letters = sorted(set("".join(_DIGIT_NAMES)))
    code = {c: i + _FIRST_SYMBOL for i, c in enumerate(letters)}
    steps = max(len(name) for name in _DIGIT_NAMES) + 1
    names = [_DIGIT_NAMES[d] for d in images.arrays["label"]]
    caption_in = np.zeros((len(names), steps), dtype=ID_DTYPE)
    caption_out = np.zeros((len(names), steps), dtype=ID_DTYPE)
    for row, name in enumerate(names):
        ids = [code[c] for c in name]
        caption_in[row, :len(ids) + 1] = [_BOS] + ids
        caption_out[row, :len(ids) + 1] = ids + [_EOS]
    lengths = np.array([len(name) + 1 for name in names])
    vocab_size = len(letters) + _FIRST_SYMBOL
    return Dataset(arrays={"img": images.arrays["img"], "caption_in": caption_in, "caption_out": caption_out},
                   kind="sequence", metric="accuracy",
                   time_axes={"caption_in": TIME, "caption_out": TIME}, lengths={TIME: lengths},
                   vocab_size=vocab_size, num_classes=vocab_size, name="builtin:digit_captions",
                   info={"pad": PAD, "bos": _BOS, "eos": _EOS, "letters": letters,
                         "sizes": {"n": n, "seed": seed, "noise": noise}})


def _distance_to_segments(points: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """``(N, P)``: the distance from each of ``points`` (P, 2) to the nearest of each
    example's ``segments`` (N, S, 2 ends, 2 coords). Coordinates are handled one by one:
    NumPy reduces a length-2 last axis slowly."""
    px, py = points[None, :, None, 0], points[None, :, None, 1]    # (1, P, 1)
    ax, ay = segments[:, None, :, 0, 0], segments[:, None, :, 0, 1]  # (N, 1, S)
    dx, dy = segments[:, None, :, 1, 0] - ax, segments[:, None, :, 1, 1] - ay
    ox, oy = px - ax, py - ay                                        # (N, P, S)
    t = np.clip((ox * dx + oy * dy) / np.maximum(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
    ex, ey = ox - t * dx, oy - t * dy
    return np.sqrt((ex * ex + ey * ey).min(axis=-1))


BUILTIN: dict = {
    "grammar_text": grammar_text,
    "adding": adding,
    "copy": copy,
    "parity": parity,
    "majority": majority,
    "reverse": reverse,
    "sort": sort,
    "digits8x8": digits8x8,
    "digit_captions": digit_captions,
}


# The keyword arguments each data source of a train block accepts (``data = text("f.txt")``);
# a built-in task's are its sizes (see builtin_sizes), ``builtin("adding", length = 50)``.
SOURCE_KEYWORDS = {"text": (), "npz": ()}
SOURCES = ("builtin",) + tuple(SOURCE_KEYWORDS)


def check_source_keywords(source: str, spec: str, keywords, spans: dict, span: Optional[Span] = None) -> None:
    """Every keyword of a call of data source ``source`` on ``spec`` (a file, a built-in
    name, ``builtin:<name>``) is one the source accepts; an unknown one is a SeqgraphError
    at its place (``spans``, else ``span``) with the known ones offered."""
    if source == "builtin" or spec.startswith("builtin:"):
        name = spec.split(":", 1)[-1]
        known = builtin_sizes(name, span)
        what, hint = f"built-in dataset '{name}' has no size", f"'{name}' takes no sizes"
    else:
        known = SOURCE_KEYWORDS[source]
        what, hint = f"data source {source}(...) has no argument", f"{source}(...) takes no keyword arguments"
    for keyword in keywords:
        if keyword not in known:
            raise SeqgraphError(f"{what} '{keyword}'", spans.get(keyword, span),
                                did_you_mean(keyword, known) if known else hint)


def builtin_sizes(name: str, span: Optional[Span] = None) -> list:
    """The sizes built-in dataset ``name`` takes (its generator's keyword arguments); an
    unknown name is a SeqgraphError at ``span``."""
    if name not in BUILTIN:
        raise SeqgraphError(f"unknown built-in dataset '{name}'", span, did_you_mean(name, BUILTIN))
    return [p for p in inspect.signature(BUILTIN[name]).parameters if p not in ("n", "seed")]


def builtin(name: str, n: Optional[int] = None, seed: int = 0, span: Optional[Span] = None,
            **sizes) -> Dataset:
    """The built-in dataset ``name`` with ``n`` examples (the generator's default when None)
    and the given sizes, e.g. ``builtin("adding", length=50)``. An unknown name or size is
    a SeqgraphError (at ``span``, the place in the model file, when given)."""
    check_source_keywords("builtin", name, sizes, {}, span)
    generator = BUILTIN[name]
    try:
        return generator(seed=seed, **sizes) if n is None else generator(n, seed, **sizes)
    except SeqgraphError as error:
        if span is None:
            raise
        raise SeqgraphError(error.message, span, error.hint) from None


# --------------------------------------------------------------------------------------------
# A user's own data
# --------------------------------------------------------------------------------------------


def load_text(path) -> Dataset:
    """A text dataset from a UTF-8 file; its vocabulary is the file's sorted characters.

    An unreadable file, an empty one, or bytes that are not UTF-8 are a SeqgraphError naming
    the file (and, for bad bytes, the line and column where they are).
    """
    path = Path(path)
    label = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SeqgraphError(f"text file '{label}' does not exist") from None
    except OSError as error:
        raise SeqgraphError(f"cannot read text file '{label}': {error.strerror or error}") from None
    if not raw:
        raise SeqgraphError(f"text file '{label}' is empty", hint="training needs some text")
    text = decode_utf8(raw, label, f"text file '{label}'")
    text = text.removeprefix("\ufeff")  # a byte-order mark is not part of the text
    if not text:
        raise SeqgraphError(f"text file '{label}' is empty", hint="training needs some text")
    return CharCorpus(text, name=label).dataset()


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
            _check_lengths(where, f"array '{key}'", value, count, steps_of[axis][1], over)
            if axis in lengths and not np.array_equal(lengths[axis], value):
                raise SeqgraphError(f"{where}: arrays '{source[axis]}' and '{key}' give different "
                                    f"lengths for time axis '{axis}'")
            lengths[axis], source[axis] = value.astype(ID_DTYPE), key
    return lengths
