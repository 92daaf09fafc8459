"""Parse ``.sg`` text with the Lark grammar in ``grammars/seqgraph.lark``."""

from __future__ import annotations

import functools
import unicodedata
from importlib import resources
from pathlib import Path

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from ..errors import SeqgraphError, Source, Span
from . import ast
from .to_ast import ToAst

_CHECKOUT_GRAMMAR = Path(__file__).resolve().parents[2] / "grammars" / "seqgraph.lark"

# Deeper expressions are refused at parse time: every later stage (the transformer, the
# checker's evaluator) walks expressions recursively, a few Python frames per level.
MAX_NESTING = 100
MAX_DIGITS = 100  # an integer literal longer than this is no size anyone means
_NESTING_RULES = {"add", "sub", "mul", "div", "matmul", "neg", "call", "tuple"}

_TOKEN_WORDS = {"NAME": "a name", "NUMBER": "a number", "INT": "an integer",
                "STRING": "a string", "DTYPE": "'float' or 'int'", "$END": "the end of the file"}


def grammar_text() -> str:
    """The grammar, from the source checkout or from the installed package."""
    if _CHECKOUT_GRAMMAR.exists():
        return _CHECKOUT_GRAMMAR.read_text(encoding="utf-8")
    return resources.files("seqgraph.grammars").joinpath("seqgraph.lark").read_text("utf-8")


@functools.lru_cache(maxsize=1)
def _parser() -> Lark:
    return Lark(grammar_text(), parser="lalr", propagate_positions=True, maybe_placeholders=True)


def parse_source(text: str, filename: str = "<string>") -> ast.Program:
    """Parse ``text`` into an :class:`~seqgraph.syntax.ast.Program`.

    A syntax error is a :class:`SeqgraphError` saying what was found and what was expected.
    """
    source = Source(filename, _normalise_text(text))
    text = source.text
    try:
        tree = _parser().parse(text)
    except UnexpectedInput as error:
        raise _syntax_error(error, source) from None
    _check_limits(tree, source)
    program = ToAst(source).transform(tree)
    _check_delays(program)
    return program


def _normalise_text(text: str) -> str:
    """``text`` with a leading byte-order mark dropped and every line ending made ``\n``
    (Windows ``\r\n`` and old Mac ``\r``), so line numbers are the ones editors show."""
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def _check_limits(tree: Tree, source: Source) -> None:
    """Refuse expressions nested deeper than :data:`MAX_NESTING` and absurdly long integer
    literals, walking the parse tree without recursion."""
    stack = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if node.data in _NESTING_RULES:
            depth += 1
            if depth > MAX_NESTING:
                meta = node.meta
                raise SeqgraphError(f"expression nested too deeply (more than {MAX_NESTING} levels)",
                                    Span(source, meta.line, meta.column),
                                    "split it into several assignments: a = f(x), then b = g(a)")
        for child in node.children:
            if isinstance(child, Tree):
                stack.append((child, depth))
            elif isinstance(child, Token) and child.type in ("NUMBER", "INT") and \
                    len(child) > MAX_DIGITS and not any(c in child for c in ".eE"):
                raise SeqgraphError(f"number too large ({len(child)} digits)",
                                    Span(source, child.line, child.column, child.column + 1),
                                    "sizes and counts are ordinary integers")


def _describe_expected(names) -> str:
    parser = _parser()
    words = set()
    for name in names:
        if name in _TOKEN_WORDS:
            words.add(_TOKEN_WORDS[name])
            continue
        try:
            pattern = parser.get_terminal(name).pattern
        except KeyError:
            continue
        words.add(f"'{pattern.value}'" if pattern.type == "str" else name.lower())
    ordered = sorted(words)
    if len(ordered) > 8:
        ordered = ordered[:8] + ["..."]
    return ", ".join(ordered)


def _syntax_error(error: UnexpectedInput, source: Source) -> SeqgraphError:
    line, col = max(error.line, 1), max(error.column, 1)
    if isinstance(error, UnexpectedCharacters):
        message = f"unexpected character {_describe_char(source.line(line)[col - 1:col])}"
        expected = error.allowed
        width = 1
    elif isinstance(error, UnexpectedEOF) or (
            isinstance(error, UnexpectedToken) and error.token.type == "$END"):
        lines = source.text.rstrip().split("\n")
        line, col = len(lines), len(lines[-1]) + 1
        message = "unexpected end of file"
        expected = error.expected
        width = 1
    else:
        token = error.token
        message = f"unexpected {_describe_token(token)}"
        expected = error.expected
        width = len(str(token)) or 1
    span = Span(source, line, col, col + width)
    hint = None
    if expected:
        hint = f"expected {_describe_expected(expected)}"
    unclosed = _unclosed_bracket(source) if message == "unexpected end of file" else None
    if unclosed is not None:
        char, open_line, open_col = unclosed
        hint = f"the '{char}' at line {open_line}, column {open_col} is never closed: add '{_PAIRS[char]}'"
    return SeqgraphError(f"syntax error: {message}", span, hint)


_PAIRS = {"(": ")", "[": "]", "{": "}"}


def _unclosed_bracket(source: Source):
    """The innermost bracket still open at the end of the text, as (char, line, col), or None."""
    stack = []
    for number, line in enumerate(source.text.split("\n"), 1):
        in_string = False
        for col, char in enumerate(line, 1):
            if in_string:
                in_string = char != '"'
            elif char == '"':
                in_string = True
            elif char == "#":
                break
            elif char in _PAIRS:
                stack.append((char, number, col))
            elif stack and char == _PAIRS[stack[-1][0]]:
                stack.pop()
    return stack[-1] if stack else None


def _describe_char(char: str) -> str:
    """``'$'``; a character outside ASCII also by code point and name, since it may be
    invisible (a combining mark, a right-to-left override) or look like an ASCII one."""
    if not char:
        return "'?'"
    if char.isascii():
        return repr(char)
    name = unicodedata.name(char, "")
    shown = repr(char) if char.isprintable() and unicodedata.combining(char) == 0 else ""
    return " ".join(part for part in (shown, f"U+{ord(char):04X}", name) if part)


def _describe_token(token) -> str:
    if token.type == "NAME":
        return f"name '{token}'"
    if token.type in ("NUMBER", "INT"):
        return f"number {token}"
    return f"'{token}'"


def _check_delays(program: ast.Program) -> None:
    """Only ``v[t-1]`` is a delayed read; say so for ``v[s-1]`` or ``v[t-2]``."""
    problems = []

    def visit(node):
        if isinstance(node, ast.Delayed) and node.delay != 1:
            problems.append(SeqgraphError(
                "only the previous step can be read: write v[t-1]", node.span,
                "a delayed read is NAME[t-1]; keep older values in an extra state").diagnostics[0])
        for value in vars(node).values() if hasattr(node, "__dict__") else ():
            for child in value if isinstance(value, list) else [value]:
                if hasattr(child, "span") and not isinstance(child, Span):
                    visit(child)

    for block in program.models + program.cells + program.trains:
        visit(block)
    if problems:
        raise SeqgraphError(problems)
