"""Fuzzing the front end: whatever text it is given, seqgraph answers or says what is wrong.

Programs are generated from the real example models and the prelude, then mutated: tokens
inserted and deleted, truncations, swapped lines, absurd sizes, deep nesting, odd Unicode,
and plain random text. For every input, parsing and checking either succeed or raise a
:class:`SeqgraphError` whose rendering starts with ``file:line:col`` — never another
exception, never a hang (each example has a deadline). The budget of examples is fixed and
the examples are derived from the test's name, so a run in CI is reproducible.
"""

import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqgraph as sg
from seqgraph import SeqgraphError
from seqgraph.cli import parse_sizes

ROOT = Path(__file__).resolve().parents[1]
CORPUS = {path.name: path.read_text("utf-8")
          for path in sorted(ROOT.glob("models/*.sg")) + sorted(ROOT.glob("seqgraph/prelude/*.sg"))}
FILENAME = "fuzz.sg"
LOCATED = re.compile(rf"^{re.escape(FILENAME)}:\d+:\d+: error: ", re.M)

_LAYOUT = {ord("\n"): None, ord("\t"): None}
FUZZ = settings(max_examples=150, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# Pieces a mutation splices in: the language's own words and symbols, absurd numbers, and
# characters that trip up naive text handling.
TOKENS = ["model", "cell", "train", "input", "target", "output", "param", "state", "seq", "tensor",
          "int", "float", "time", "t", "(", ")", "[", "]", "{", "}", ",", ":", "=", "->", "+", "-",
          "*", "/", "@", "[t-1]", "[t-2]", '"', '"x"', "#", "\n", " ", "x", "h", "lstm", "dense",
          "split", "concat", "last", "0", "-3", "1e309", "0.0", str(10 ** 30), str(10 ** 99),
          "9" * 150, ".5", "1e-400"]
ODD_TEXT = ["\u0301", "\u202e", "\u200f", "\x00", "\ufeff", "\U0001f600", "\\ud800", "\ud800", "\u00e9",
            "\u0130", "\ufffd", "\r", "\r\n", "\t", "\x0b", "\x0c", "\u2028", "\u3000", "\uff08",
            "ß", "\u0663"]


def outcome(text: str) -> str:
    """Parse and check ``text``; 'ok', or the rendered SeqgraphError (any other exception fails)."""
    try:
        program = sg.parse(text, FILENAME)
    except SeqgraphError as error:
        rendered = error.render()
        assert LOCATED.search(rendered), f"an error without file:line:col:\n{rendered}"
        assert rendered.translate(_LAYOUT).isprintable(), f"unprintable characters in {rendered!r}"
        lines = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n").split("\n")
        for diagnostic in error.diagnostics:
            span = diagnostic.span
            assert span is not None, f"a diagnostic without a place: {diagnostic.message}"
            assert 1 <= span.line <= len(lines) and 1 <= span.col <= len(lines[span.line - 1]) + 1
            assert span.source.line(span.line) == lines[span.line - 1].rstrip("\r"), \
                "the caret line is not the line the error is on"
        return rendered
    for model in program.models.values():
        model.params  # every shape concrete
    return "ok"


NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")
ABSURD = ["0", "-3", "1", str(10 ** 30), "9223372036854775808", "4294967297", "99999999999"]


def with_absurd_size(text: str, data) -> str:
    """``text`` with one of its integers (drawn from ``data``) replaced by an absurd one."""
    spots = list(NUMBER.finditer(text))
    if not spots:
        return text
    spot = data.draw(st.sampled_from(spots), label="number")
    return text[:spot.start()] + data.draw(st.sampled_from(ABSURD)) + text[spot.end():]


def mutate(text: str, data) -> str:
    """Apply one to four random edits (each drawn from ``data``) to ``text``."""
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        kind = data.draw(st.sampled_from(["insert", "delete", "truncate", "swap", "odd", "size"]))
        where = data.draw(st.integers(0, len(text)), label="where")
        if kind == "insert":
            text = text[:where] + data.draw(st.sampled_from(TOKENS)) + text[where:]
        elif kind == "delete":
            text = text[:where] + text[where + data.draw(st.integers(1, 12)):]
        elif kind == "truncate":
            text = text[:where]
        elif kind == "swap":
            lines = text.split("\n")
            i, j = (data.draw(st.integers(0, len(lines) - 1)) for _ in range(2))
            lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif kind == "odd":
            text = text[:where] + data.draw(st.sampled_from(ODD_TEXT)) + text[where:]
        else:
            text = with_absurd_size(text, data)
    return text


@FUZZ
@given(st.sampled_from(sorted(CORPUS)), st.data())
def test_mutated_examples_parse_or_fail_with_a_place(name, data):
    outcome(mutate(CORPUS[name], data))


@FUZZ
@given(st.sampled_from(sorted(CORPUS)), st.data())
def test_absurd_sizes_are_checked_with_a_place(name, data):
    text = CORPUS[name]
    for _ in range(data.draw(st.integers(1, 3), label="sizes")):
        text = with_absurd_size(text, data)
    outcome(text)


@settings(FUZZ, max_examples=300)
@given(st.text(st.characters(codec=None, blacklist_categories=()), max_size=300)
       | st.text("model cell train input target{}()[]:=,+-*/@#\"\n xyt0123.", max_size=200))
def test_random_text_parses_or_fails_with_a_place(text):
    outcome(text)


NESTINGS = {
    "parentheses": ("(", ")"),
    "calls": ("tanh(", ")"),
    "tuples": ("(x, ", ")"),
    "negations": ("-", ""),
    "sums": ("", " + x"),
    "products": ("", " * x"),
    "matmuls": ("", " @ x"),
}


@settings(FUZZ, max_examples=30)
@given(st.sampled_from(sorted(NESTINGS)), st.integers(1, 3000))
def test_deep_nesting_and_long_chains_never_overflow_the_stack(kind, depth):
    """Nested expressions and long operator chains: parsed, or refused with a place — not a
    RecursionError from one of the recursive stages after the parser."""
    opening, closing = NESTINGS[kind]
    text = f"model M {{\n    input x : [4]\n    y = {opening * depth}x{closing * depth}\n}}\n"
    rendered = outcome(text)
    if depth > 200 and kind != "parentheses":
        assert "nested too deeply" in rendered


def test_many_statements_and_arguments_are_fine():
    chain = "".join(f"    a{i} = tanh(a{i - 1})\n" for i in range(1, 1500))
    assert outcome(f"model M {{\n    input x : [4]\n    a0 = x\n{chain}    output a1499\n}}\n") == "ok"
    wide = ", ".join(["x"] * 2000)
    assert outcome(f"model M {{\n    input x : [4]\n    output y = concat({wide})\n}}\n") == "ok"


@settings(FUZZ, max_examples=60)
@given(st.sampled_from(sorted(CORPUS)), st.binary(min_size=1, max_size=4), st.data())
def test_files_with_any_bytes_load_or_fail_with_a_place(tmp_path_factory, name, junk, data):
    raw = CORPUS[name].encode("utf-8")
    where = data.draw(st.integers(0, len(raw)), label="where")
    path = tmp_path_factory.mktemp("fuzz") / "model.sg"
    path.write_bytes(raw[:where] + junk + raw[where:])
    try:
        sg.load(path)
    except SeqgraphError as error:
        assert re.match(rf"^{re.escape(str(path))}:\d+:\d+: error: ", error.render()), error.render()


# --- regressions: each input once broke the front end ------------------------------------------

def test_bytes_that_are_not_utf8_are_shown_where_they_are(tmp_path):
    """Loading once said only 'not UTF-8 text (invalid continuation byte at byte 17)'."""
    path = tmp_path / "latin1.sg"
    path.write_bytes("model M {\n    # caf\u00e9 au lait\n}\n".encode("latin-1"))
    with pytest.raises(SeqgraphError) as caught:
        sg.load(path)
    assert caught.value.render().startswith(
        f"{path}:2:10: error: model file {path} is not valid UTF-8: byte 0xe9 at offset 19 cannot be "
        "decoded\n        # caf\ufffd au lait\n             ^\nhint: save the file as UTF-8")


def test_line_numbers_count_newlines_only():
    """A form feed or U+2028 in a comment once shifted the caret line of every later error
    (the parser counts \\n, the message used str.splitlines)."""
    for separator in ("\x0c", "\u2028", "\x1d", "\x85"):
        rendered = outcome(f"# a comment{separator}with a break\nmodel M {{\n    y = x $ 2\n}}\n")
        assert rendered.startswith("fuzz.sg:3:11: error: syntax error: unexpected character '$'")
        assert "\n        y = x $ 2\n" in rendered


def test_old_mac_and_windows_line_endings():
    """Lines ending in a lone \\r were one line to the parser: the error named column 31."""
    text = "model M {\r    input x : [4]\r    y = x $ 2\r}\r"
    assert outcome(text).startswith("fuzz.sg:3:11: error: syntax error: unexpected character '$'")
    assert outcome(text.replace("\r", "\r\n")).startswith("fuzz.sg:3:11: error: syntax error")
    assert outcome(CORPUS["char_lstm.sg"].replace("\n", "\r")) == "ok"


def test_byte_order_mark_is_not_part_of_the_program():
    assert outcome("\ufeff" + CORPUS["char_lstm.sg"]) == "ok"
    assert outcome("\ufeffmodel M {\n    y = x $ 2\n}").startswith("fuzz.sg:2:11: error:")


@pytest.mark.parametrize("char, described", [
    ("\u202e", "U+202E RIGHT-TO-LEFT OVERRIDE"),
    ("\u0301", "U+0301 COMBINING ACUTE ACCENT"),
    ("\ud800", "U+D800"),
    ("\x00", "'\\x00'"),
    ("\U0001f600", "'\U0001f600' U+1F600 GRINNING FACE"),
])
def test_odd_characters_are_named_and_never_echoed_raw(char, described):
    """An invisible or unprintable character is named by code point, and the echoed source
    line shows U+FFFD in its place, so the message prints on any terminal (a lone surrogate
    once made printing the error itself fail)."""
    rendered = outcome(f"model M {{\n    y = a{char}b\n}}\n")
    assert rendered.startswith(f"fuzz.sg:2:10: error: syntax error: unexpected character {described}\n")
    rendered.encode("utf-8")
    shown = char if char.isprintable() else "\ufffd"
    assert f"    y = a{shown}b\n" in rendered


def test_messages_keep_their_line_breaks_but_not_terminal_escapes():
    rendered = SeqgraphError("first line\nsecond \x1b[31mred\x1b[0m", hint="a\tb").render()
    assert rendered == "error: first line\nsecond \ufffd[31mred\ufffd[0m\nhint: a\tb"


def test_a_size_too_large_for_any_array_is_refused_where_it_is_written():
    """10**5000 once passed the checker, and printing the model then raised ValueError."""
    rendered = outcome("model M(H = 99999999999999999999) {\n    input x : [H]\n}\n")
    assert rendered.startswith("fuzz.sg:1:13: error: a size is too large: more than "
                               "9,223,372,036,854,775,807")
    rendered = outcome("model M(H = 3037000500) {\n    input x : [H * H]\n}\n")
    assert rendered.startswith("fuzz.sg:2:16: error: a size is too large")


def test_a_size_error_inside_a_layer_names_the_call():
    """4*H overflowing inside the prelude's lstm points into the prelude; a note names the
    user's call and the sizes it passed."""
    text = "model M(H = 2305843009213693952) {\n    input x : seq[float, 3]\n    h = lstm(x, H)\n}\n"
    with pytest.raises(SeqgraphError) as caught:
        sg.parse(text, FILENAME)
    assert caught.value.diagnostics[0].span.filename == "prelude/lstm.sg"
    note = caught.value.diagnostics[-1]
    assert (note.severity, str(note.span)) == ("note", "fuzz.sg:3:9")
    assert note.message == "in this call of lstm (X = 3, H = 2305843009213693952)"


# --- sizes given from Python and from the command line -------------------------------------------

SIZE_VALUES = (st.integers(-5, 5) | st.integers(2 ** 62, 2 ** 64) | st.just(10 ** 5000)
               | st.floats(allow_nan=True) | st.booleans() | st.none() | st.text(max_size=5))


@settings(FUZZ, max_examples=60)
@given(st.sampled_from(["char_lstm.sg", "digits_cnn.sg", "seq2seq_attention.sg"]),
       st.dictionaries(st.sampled_from(["vocab", "embed", "hidden", "classes", "hiden", "x"]),
                       SIZE_VALUES, min_size=1, max_size=3))
def test_with_sizes_answers_or_refuses_with_a_place(name, sizes):
    model = sg.parse(CORPUS[name], name).model()
    try:
        resized = model.with_sizes(**sizes)
    except SeqgraphError as error:
        assert re.match(r"^\S+\.sg:\d+:\d+: error: ", error.render())
        return
    assert resized.sizes == {**model.sizes, **sizes}
    repr(resized)


@settings(FUZZ, max_examples=100)
@given(st.text(max_size=30) | st.from_regex(r"\A\s*\w+\s*=\s*-?\d{1,6000}\s*\Z"))
def test_size_flags_parse_or_fail_clearly(item):
    try:
        sizes = parse_sizes([item])
    except SeqgraphError as error:
        assert error.message.startswith("--size takes NAME=INTEGER")
        return
    (name, value), = sizes.items()
    assert isinstance(value, int) and name == item.partition("=")[0].strip()


@pytest.mark.parametrize("item", ["hidden=\u00b2", "hidden=" + "9" * 5000, "hidden=\u0663"])
def test_size_flags_that_are_not_plain_integers(item):
    """'²' counts as a digit to str.isdigit but not to int(); 5000 digits exceed int()'s
    limit: both once escaped as ValueError."""
    with pytest.raises(SeqgraphError, match="--size takes NAME=INTEGER"):
        parse_sizes([item])
