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

The package, one concern a module: :mod:`.dataset` (the record, renaming, splitting),
:mod:`.validation` (its consistency checks), :mod:`.batching` (batches and BPTT windows),
:mod:`.text` (character and word corpora), :mod:`.grammar`, :mod:`.tasks` and :mod:`.digits`
(the generators of the built-in tasks), :mod:`.sources` (the built-in table and the keywords
each data source takes) and :mod:`.files` (reading a user's files).
"""

from .batching import batches, bptt_windows
from .dataset import ID_DTYPE, PAD, TIME, Dataset, rename, split
from .digits import digit_captions, digits8x8
from .files import load_npz, load_text, read_utf8
from .grammar import grammar_text
from .sources import BUILTIN, SOURCE_KEYWORDS, SOURCES, builtin, builtin_sizes, check_source_keywords
from .tasks import adding, copy, majority, parity, reverse, sort
from .text import LEVELS, CharCorpus, at_level, corpus_from_vocab, text_dataset, unigram_entropy, word_dataset
from .validation import KINDS, METRICS

__all__ = [
    "BUILTIN", "CharCorpus", "Dataset", "ID_DTYPE", "KINDS", "LEVELS", "METRICS", "PAD", "SOURCES",
    "SOURCE_KEYWORDS", "TIME", "adding", "at_level", "batches", "bptt_windows", "builtin",
    "builtin_sizes", "check_source_keywords", "copy", "corpus_from_vocab", "digit_captions",
    "digits8x8", "grammar_text", "load_npz", "load_text", "majority", "parity", "read_utf8",
    "rename", "reverse", "sort", "split", "text_dataset", "unigram_entropy", "word_dataset",
]
