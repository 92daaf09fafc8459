"""An initial state that is not one value per example says what to write instead."""

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
