"""Word-level text: a tokenizer, a capped vocabulary with an unknown token, and the corpus
that encodes and decodes with them.

A word is a run of letters, digits and underscores (``don't`` and ``rock'n'roll`` stay
whole); every other visible character is a token of its own, and so is a line break, so a
model can learn where paragraphs end. Other whitespace only separates tokens::

    >>> tokenize("The cat's hat, she said.\\nYes!")
    ['The', "cat's", 'hat', ',', 'she', 'said', '.', '\\n', 'Yes', '!']

The vocabulary holds the unknown token at id 0, then the words by falling frequency (ties
in alphabetical order), cut to ``max_vocab`` entries in all; every word left out encodes as
the unknown token.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Optional, Sequence

import numpy as np

from ..errors import SeqgraphError

TOKEN = re.compile(r"\w+(?:['\u2019]\w+)*|[^\w\s]|\n")
UNKNOWN = "<unk>"
_NO_SPACE_BEFORE = set(".,;:!?)]}'\u2019\n")
_NO_SPACE_AFTER = set("([{\n")


def tokenize(text: str, lower: bool = False) -> list:
    """The words, marks and line breaks of ``text`` in order (lower-cased if ``lower``)."""
    return TOKEN.findall(text.lower() if lower else text)


def detokenize(tokens: Sequence[str]) -> str:
    """Tokens joined back into text: a space between words, none before closing marks or
    after opening ones, none around line breaks."""
    out = []
    for token in tokens:
        if out and token[:1] not in _NO_SPACE_BEFORE and out[-1][-1:] not in _NO_SPACE_AFTER:
            out.append(" ")
        out.append(token)
    return "".join(out)


def build_vocab(tokens: Sequence[str], max_vocab: Optional[int] = None, unknown: str = UNKNOWN) -> list:
    """``[unknown]`` and then the most frequent tokens, at most ``max_vocab`` entries in all
    (None: every token)."""
    counts = Counter(tokens)
    counts.pop(unknown, None)
    ranked = sorted(counts, key=lambda token: (-counts[token], token))
    keep = len(ranked) if max_vocab is None else max_vocab - 1
    return [unknown] + ranked[:keep]


class WordCorpus:
    """A text as word ids, with its vocabulary (id ``i`` is ``vocab[i]``; id 0 the unknown
    token). Encoding and decoding work as :class:`~seqgraph.train.data.CharCorpus`'s do.

    >>> c = WordCorpus("the cat and the dog", max_vocab=3)
    >>> c.vocab, c.ids.tolist(), c.decode(c.encode("the bird"))
    (['<unk>', 'the', 'and'], [1, 0, 2, 1, 0], 'the <unk>')
    """

    def __init__(self, text: str, vocab: Optional[Sequence[str]] = None, name: str = "<string>",
                 max_vocab: Optional[int] = None, unknown: str = UNKNOWN, lower: bool = False):
        self.name, self.lower = name, bool(lower)
        tokens = tokenize(text, self.lower)
        if vocab is None:
            if not tokens:
                raise SeqgraphError(f"{name}: the text has no words to learn")
            if not isinstance(unknown, str) or not unknown:
                raise SeqgraphError(f"{name}: unknown must be a string, the token rare words read as, "
                                    f"not {unknown!r}", hint='e.g. unknown = "<unk>"')
            vocab = build_vocab(tokens, _check_max_vocab(name, max_vocab), unknown)
        self.vocab = list(vocab)
        if not self.vocab or len(set(self.vocab)) != len(self.vocab):
            raise SeqgraphError(f"{name}: a word vocabulary is a list of distinct tokens, the "
                                "unknown token first")
        self.unknown = self.vocab[0]
        self._index = {token: i for i, token in enumerate(self.vocab)}
        self.ids = self._ids(tokens)

    @classmethod
    def from_vocab(cls, vocab: Sequence[str], lower: bool = False) -> "WordCorpus":
        """A corpus holding no text, only ``vocab``: to encode a prime text or decode samples."""
        return cls("", vocab=vocab, lower=lower)

    @property
    def vocab_size(self) -> int:
        """The number of tokens in the vocabulary, the unknown one included."""
        return len(self.vocab)

    def _ids(self, tokens: Sequence[str]) -> np.ndarray:
        return np.array([self._index.get(token, 0) for token in tokens], dtype=np.int64)

    def encode(self, text: str) -> np.ndarray:
        """The ids of the tokens of ``text`` (unknown words: id 0), shape ``(tokens,)``, int64."""
        return self._ids(tokenize(text, self.lower))

    def decode(self, ids) -> str:
        """The text spelled by ``ids``, re-spaced by :func:`detokenize`."""
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if len(ids) and (ids.min() < 0 or ids.max() >= len(self.vocab)):
            raise SeqgraphError(f"{self.name}: ids must lie in 0..{len(self.vocab) - 1} to be "
                                f"decoded; got {int(ids.min())}..{int(ids.max())}")
        return detokenize([self.vocab[i] for i in ids])

    def unknown_share(self) -> float:
        """The fraction of this text's tokens that encode as the unknown token."""
        return float(np.mean(self.ids == 0)) if len(self.ids) else 0.0

    def tokenizer(self) -> dict:
        """What a checkpoint keeps to rebuild this tokenizer (with :func:`from_vocab`)."""
        return {"level": "word", "lower": self.lower}


def _check_max_vocab(name: str, max_vocab) -> Optional[int]:
    if max_vocab is None:
        return None
    if isinstance(max_vocab, bool) or not isinstance(max_vocab, int) or max_vocab < 2:
        raise SeqgraphError(f"{name}: max_vocab must be a whole number of at least 2 (the unknown "
                            f"token and one word), not {max_vocab!r}")
    return max_vocab
