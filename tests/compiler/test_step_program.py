"""The step program: the buffers a scan's loops are handed, the liveness that shares scratch
buffers, and the Python lowering of the typed instructions."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph import cli
from seqgraph.compiler import Scan
from seqgraph.step_program import (Buffer, Instruction, Loop, StepProgram, View, ordered_views,
                                            python_source, ufunc)
from seqgraph.ops.kernels import Call, namespace

from .conftest import ROOT, language_model


def _code(cell: str, hidden: int = 6):
    net = sg.compile(language_model(cell, hidden=hidden), dtype="float64")
    (scan,) = [item for item in net.program.schedule if isinstance(item, Scan)]
    return scan.code


def _roles(loop: Loop) -> dict:
    found = {}
    for buffer in loop.buffers.values():
        found.setdefault(buffer.role, []).append(buffer)
    return found


def test_an_rnn_forward_step_is_a_product_an_add_and_a_tanh_over_its_state_steps():
    code = _code("rnn")
    loop = code.forward_loop
    roles = _roles(loop)
    (state,) = roles["S"]
    assert state.shape == (6,) and state.index == code.index["rnn_0/tanh"] and state.over_time
    assert state.layout() == "[T+1, B, 6]"
    (weight,) = roles["wt"]
    assert weight.shape == (6, 6) and not weight.over_time and weight.layout() == "[6, 6]"
    assert [buffer.shape for buffer in roles["X"]] == [(6,)]
    assert [(i.call.ufunc, i.call.out) for i in loop.instructions()] == [
        ("dot", "v1"), ("add", "v2"), ("tanh", f"v{state.index}")]
    # the state is read at t (its previous value) and written at t + 1
    shifts = sorted(view.shift for view in loop.body if isinstance(view, View) and view.of == state.name)
    assert shifts == [0, 1]
    assert python_source(loop) == code.forward_source
    assert code.stats()["forward_calls_per_step"] == 3


def test_values_that_share_a_scratch_buffer_are_never_alive_together():
    code = _code("lstm")
    for loop in (code.forward_loop, code.program().backward):
        assert loop.sharing and set(loop.sharing) == set(loop.liveness)
        held = {}
        for value, buffer in loop.sharing.items():
            held.setdefault(buffer, []).append(loop.liveness[value])
        assert len(held) < len(loop.sharing)  # some buffer is shared
        for spans in held.values():
            spans.sort()
            for (_, last), (first, _) in zip(spans, spans[1:]):
                assert last <= first  # touching only where an in-place op reads, then writes
        scratch = {name for name, buffer in loop.buffers.items() if buffer.role == "b"}
        assert set(loop.sharing.values()) <= scratch
    # the forward scratch buffers are what the loop is handed and the liveness plan gave
    assert set(code.forward_buffers) == {n for n, b in code.forward_loop.buffers.items() if b.role == "b"}
    bound = {item.name: item.of for item in code.forward_loop.prelude if isinstance(item, View)}
    for value, buffer in code.forward_loop.sharing.items():
        assert bound[value] == buffer


def test_the_backward_loop_carries_each_state_cotangent_and_reads_the_outside_one():
    code = _code("lstm")
    program = code.program()
    loop = program.backward
    assert loop.reverse and not program.forward.reverse
    roles = _roles(loop)
    states = sorted(code.index[p] for p in code.prev_of.values())
    assert sorted(b.index for b in roles["C"]) == states
    zeroed = [i.out for i in loop.prelude if isinstance(i, Instruction) and i.kind == "zero"]
    assert sorted(zeroed) == sorted((f"g{i}",) for i in states)  # zeroed once, before the last step
    outside = [code.index[n] for n in code.outside]
    assert [b.index for b in roles["O"]] == sorted(outside)
    assert {b.role for b in roles["G"]} == {"G"} and all(b.over_time for b in roles["G"])
    assert program.nodes == tuple(code.order)
    text = str(program)
    assert f"v{states[0]}, g{states[0]}: {code.order[states[0]]}" in text
    assert "scan_backward (for t from T-1 down to 0)" in text
    assert f"buffer C{states[0]}: carried cotangent of node {states[0]}, [B, 6]" in text
    assert [b.layout() for b in roles["O"]] == ["[T, B, 6]"] * len(outside)


def test_views_render_and_bind_after_what_they_are_part_of():
    views = [View("g4", "g3", columns=(2, 6)), View("g3", "G3", 0), View("v1", "S1", 1), View("v0", "b0")]
    assert [str(v) for v in views] == ["g4 = g3[..., 2:6]", "g3 = G3[t]", "v1 = S1[t + 1]", "v0 = b0"]
    assert [v.name for v in ordered_views(views)] == ["g3", "g4", "v1", "v0"]
    with pytest.raises(AssertionError):
        ordered_views([View("a", "b"), View("b", "a")])


def test_each_kind_of_instruction_writes_its_python_line():
    assert Instruction("chain", ("v3", "v4"), ("v1", "x_a"), function="F4").source() == ["F4(v1, x_a, out=(v3, v4, ))"]
    assert Instruction("function", ("g1",), ("g2", "v2", "v1"), "add", function="V2_0").source() == [
        "add(g1, V2_0(g2, v2, v1), g1)"]
    assert Instruction("zero", ("g5",), columns=(0, 3)).source() == ["g5[..., 0:3].fill(0)"]
    assert Instruction("place", ("g1",), ("g2",), "set", columns=(2, 4, -2)).source() == [
        "g1[..., 2:4, :] = g2", "g1[..., :2, :] = 0", "g1[..., 4:, :] = 0"]
    add = ufunc(Call("add", ("tmp_1", Call("negative", ("tmp_1",))), "g1"))
    assert add.renamed({"tmp_1": "b2"}).source() == ["add(b2, negative(b2), g1)"]
    assert add.names() == ["g1", "tmp_1", "tmp_1"]
    with pytest.raises(ValueError):
        Instruction("jump", ())


def test_a_loop_lowered_to_python_runs_its_instructions():
    # s[t+1] = tanh(s[t] * 0.5 + x[t]), written into state steps S0
    loop = Loop("scan_forward", (View("v1", "b0"),),
                (View("v0", "S0", 0), View("x", "X_x", 0), View("v2", "S0", 1),
                 ufunc(Call("multiply", ("v0", 0.5), "v1")), ufunc(Call("add", ("v1", "x"), "v1")),
                 ufunc(Call("tanh", ("v1",), "v2"))), False,
                {"S0": Buffer("S0", "S", 2, (3,)), "X_x": Buffer("X_x", "X", None, (3,)),
                 "b0": Buffer("b0", "b", None, (3,))})
    source = python_source(loop)
    assert source.splitlines()[0] == "def scan_forward(T, S0, X_x, b0):"
    names = namespace(np)
    exec(source, names)
    rng = np.random.default_rng(0)
    states, xs = np.zeros((5, 2, 3)), rng.normal(size=(4, 2, 3))
    states[0] = rng.normal(size=(2, 3))
    names["scan_forward"](4, states, xs, np.empty((2, 3)))
    expected = states[0]
    for t in range(4):
        expected = np.tanh(expected * 0.5 + xs[t])
        np.testing.assert_allclose(states[t + 1], expected, rtol=1e-14)
    assert "every step:" in StepProgram(loop).format()


def test_the_program_the_compiler_docs_show_is_what_the_command_prints(capsys):
    assert cli.main(["graph", "--program", str(ROOT / "models" / "rnn_adding.sg")]) == 0
    printed = capsys.readouterr().out.rstrip("\n")
    docs = (ROOT / "docs" / "compiler.md").read_text()
    shown = docs.split("$ seqgraph graph --program models/rnn_adding.sg\n", 1)[1].split("\n```", 1)[0]
    assert shown == printed
