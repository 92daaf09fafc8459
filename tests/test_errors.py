"""Golden error messages: each wrong program, exactly what seqgraph tells its author.

Every case is a small program with one kind of mistake (one case, several) and the full
rendering of the error: ``file:line:col: error: message``, the source line, a caret under the
place, and the hint. The test checks the rendering, and separately each diagnostic's message,
line and column, and its caret line.
"""

import random
import re
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

import seqgraph as sg
from seqgraph import SeqgraphError

MODELS = Path(__file__).resolve().parents[1] / "models"


class Case(NamedTuple):
    name: str
    shows: str
    source: str
    rendered: str


CASES = [
    Case("syntax_missing_colon", "a syntax error says what was found and what was expected", """
        model M {
            input x seq[float, 4]
        }
    """, """
        model.sg:2:13: error: syntax error: unexpected 'seq'
                input x seq[float, 4]
                        ^~~
        hint: expected ':'
    """),
    Case("syntax_unclosed_block", "end of file inside a block names the bracket left open", """
        model M {
            input x : seq[float, 4]
    """, """
        model.sg:2:28: error: syntax error: unexpected end of file
                input x : seq[float, 4]
                                       ^
        hint: the '{' at line 1, column 9 is never closed: add '}'
    """),
    Case("syntax_bad_character", "a character the language does not use", """
        model M {
            input x : [4]
            y = x $ 2
        }
    """, """
        model.sg:3:11: error: syntax error: unexpected character '$'
                y = x $ 2
                      ^
        hint: expected '!=', '(', ')', '*', '+', ',', '-', '/', ...
    """),
    Case("syntax_old_value", "only v[t-1] is a delayed read", """
        cell C(x : [X]) -> h : [H] {
            param W : [H, X]
            state h : [H] = 0
            h = tanh(W @ x + h[t-2])
        }
    """, """
        model.sg:4:22: error: only the previous step can be read: write v[t-1]
                h = tanh(W @ x + h[t-2])
                                 ^~~~~~
        hint: a delayed read is NAME[t-1]; keep older values in an extra state
    """),
    Case("unknown_size", "an unknown size, with a did-you-mean", """
        model M(hidden = 8) {
            input x : seq[float, 4]
            target y : [1]
            h = lstm(x, hiden)
            loss = mse(dense(last(h), 1), y)
        }
    """, """
        model.sg:4:17: error: unknown size 'hiden'
                h = lstm(x, hiden)
                            ^~~~~
        hint: did you mean 'hidden'?
    """),
    Case("unknown_name", "an unknown value, with a did-you-mean", """
        model M {
            input x : seq[float, 4]
            target y : [1]
            h = lstm(x, 8)
            loss = mse(dense(last(hh), 1), y)
        }
    """, """
        model.sg:5:27: error: unknown name 'hh'
                loss = mse(dense(last(hh), 1), y)
                                      ^~
        hint: did you mean 'h'?
    """),
    Case("unknown_function", "an unknown function, with a did-you-mean", """
        model M {
            input x : seq[float, 4]
            target y : [1]
            h = lstn(x, 8)
            loss = mse(dense(last(h), 1), y)
        }
    """, """
        model.sg:4:9: error: unknown function 'lstn'
                h = lstn(x, 8)
                    ^~~~
        hint: did you mean 'lstm'?
    """),
    Case("too_many_arguments", "wrong argument count shows the usage", """
        model M {
            input x : seq[float, 4]
            target y : [1]
            h = tanh(x, x)
            loss = mse(dense(last(h), 1), y)
        }
    """, """
        model.sg:4:17: error: tanh takes 1 positional argument, got 2
                h = tanh(x, x)
                            ^
        hint: usage: tanh(x)
    """),
    Case("missing_argument", "a required argument left out", """
        model M {
            input x : [4]
            target y : [1]
            loss = mse(dense(x), y)
        }
    """, """
        model.sg:4:16: error: dense is missing its argument 'size'
                loss = mse(dense(x), y)
                           ^~~~~
        hint: usage: dense(x, size, name = ...)
    """),
    Case("unknown_keyword", "an unknown keyword argument, with a did-you-mean", """
        model M {
            input x : seq[float, 4]
            target y : [1]
            h = lstm(x, 8, direction = both, layer = 2)
            loss = mse(dense(last(h), 1), y)
        }
    """, """
        model.sg:4:38: error: lstm has no argument 'layer'
                h = lstm(x, 8, direction = both, layer = 2)
                                                 ^~~~~
        hint: did you mean 'layers'?
    """),
    Case("bad_option", "an option outside its choices", """
        model M {
            input x : seq[float, 4]
            target y : [1]
            h = lstm(x, 8, direction = sideways)
            loss = mse(dense(last(h), 1), y)
        }
    """, """
        model.sg:4:32: error: 'direction' must be one of forward, backward, both
                h = lstm(x, 8, direction = sideways)
                                           ^~~~~~~~
    """),
    Case("symbolic_shape_mismatch", "a cell checked with symbolic sizes reports both shapes in its own terms", """
        cell Bad(x : [X]) -> h : [H] {
            param W : [4*H, X]
            state h : [H] = 0
            h = tanh(W @ concat(x, h[t-1]))
        }
    """, """
        model.sg:4:18: error: shape mismatch in W @ concat(x, h[t-1]): W is [4*H, X] but concat(x, h[t-1]) is [X + H]
                h = tanh(W @ concat(x, h[t-1]))
                             ^~~~~~~~~~~~~~~~~
        hint: W @ v needs v's last axis to be X, the second axis of W
    """),
    Case("elementwise_shape_mismatch", "both operands and both shapes", """
        model M {
            input x : [4]
            input z : [5]
            target y : [1]
            loss = mse(dense(x + z, 1), y)
        }
    """, """
        model.sg:5:26: error: shape mismatch in x + z: x is [4] but z is [5]
                loss = mse(dense(x + z, 1), y)
                                     ^
        hint: elementwise operands must have equal sizes, or 1, on each trailing axis
    """),
    Case("output_shape_mismatch", "a cell output declared with one size, computed with another", """
        cell C(x : [X]) -> h : [H] {
            param W : [2*H, X]
            state c : [H] = 0
            c = c[t-1]
            h = tanh(W @ x)
        }
    """, """
        model.sg:5:9: error: output 'h' is declared [H] but its value is [2*H]
                h = tanh(W @ x)
                    ^~~~
        hint: the cell's header declares h : [H] (line 1)
    """),
    Case("ints_into_recurrence", "integer ids where floats are needed", """
        model M {
            input x : seq[int, 10]
            target y : [1]
            h = lstm(x, 8)
            loss = mse(dense(last(h), 1), y)
        }
    """, """
        model.sg:4:14: error: lstm runs over a float sequence, but 'x' is seq[int, 10]
                h = lstm(x, 8)
                         ^
        hint: embed integer ids first
    """),
    Case("ints_into_dense", "integer classes where floats are needed", """
        model M {
            input x : int[10]
            target y : [1]
            loss = mse(dense(x, 1), y)
        }
    """, """
        model.sg:4:22: error: expected float values, got int[10]
                loss = mse(dense(x, 1), y)
                                 ^
        hint: integer ids become vectors with embedding(x, vocab, size)
    """),
    Case("float_class_target", "cross_entropy needs integer targets", """
        model M {
            input x : [4]
            target y : [5]
            loss = cross_entropy(dense(x, 3), y)
        }
    """, """
        model.sg:4:39: error: cross_entropy needs integer class targets, got [5]
                loss = cross_entropy(dense(x, 3), y)
                                                  ^
        hint: declare the target as int[K] or seq[int, K], or give class probabilities shaped like the logits
    """),
    Case("class_count_mismatch", "logits and target disagree on the number of classes", """
        model M {
            input x : [4]
            target y : int[3]
            loss = cross_entropy(dense(x, 4), y)
        }
    """, """
        model.sg:4:26: error: cross_entropy: logits have 4 classes but the target has 3
                loss = cross_entropy(dense(x, 4), y)
                                     ^~~~~
        hint: project to 3 classes, e.g. dense(h, 3)
    """),
    Case("delayed_read_not_a_state", "only states can be read at t-1", """
        cell C(x : [X]) -> h : [H] {
            param W : [H, X]
            state h : [H] = 0
            a = W @ x
            h = tanh(a[t-1] + h[t-1])
        }
    """, """
        model.sg:5:14: error: 'a' is not a state; only states can be read at t-1
                h = tanh(a[t-1] + h[t-1])
                         ^~~~~~
        hint: declare it: state a : [...] = 0
    """),
    Case("delayed_read_in_model", "a model has no previous step", """
        model M {
            input x : seq[float, 4]
            target y : [1]
            h = x[t-1]
            loss = mse(dense(last(h), 1), y)
        }
    """, """
        model.sg:4:9: error: 'x[t-1]' reads a previous step, which only a cell can do
                h = x[t-1]
                    ^~~~~~
        hint: write the recurrence as a cell with a state
    """),
    Case("algebraic_loop", "a state read before it is assigned in the same step", """
        cell C(x : [X]) -> h : [H] {
            param W : [H, X]
            state h : [H] = 0
            h = tanh(W @ x + h)
        }
    """, """
        model.sg:4:22: error: state 'h' is read before it is assigned in this step (an algebraic loop)
                h = tanh(W @ x + h)
                                 ^
        hint: read the previous step's value with h[t-1]
    """),
    Case("size_zero", "a size must be a positive integer", """
        model M(hidden = 0) {
            input x : seq[float, 4]
            target y : [1]
            h = lstm(x, hidden)
            loss = mse(dense(last(h), 1), y)
        }
    """, """
        model.sg:1:18: error: size 'hidden' must be a positive integer, got 0
            model M(hidden = 0) {
                             ^
        hint: a size counts features, classes or channels: 1 or more
    """),
    Case("size_not_whole", "a size must be a whole number", """
        model M(hidden = 2.5) {
            input x : [4]
            target y : [1]
            loss = mse(dense(x, hidden), y)
        }
    """, """
        model.sg:1:18: error: a size must be a whole number, got 2.5
            model M(hidden = 2.5) {
                             ^~~
    """),
    Case("duplicate_cell", "a cell defined twice", """
        cell C(x : [X]) -> h : [H] {
            param W : [H, X]
            state h : [H] = 0
            h = tanh(W @ x + h[t-1])
        }
        cell C(x : [X]) -> h : [H] {
            param W : [H, X]
            state h : [H] = 0
            h = tanh(W @ x + h[t-1])
        }
    """, """
        model.sg:6:6: error: cell 'C' is already defined in this file
            cell C(x : [X]) -> h : [H] {
                 ^
        hint: rename the cell
    """),
    Case("cell_shadows_prelude", "a cell named like a prelude cell", """
        cell lstm(x : [X]) -> h : [H] {
            param W : [H, X]
            state h : [H] = 0
            h = tanh(W @ x + h[t-1])
        }
    """, """
        model.sg:1:6: error: cell 'lstm' is already defined in the prelude
            cell lstm(x : [X]) -> h : [H] {
                 ^~~~
        hint: rename the cell
    """),
    Case("duplicate_model", "a model defined twice", """
        model M {
            input x : [4]
            target y : [1]
            loss = mse(dense(x, 1), y)
        }
        model M {
            input x : [4]
            target y : [1]
            loss = mse(dense(x, 1), y)
        }
    """, """
        model.sg:6:7: error: model 'M' is defined twice
            model M {
                  ^
    """),
    Case("duplicate_declaration", "an input declared twice", """
        model M {
            input x : [4]
            input x : [4]
            target y : [1]
            loss = mse(dense(x, 1), y)
        }
    """, """
        model.sg:3:11: error: 'x' is already defined
                input x : [4]
                      ^
        hint: declarations cannot be shadowed; rename one
    """),
    Case("duplicate_layer_name", "two layers with one name=", """
        model M {
            input x : [4]
            target y : [1]
            a = dense(x, 8, name = proj)
            b = dense(a, 1, name = proj)
            loss = mse(b, y)
        }
    """, """
        model.sg:5:9: error: layer name 'proj' is used twice
                b = dense(a, 1, name = proj)
                    ^~~~~
        hint: give each layer its own name=
    """),
    Case("state_in_model", "states live in cells", """
        model M {
            input x : seq[float, 4]
            state h : [4] = 0
            target y : [1]
            loss = mse(dense(last(x), 1), y)
        }
    """, """
        model.sg:3:11: error: a state belongs in a cell
                state h : [4] = 0
                      ^
        hint: write the recurrence as a cell and call it on a sequence
    """),
    Case("unassigned_state", "a state that never gets a new value", """
        cell C(x : [X]) -> h : [H] {
            param W : [H, X]
            state c : [H] = 0
            state h : [H] = 0
            h = tanh(W @ x + h[t-1])
        }
    """, """
        model.sg:3:11: error: state 'c' is never assigned
                state c : [H] = 0
                      ^
        hint: give it a new value each step: c = ...
    """),
    Case("mixed_time_axes", "sequences of different time axes cannot be combined step by step", """
        model M {
            input a : seq[float, 4, time = src]
            input b : seq[float, 4, time = tgt]
            target y : [1]
            s = a + b
            loss = mse(dense(last(s), 1), y)
        }
    """, """
        model.sg:5:13: error: add mixes sequences of different time axes ('src' and 'tgt')
                s = a + b
                        ^
        hint: sequences on different time axes have different lengths; combine them with attention(query, memory), or reduce one first with last(...)
    """),
    Case("unpack_too_many", "tuple unpacking count mismatch", """
        model M {
            input x : seq[float, 4]
            target y : [1]
            h, c, z = lstm(x, 8)
            loss = mse(dense(last(h), 1), y)
        }
    """, """
        model.sg:4:15: error: lstm(...) gives 2 values but 3 names receive them
                h, c, z = lstm(x, 8)
                          ^~~~
        hint: unpack exactly 2: a, b = ...
    """),
    Case("unpack_one_value", "unpacking a single value", """
        model M {
            input x : seq[float, 4]
            target y : [1]
            a, b = tanh(x)
            loss = mse(dense(last(a), 1), y)
        }
    """, """
        model.sg:4:12: error: tanh(...) gives one value, which cannot be unpacked into 2 names
                a, b = tanh(x)
                       ^~~~
        hint: assign it to one name: a = ...
    """),
    Case("loss_not_scalar", "a loss must be one number", """
        model M {
            input x : [4]
            target y : [1]
            loss = dense(x, 1)
        }
    """, """
        model.sg:4:12: error: 'loss' must be a single number, got [1]
                loss = dense(x, 1)
                       ^~~~~
        hint: losses such as cross_entropy(...) average over the batch
    """),
    Case("init_wrong_size", "an initial state of the wrong size, once per state", """
        model M {
            input x : seq[float, 4]
            input z : [3]
            target y : [1]
            h = lstm(x, 8, init = (z, z))
            loss = mse(dense(last(h), 1), y)
        }
    """, """
        model.sg:5:27: error: initial value for state 'h' is [3], but the state is [8] per example
                h = lstm(x, 8, init = (z, z))
                                      ^~~~~~

        model.sg:5:27: error: initial value for state 'c' is [3], but the state is [8] per example
                h = lstm(x, 8, init = (z, z))
                                      ^~~~~~
    """),
    Case("reassign_input", "inputs are not reassigned", """
        model M {
            input x : [4]
            target y : [1]
            x = tanh(x)
            loss = mse(dense(x, 1), y)
        }
    """, """
        model.sg:4:5: error: 'x' is an input and cannot be reassigned
                x = tanh(x)
                ^
    """),
    Case("last_of_vector", "sequence functions need a sequence", """
        model M {
            input x : [4]
            target y : [1]
            loss = mse(dense(last(x), 1), y)
        }
    """, """
        model.sg:4:27: error: expected a sequence, got [4]
                loss = mse(dense(last(x), 1), y)
                                      ^
        hint: sequence functions apply to seq[...] values outside cells
    """),
    Case("several_errors", "independent mistakes are reported together", """
        model M(hidden = 8) {
            input x : seq[float, 4]
            target y : [1]
            h = lstm(x, hiden)
            z = foo(x)
            loss = mse(dense(last(x), 1), y)
        }
    """, """
        model.sg:4:17: error: unknown size 'hiden'
                h = lstm(x, hiden)
                            ^~~~~
        hint: did you mean 'hidden'?

        model.sg:5:9: error: unknown function 'foo'
                z = foo(x)
                    ^~~
    """),

]

HEADLINE = re.compile(r"^model\.sg:(\d+):(\d+): error: (.*)$")


def _expected(rendered: str) -> list:
    """(line, col, message, caret line) of each diagnostic in a golden rendering."""
    lines = rendered.splitlines()
    found = []
    for index, line in enumerate(lines):
        match = HEADLINE.match(line)
        if match:
            found.append((int(match[1]), int(match[2]), match[3], lines[index + 2]))
    return found


def _error_of(source: str) -> SeqgraphError:
    with pytest.raises(SeqgraphError) as info:
        sg.parse(source, "model.sg")
    return info.value


def test_there_are_many_distinct_cases():
    assert len({case.name for case in CASES}) == len(CASES) >= 25
    assert len({case.source for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_error_is_reported_exactly(case):
    source = textwrap.dedent(case.source).lstrip("\n")
    golden = textwrap.dedent(case.rendered).strip("\n")
    error = _error_of(source)
    assert error.render() == golden
    expected = _expected(golden)
    assert len(error.diagnostics) == len(expected)
    for diagnostic, (line, col, message, caret) in zip(error.diagnostics, expected):
        assert diagnostic.message == message
        assert (diagnostic.span.line, diagnostic.span.col) == (line, col)
        assert diagnostic.span.filename == "model.sg"
        assert caret.strip().startswith("^")
        assert diagnostic.render().splitlines()[2] == caret


def test_shape_mismatch_in_a_cell_shows_both_symbolic_shapes():
    case = next(c for c in CASES if c.name == "symbolic_shape_mismatch")
    error = _error_of(textwrap.dedent(case.source).lstrip("\n"))
    assert "[4*H, X]" in error.message and "[X + H]" in error.message


def test_several_errors_come_in_one_report():
    case = next(c for c in CASES if c.name == "several_errors")
    error = _error_of(textwrap.dedent(case.source).lstrip("\n"))
    assert [d.span.line for d in error.diagnostics] == [4, 5]


# --- errors raised through the Python API ----------------------------------------------------

NO_LOSS = """\
model Encoder(hidden = 8) {
    input x : seq[float, 4]
    h = lstm(x, hidden)
    output h
}
"""


def test_a_model_without_loss_cannot_be_trained():
    model = sg.parse(NO_LOSS, "model.sg").model()
    assert model.outputs == {"h": model.outputs["h"]}
    with pytest.raises(SeqgraphError) as info:
        model.require_loss()
    error = info.value
    assert error.message == "model Encoder has no loss to train"
    assert (error.span.line, error.span.col) == (1, 7)
    assert error.render() == textwrap.dedent("""\
        model.sg:1:7: error: model Encoder has no loss to train
            model Encoder(hidden = 8) {
                  ^~~~~~~
        hint: assign one, e.g. loss = cross_entropy(logits, y)""")


def test_an_unknown_size_override_suggests_the_right_one():
    model = sg.parse(NO_LOSS, "model.sg").model()
    with pytest.raises(SeqgraphError) as info:
        model.with_sizes(hiden=16)
    error = info.value
    assert error.message == "model Encoder has no size 'hiden'"
    assert error.hint == "did you mean 'hidden'?"
    assert (error.span.line, error.span.col) == (1, 7)
    assert error.render().splitlines()[2] == "          ^~~~~~~"


def test_a_size_override_must_be_positive():
    model = sg.parse(NO_LOSS, "model.sg").model()
    with pytest.raises(SeqgraphError) as info:
        model.with_sizes(hidden=0)
    assert info.value.message == "size 'hidden' must be a positive integer, got 0"
    assert (info.value.span.line, info.value.span.col) == (1, 15)


def test_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(SeqgraphError) as info:
        sg.load(tmp_path / "nope.sg")
    assert info.value.message.startswith("no such file")


def test_a_program_with_several_models_asks_for_a_name():
    two = NO_LOSS + NO_LOSS.replace("Encoder", "Other")
    program = sg.parse(two, "model.sg")
    with pytest.raises(SeqgraphError) as info:
        program.model()
    assert info.value.message == "model.sg holds 2 models; name one"
    with pytest.raises(SeqgraphError) as info:
        program.model("Encodr")
    assert info.value.hint == "did you mean 'Encoder'?"


def test_mangled_programs_raise_only_seqgraph_errors():
    """Delete or insert a token anywhere in a real model: the answer is a SeqgraphError with a
    place, or a program that checks; never another exception."""
    text = (MODELS / "peephole.sg").read_text()
    rng = random.Random(1)
    pieces = ["(", ")", ",", "=", "[t-1]", "x", "0", "-1", "@", "{", "}", "h", "2.5", "seq", "both", ":"]
    for _ in range(150):
        at = rng.randrange(len(text))
        if rng.random() < 0.4:
            mangled = text[:at] + text[at + rng.randint(1, 4):]
        else:
            mangled = text[:at] + rng.choice(pieces) + text[at:]
        try:
            sg.parse(mangled, "model.sg")
        except SeqgraphError as error:
            assert error.render().startswith(("model.sg:", "prelude/"))
