"""Text datasets: a character vocabulary (:class:`CharCorpus`), word-level text, and the
unigram entropy a model of a text should beat."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ...errors import SeqgraphError, did_you_mean
from ..words import UNKNOWN, WordCorpus
from .dataset import ID_DTYPE, Dataset


def corpus_from_vocab(vocab: Sequence[str], tokenizer: Optional[dict] = None):
    """The corpus that encodes and decodes with ``vocab``: characters, or words when
    ``tokenizer`` (what a word corpus's ``tokenizer()`` gave) says ``level = word``."""
    if tokenizer and tokenizer.get("level") == "word":
        return WordCorpus.from_vocab(vocab, lower=tokenizer.get("lower", False))
    return CharCorpus.from_vocab(vocab)


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


def word_dataset(text: str, name: str = "<string>", max_vocab: Optional[int] = None,
                 unknown: str = UNKNOWN, lower: bool = False) -> Dataset:
    """A text dataset of word ids (see :mod:`seqgraph.train.words`): the vocabulary is the
    unknown token and then the most frequent words, ``max_vocab`` entries at most."""
    corpus = WordCorpus(text, name=name, max_vocab=max_vocab, unknown=unknown, lower=lower)
    return Dataset(arrays={"ids": corpus.ids}, kind="text", metric="perplexity", vocab=list(corpus.vocab),
                   vocab_size=corpus.vocab_size, num_classes=corpus.vocab_size, name=name,
                   info={"tokenizer": corpus.tokenizer(), "unknown_share": corpus.unknown_share()})


LEVELS = ("char", "word")


def at_level(data: Dataset, level: str = "char", max_vocab: Optional[int] = None,
             unknown: Optional[str] = None, lower: Optional[bool] = None) -> Dataset:
    """A character text dataset as it is (``level = char``) or re-read as words
    (``level = word``, with :func:`word_dataset`'s options), for ``text(..., level = word)``."""
    if level not in LEVELS:
        raise SeqgraphError(f"{data.name}: level must be char or word, not {level!r}",
                            hint=did_you_mean(str(level), LEVELS))
    options = {k: v for k, v in (("max_vocab", max_vocab), ("unknown", unknown), ("lower", lower))
               if v is not None}
    if level == "char":
        if options:
            raise SeqgraphError(f"{data.name}: {', '.join(options)} applies to words",
                                hint="add  level = word")
        return data
    return word_dataset(data.corpus().decode(data.arrays["ids"]), data.name, **options)


def unigram_entropy(ids) -> float:
    """The entropy of the ids' frequencies, in nats per id: the loss of a model that knows
    only how often each character occurs, and nothing about context."""
    counts = np.bincount(np.asarray(ids).ravel())
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())
