"""The data sources of a train block: the table of built-in datasets, the keywords each
source accepts, and :func:`builtin`, which generates one."""

from __future__ import annotations

import inspect
from typing import Optional

from ...errors import SeqgraphError, Span, did_you_mean
from .dataset import Dataset
from .digits import digit_captions, digits8x8
from .grammar import grammar_text
from .tasks import adding, copy, majority, parity, reverse, sort


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


# The keyword arguments each data source of a train block takes besides its one positional
# argument (``data = text("f.txt", level = word)``); the one list to extend when a source learns
# an option. A built-in task's are its sizes (see builtin_sizes), ``builtin("adding", length = 50)``.
SOURCE_KEYWORDS = {
    "text": ("level", "max_vocab", "unknown", "lower"),
    "csv": ("label", "sequence", "features", "delimiter", "max_vocab", "unknown", "lower"),
    "npz": (),
}
SOURCES = ("builtin",) + tuple(SOURCE_KEYWORDS)


def check_source_keywords(source: str, spec: str, keywords, spans: dict, span: Optional[Span] = None) -> None:
    """Every keyword of a call of data source ``source`` on ``spec`` (a file, a built-in
    name, ``builtin:<name>``) is one the source accepts; an unknown one is a SeqgraphError
    at its place (``spans``, else ``span``) with the known ones offered."""
    if source == "builtin":
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
