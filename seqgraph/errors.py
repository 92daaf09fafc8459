"""Source positions and the one exception type users see.

Every mistake a user can make is a :class:`SeqgraphError` holding one or more
:class:`Diagnostic`s. Rendered, each reads like a compiler message::

    model.sg:12:9: error: unknown name 'hiden'
        h = lstm(e, hiden)
                    ^~~~~
    hint: did you mean 'hidden'?
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Iterable, Optional


@dataclass(frozen=True, eq=False)
class Source:
    """A source text and the name it is shown under (a path, or ``<string>``)."""

    filename: str
    text: str

    def line(self, number: int) -> str:
        """The text of 1-based line ``number`` without its newline ('' past the end).

        Lines end at ``\n`` only, as the parser counts them: a form feed or U+2028 inside a
        line must not shift every later line number.
        """
        lines = self.text.split("\n")
        return lines[number - 1].rstrip("\r") if 0 < number <= len(lines) else ""


@dataclass(frozen=True)
class Span:
    """A place in a source: 1-based line and column, and the column just past its end."""

    source: Source = field(compare=False, repr=False)
    line: int
    col: int
    end_col: Optional[int] = None

    @property
    def filename(self) -> str:
        """The name of the file this span lies in."""
        return self.source.filename

    def __str__(self) -> str:
        return f"{self.source.filename}:{self.line}:{self.col}"


@dataclass
class Diagnostic:
    """One message: what is wrong, where, and how to fix it."""

    message: str
    span: Optional[Span] = None
    hint: Optional[str] = None
    severity: str = "error"

    def render(self) -> str:
        """The message, the source line and a caret under the place, then the hint."""
        where = f"{self.span}: " if self.span else ""
        lines = [f"{where}{self.severity}: {self.message}"]
        if self.span is not None:
            text = self.span.source.line(self.span.line)
            if text:
                width = 1
                if self.span.end_col and self.span.end_col > self.span.col:
                    width = self.span.end_col - self.span.col
                width = max(1, min(width, len(text) - self.span.col + 1))
                lines.append("    " + text)
                lines.append("    " + " " * (self.span.col - 1) + "^" + "~" * (width - 1))
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(printable(line) for line in lines)


def printable(text: str) -> str:
    """``text`` with every character a terminal would not show as itself (controls other
    than tab and newline, NUL, bidirectional overrides, lone surrogates) replaced by U+FFFD,
    one for one, so carets stay aligned and a message can always be printed."""
    return "".join(c if c.isprintable() or c in "\t\n" else "\ufffd" for c in text)


class SeqgraphError(Exception):
    """A mistake in a user's model, data or command, with where it is and a hint.

    One error may carry several diagnostics when a file has several independent mistakes.
    """

    def __init__(self, message_or_diagnostics, span: Optional[Span] = None,
                 hint: Optional[str] = None):
        if isinstance(message_or_diagnostics, str):
            diagnostics = [Diagnostic(message_or_diagnostics, span, hint)]
        else:
            diagnostics = list(message_or_diagnostics)
        self.diagnostics = diagnostics
        super().__init__(self.render())

    @property
    def message(self) -> str:
        """The first diagnostic's message."""
        return self.diagnostics[0].message

    @property
    def span(self) -> Optional[Span]:
        """The first diagnostic's place."""
        return self.diagnostics[0].span

    @property
    def hint(self) -> Optional[str]:
        """The first diagnostic's hint."""
        return self.diagnostics[0].hint

    def render(self) -> str:
        """All diagnostics, each with its source line and caret."""
        return "\n\n".join(d.render() for d in self.diagnostics)


def decode_utf8(raw: bytes, filename: str, what: str) -> str:
    """``raw`` decoded as UTF-8; bytes that are not UTF-8 are a SeqgraphError at the line and
    column of the first bad byte (``what`` names the file in the message)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        before = raw[:error.start]
        line = before.count(b"\n") + 1
        col = len(before[before.rfind(b"\n") + 1:].decode("utf-8", errors="replace")) + 1
        source = Source(filename, raw.decode("utf-8", errors="replace"))
        raise SeqgraphError(f"{what} is not valid UTF-8: byte 0x{raw[error.start]:02x} at offset "
                            f"{error.start} cannot be decoded", Span(source, line, col, col + 1),
                            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


def did_you_mean(name: str, known: Iterable[str]) -> Optional[str]:
    """A hint naming the closest known name, or listing the known ones when none is close."""
    known = sorted(set(known))
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if known and len(known) <= 12:
        return "known names: " + ", ".join(known)
    return None


class Collector:
    """Gathers diagnostics so a stage can report every independent mistake at once."""

    def __init__(self):
        self.diagnostics: list = []

    def add(self, error: SeqgraphError) -> None:
        """Keep the diagnostics of ``error``."""
        self.diagnostics.extend(error.diagnostics)

    def raise_if_any(self) -> None:
        """Raise one SeqgraphError holding everything collected, if anything was."""
        if self.diagnostics:
            raise SeqgraphError(self.diagnostics)
