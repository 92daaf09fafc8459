"""A recurrence holds one value per example: an initial state, a cell's state or a cell's
output that is not one is refused with what to write instead."""

import textwrap

import pytest

import seqgraph as sg
from seqgraph import SeqgraphError


def _rendered(declaration: str, init: str) -> str:
    text = textwrap.dedent(f"""\
        model M(hidden = 4) {{
            input  x : seq[float, 3]
            target y : [1]
            {declaration}
            h    = rnn(x, hidden, init = {init})
            loss = mse(dense(last(h), 1), y)
        }}""")
    with pytest.raises(SeqgraphError) as caught:
        sg.parse(text, "m.sg").model()
    return caught.value.render()


def test_a_parameter_as_initial_state_is_refused_with_what_to_write():
    assert _rendered("param h0 : [4]", "h0") == textwrap.dedent("""\
        m.sg:5:34: error: initial value for state 'h' is [4], one value for the whole batch, but the state needs one [4] value per example
                h    = rnn(x, hidden, init = h0)
                                             ^~
        hint: start from a value per example: an input (input h0 : [4]) or one computed from the data, e.g. init = tanh(dense(last(x), 4))""")


def test_a_sequence_as_initial_state_is_refused_with_what_to_write():
    rendered = _rendered("input  s : seq[float, 4]", "s")
    assert rendered.splitlines()[0] == ("m.sg:5:34: error: initial value for state 'h' is seq[float, 4], "
                                        "a value at every step, but the state needs one [4] value per example")
    assert rendered.splitlines()[-1] == "hint: start from one step of it, e.g. init = last(s)"


@pytest.mark.parametrize("header, body, what", [
    ("-> h : [H] {\n    param s : [H]\n    state h : [H] = 0", "h = s * 2", "state 'h'"),
    ("-> h : [H] {\n    param s : [H]", "h = tanh(s)", "output 'h'"),
])
def test_a_cell_value_that_ignores_every_input_and_state_is_refused(header, body, what):
    text = f"cell C(x : [X]) {header}\n    {body}\n}}\n" + textwrap.dedent("""\
        model M(hidden = 4) {
            input  x : seq[float, 3]
            target y : [1]
            loss = mse(dense(last(C(x, hidden)), 1), y)
        }""")
    with pytest.raises(SeqgraphError) as caught:
        sg.parse(text, "m.sg").model()
    lines = caught.value.render().splitlines()
    assert lines[0].endswith(f"error: {what} is [H], one value for the whole batch: it depends on none of "
                             "the cell's inputs and states")
    assert lines[3] == "hint: compute it from an input or a state (h[t-1]), as in h = tanh(W @ x + U @ h[t-1])"
