"""Tables: CSV or TSV files of features or sequences with a label column, and a generated
one to learn from.

A table has a header row naming its columns. One column is the label; one may hold a
sequence (its whitespace-separated words or numbers); every other column is a number, and
together they make a feature vector per row. Arrays are named after the columns they come
from (the feature vector after ``features``), so a model names its input and target after
them::

    sentence,tense                               input  sentence : seq[int, vocab]
    The dog sees a cat.,present                  target tense    : int[classes]
    Two farmers slept.,past

- **Labels** are class ids when the model's target takes ids (``int[C]``) or when they are
  not numbers: whole numbers of at least 0 are used as they are, names are numbered in
  sorted order (``info["classes"]`` keeps the names). Otherwise they are floats, ``(N, 1)``.
- **Sequences** of words are tokenized as :mod:`seqgraph.train.words` does, with a
  vocabulary built from the column (``max_vocab``, ``unknown``, ``lower``); sequences of
  whole numbers are ids as they are; for a ``seq[float, 1]`` input the numbers are the
  steps' values, ``(N, T, 1)``. Each row's length is its number of tokens.
"""

from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Optional

import numpy as np

from ..errors import SeqgraphError, did_you_mean
from .data import TIME, Dataset, read_utf8
from .data.grammar import Grammar, capital
from .words import UNKNOWN, WordCorpus, build_vocab, tokenize

DELIMITERS = {"comma": ",", "tab": "\t", "semicolon": ";", "space": " ", "bar": "|"}


def load_table(path, label: str = "label", sequence: Optional[str] = None, features: str = "x",
               delimiter: Optional[str] = None, max_vocab: Optional[int] = None, unknown: str = UNKNOWN,
               lower: bool = False, dtypes: Optional[dict] = None, time_axes: Optional[dict] = None):
    """A dataset from the CSV or TSV file at ``path`` (tab-separated when its name ends in
    ``.tsv`` or ``.tab``, unless ``delimiter`` says: a character, or ``tab``, ``comma``, ...).
    ``dtypes`` (array name -> ``"int"`` or ``"float"``) and ``time_axes`` (array name -> time
    axis) come from the model being trained, when there is one."""
    path = Path(path)
    text = read_utf8(path, f"table '{path}'")
    if delimiter is None:
        delimiter = "tab" if path.suffix.lower() in (".tsv", ".tab") else "comma"
    return table_dataset(text, str(path), label, sequence, features, delimiter, max_vocab, unknown,
                         lower, dtypes, time_axes)


def table_dataset(text: str, name: str, label: str = "label", sequence: Optional[str] = None,
                  features: str = "x", delimiter: str = "comma", max_vocab: Optional[int] = None,
                  unknown: str = UNKNOWN, lower: bool = False, dtypes: Optional[dict] = None,
                  time_axes: Optional[dict] = None):
    """A dataset from the text of a table (see :func:`load_table` and the module docstring)."""
    for option, value in (("label", label), ("sequence", sequence), ("features", features)):
        if value is not None and not isinstance(value, str):
            raise SeqgraphError(f"table '{name}': {option} names a column, so it is a string, not {value!r}",
                                hint=f'e.g. {option} = "{option}"')
    header, rows = _read_rows(text, name, _delimiter(name, delimiter))
    dtypes, columns = dtypes or {}, _columns(name, header, rows)
    for option, column in (("label", label), ("sequence", sequence)):
        if column is not None and column not in columns:
            raise SeqgraphError(f"table '{name}' has no column '{column}' (the {option} column)",
                                hint=did_you_mean(column, header))
    arrays, info = {}, {}
    arrays[label], classes = _labels(name, label, columns[label], dtypes.get(label))
    if classes is not None:
        info["classes"] = classes
    lengths, vocab, time = None, None, {}
    if sequence is not None:
        arrays[sequence], steps, vocab = _sequences(name, sequence, columns[sequence], dtypes.get(sequence),
                                                    max_vocab, unknown, lower)
        axis = (time_axes or {}).get(sequence, TIME)
        time, lengths = {sequence: axis}, {axis: steps}
        if vocab is not None:
            info["tokenizer"] = {"level": "word", "lower": bool(lower)}
    rest = [c for c in header if c not in (label, sequence)]
    if rest:
        arrays[features] = np.stack([_numbers(name, c, columns[c]) for c in rest], axis=1)
        info["features"] = rest
    integral = arrays[label].dtype.kind == "i"
    return Dataset(arrays=arrays, kind="sequence", metric="accuracy" if integral else "mse",
                   time_axes=time, lengths=lengths, vocab=vocab,
                   vocab_size=None if vocab is None else len(vocab),
                   num_classes=int(arrays[label].max()) + 1 if integral else None, info=info, name=name)


def _delimiter(name: str, delimiter: str) -> str:
    delimiter = DELIMITERS.get(delimiter, delimiter)
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise SeqgraphError(f"table '{name}': delimiter must be one character or one of "
                            f"{', '.join(DELIMITERS)}, not {delimiter!r}",
                            hint=did_you_mean(str(delimiter), DELIMITERS))
    return delimiter


def _read_rows(text: str, name: str, delimiter: str) -> tuple:
    """The header and the rows (blank lines skipped); a row of the wrong width is an error
    naming its line."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    lines = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    if not lines:
        raise SeqgraphError(f"table '{name}' is empty", hint="its first line names the columns")
    header = [cell.strip() for cell in lines[0][1]]
    if len(set(header)) != len(header) or not all(header):
        raise SeqgraphError(f"table '{name}': the header row must name every column once, "
                            f"got {header}")
    for line, row in lines[1:]:
        if len(row) != len(header):
            raise SeqgraphError(f"table '{name}', line {line}: {len(row)} cells, but the header names "
                                f"{len(header)} columns", hint="a cell holding the delimiter needs quotes")
    if len(lines) < 2:
        raise SeqgraphError(f"table '{name}' has a header but no rows")
    return header, [row for _, row in lines[1:]]


def _columns(name: str, header: list, rows: list) -> dict:
    return {column: [row[i].strip() for row in rows] for i, column in enumerate(header)}


def _number(name: str, column: str, row: int, cell: str) -> float:
    """One cell as a float; anything else is an error naming its row."""
    try:
        value = float(cell)
    except ValueError:
        raise SeqgraphError(f"table '{name}': row {row} of column '{column}' holds {cell!r}, "
                            "not a number", hint="name the label column with  label = ..., and a "
                                                 "column of words with  sequence = ...") from None
    if not np.isfinite(value):
        raise SeqgraphError(f"table '{name}': row {row} of column '{column}' is {cell!r}; "
                            "values must be finite")
    return value


def _numbers(name: str, column: str, cells: list) -> np.ndarray:
    return np.array([_number(name, column, row, cell) for row, cell in enumerate(cells, start=1)])


def _whole(cells) -> bool:
    return all(cell.isdigit() for cell in cells)


def _labels(name: str, column: str, cells: list, dtype: Optional[str]) -> tuple:
    """``(labels, class names or None)``: class ids ``(N,)``, or floats ``(N, 1)`` when the
    model's target is a float or, without a model, when the labels are numbers but not all
    whole."""
    if dtype == "float" or (dtype is None and not _whole(cells) and _all_numbers(cells)):
        return _numbers(name, column, cells)[:, None], None
    if _whole(cells):
        return np.array([int(cell) for cell in cells], dtype=np.int64), None
    classes = sorted(set(cells))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[cell] for cell in cells], dtype=np.int64), classes


def _all_numbers(cells) -> bool:
    try:
        [float(cell) for cell in cells]
    except ValueError:
        return False
    return True


def _sequences(name: str, column: str, cells: list, dtype: Optional[str], max_vocab, unknown, lower) -> tuple:
    """``(padded array, lengths, vocabulary or None)`` of a sequence column."""
    if dtype == "float":
        rows = [[_number(name, column, row, v) for v in cell.split()] for row, cell in enumerate(cells, start=1)]
        vocab = None
    else:
        words = [tokenize(cell, lower) for cell in cells]
        if all(_whole(tokens) for tokens in words):
            rows, vocab = [[int(t) for t in tokens] for tokens in words], None
        else:
            vocab = build_vocab([t for tokens in words for t in tokens], max_vocab, unknown)
            corpus = WordCorpus.from_vocab(vocab, lower)
            rows = [corpus.encode(cell).tolist() for cell in cells]
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    empty = np.flatnonzero(lengths == 0)
    if len(empty):
        raise SeqgraphError(f"table '{name}': row {empty[0] + 1} of column '{column}' is empty; "
                            "every sequence needs at least one step")
    padded = np.zeros((len(rows), int(lengths.max())), dtype=np.float64 if dtype == "float" else np.int64)
    for i, r in enumerate(rows):
        padded[i, :len(r)] = r
    return (padded[..., None] if dtype == "float" else padded), lengths, vocab


# --------------------------------------------------------------------------------------------
# A generated table: sentences labelled with their tense
# --------------------------------------------------------------------------------------------


def tense_text(n: int = 2_000, seed: int = 0) -> str:
    """A TSV table of ``n`` English-like sentences (``sentence``) and the tense of each main
    verb (``tense``: ``past`` or ``present``), from the grammar of ``grammar_text``. Nested
    relative clauses take tenses of their own, so the label is a fact about the main clause,
    not about any one word."""
    grammar = Grammar(random.Random(seed))
    lines = ["sentence\ttense"]
    for _ in range(n):
        plural, tense = grammar.chance(0.35), grammar.pick(["past", "present"])
        clause = f"{grammar.subject(plural)} {grammar.predicate(plural, tense, 0)}"
        lines.append(f"{capital(clause)}.\t{tense}")
    return "\n".join(lines) + "\n"


TABLES: dict = {"tense": tense_text}  # the tables csv("builtin:<name>") reads


def builtin_table(name: str, n: Optional[int] = None, seed: int = 0, **options):
    """The built-in table ``name`` (``n`` rows, the generator's default when None) read as
    :func:`table_dataset` reads a file, with the same ``options``."""
    if name not in TABLES:
        raise SeqgraphError(f"unknown built-in table '{name}'", hint=did_you_mean(name, TABLES))
    text = TABLES[name](seed=seed) if n is None else TABLES[name](n, seed)
    options.setdefault("delimiter", "tab")
    return table_dataset(text, f"builtin:{name}", **options)
