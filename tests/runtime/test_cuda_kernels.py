"""Fused chain kernels: the formulas every example model's chains are made of compute what the
op registry computes (float64, evaluated with NumPy), and the CUDA C generated from the same
formulas compiles with nvcc for float32 and float64 (skipped where nvcc is absent)."""

import shutil
import subprocess

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.autodiff import differentiable
from seqgraph.backends.chains import ChainKernel
from seqgraph.backends.cuda_kernels import generate_kernel
from seqgraph.compiler import Scan
from seqgraph.gradcheck import random_inputs
from seqgraph.ir import node_of
from seqgraph.ops import REGISTRY, unbroadcast
from seqgraph.ops.formula import cuda_statements, evaluate, parse_formula

from .conftest import MODELS

BATCH = 3


def _example_chains():
    found = []
    for path in MODELS:
        for name, model in sg.load(path).models.items():
            program = sg.compile(model, dtype="float64").program
            scans = [item for item in program.schedule if isinstance(item, Scan)]
            for scan in scans:
                for number, chain in enumerate(scan.code.chains):
                    found.append(pytest.param(program.graph, scan.code, chain,
                                              id=f"{path.stem}:{scan.code.order[0]}:{number}"))
    return found


CHAINS = _example_chains()


def _random_inputs(graph, code, chain, rng) -> list:
    arrays = []
    for arg in chain.inputs:
        shape = tuple(int(n) for n in node_of(graph, arg).shape)
        if code.source(arg) != "static":
            shape = (BATCH,) + shape
        arrays.append(rng.normal(size=shape))
    return arrays


def _run_registry(graph, chain, inputs: list) -> dict:
    values = dict(zip(chain.inputs, inputs))
    for node in chain.nodes:
        data = node_of(graph, node)
        values[node] = REGISTRY[data.op].forward(np, *[values[a] for a in data.args], **data.attrs)
    return values


def _registry_vjp(graph, chain, values: dict, cotangents: list) -> dict:
    grads = dict(zip(chain.outputs, cotangents))
    for node in reversed(chain.nodes):
        data = node_of(graph, node)
        if node not in grads:
            continue
        args = [values[a] for a in data.args]
        parts = REGISTRY[data.op].vjp(np, grads[node], values[node], *args, **data.attrs)
        for port, (arg, part) in enumerate(zip(data.args, parts)):
            if part is not None and differentiable(graph, node, port):
                grads[arg] = grads[arg] + part if arg in grads else part
    return grads


@pytest.mark.parametrize("graph, code, chain", CHAINS)
def test_forward_formulas_compute_the_registry_forward(graph, code, chain):
    rng = np.random.default_rng(0)
    inputs = _random_inputs(graph, code, chain, rng)
    expected = _run_registry(graph, chain, inputs)
    values = {f"x{k}": array for k, array in enumerate(inputs)}
    for out in chain.outputs:
        got = evaluate(chain.forward[out], values, np)
        np.testing.assert_allclose(got, expected[out], rtol=1e-12, atol=1e-12, err_msg=str(out))


@pytest.mark.parametrize("graph, code, chain", CHAINS)
def test_backward_formulas_compute_the_registry_vjps(graph, code, chain):
    rng = np.random.default_rng(1)
    inputs = _random_inputs(graph, code, chain, rng)
    values = _run_registry(graph, chain, inputs)
    cotangents = [rng.normal(size=np.shape(values[out])) for out in chain.outputs]
    expected = _registry_vjp(graph, chain, values, cotangents)
    bound = {f"x{k}": array for k, array in enumerate(inputs)}
    bound.update({f"g{k}": array for k, array in enumerate(cotangents)})
    wanted = {arg for arg in chain.inputs if arg in expected}
    assert set(chain.backward) == wanted
    full = np.broadcast_shapes(*(np.shape(a) for a in bound.values()))
    for k, arg in enumerate(chain.inputs):
        if arg in wanted:
            got = unbroadcast(np, np.broadcast_to(evaluate(chain.backward[arg], bound, np), full), inputs[k].shape)
            np.testing.assert_allclose(got, expected[arg], rtol=1e-12, atol=1e-12, err_msg=str(arg))


@pytest.mark.parametrize("graph, code, chain", CHAINS[:3] + CHAINS[-3:])
def test_chain_kernel_on_numpy_writes_into_given_buffers(graph, code, chain):
    rng = np.random.default_rng(2)
    inputs = _random_inputs(graph, code, chain, rng)
    expected = _run_registry(graph, chain, inputs)
    kernel = ChainKernel(chain, np)
    out = [np.empty((BATCH,) + tuple(int(n) for n in node_of(graph, o).shape)) for o in chain.outputs]
    results = kernel.forward(*inputs, out=out)
    for buffer, result, node in zip(out, results, chain.outputs):
        assert result is buffer
        np.testing.assert_allclose(buffer, expected[node], rtol=1e-12, atol=1e-12)
    grads = kernel.backward(*inputs, *[np.ones_like(o) for o in out])
    assert len(grads) == len(kernel.backward_targets) == len(chain.backward)


def test_translation_of_each_construct():
    tree = parse_formula("g0 * (x0 > 0) + max(x1, 0) - -exp(x2) / log(x3) + tanh(0.5)")
    (line,) = cuda_statements([("d0", tree)])
    assert line == ("d0 = ((((g0 * ((T)(x0 > ((T)0)))) + sg_max(x1, ((T)0))) - ((-exp(x2)) / log(x3)))"
                    " + tanh(((T)0.5)));")


def test_a_repeated_subexpression_is_computed_once():
    tree = parse_formula("g0 * (1 / (1 + exp(-x0))) * (1 - (1 / (1 + exp(-x0))))")
    lines = cuda_statements([("d0", tree)])
    assert lines[0] == "const T s0 = (((T)1) / (((T)1) + exp((-x0))));"
    assert lines[-1] == "d0 = ((g0 * s0) * (((T)1) - s0));"
    assert sum(line.count("exp(") for line in lines) == 1


def test_evaluation_follows_numpy_for_max_comparisons_and_nan():
    x = np.array([-1.0, 0.0, 2.0, np.nan])
    assert np.array_equal(evaluate("max(x0, 0)", {"x0": x}, np), np.array([0.0, 0.0, 2.0, np.nan]), equal_nan=True)
    assert evaluate("g0 * (x0 > 0)", {"x0": x, "g0": np.full(4, 3.0)}, np).tolist() == [0.0, 0.0, 3.0, 0.0]
    assert evaluate("x0 / 4", {"x0": np.float32(2)}, np).dtype == np.float32


@pytest.mark.parametrize("text", ["sin(x0)", "x0 ** 2", "y0 + 1", "max(x0)", "x0 if x0 else 1", "x0 +"])
def test_formulas_outside_the_language_are_refused(text):
    with pytest.raises(sg.SeqgraphError) as error:
        parse_formula(text)
    assert text in error.value.message


def test_kernel_names_and_parameters():
    chain = CHAINS[-1].values[2]
    forward, backward = generate_kernel(chain, "forward"), generate_kernel(chain, "backward")
    assert forward.inputs == tuple(f"x{k}" for k in range(len(chain.inputs)))
    assert forward.outputs == tuple(f"y{k}" for k in range(len(chain.outputs)))
    assert backward.inputs[-len(chain.outputs):] == tuple(f"g{k}" for k in range(len(chain.outputs)))
    assert forward.name != backward.name and forward.name.startswith("sg_chain_forward_")


NVCC = shutil.which("nvcc")


@pytest.mark.skipif(NVCC is None, reason="nvcc (the CUDA compiler) is not installed")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_generated_kernel_compiles_with_nvcc(tmp_path, dtype):
    sources = {}
    for param in CHAINS:
        chain = param.values[2]
        for direction in ("forward", "backward"):
            kernel = generate_kernel(chain, direction)
            sources[kernel.name] = kernel.standalone(dtype)
    units = []
    for name, text in sorted(sources.items()):
        path = tmp_path / f"{name}.cu"
        path.write_text(text)
        units.append(str(path))
    result = subprocess.run([NVCC, "--ptx", "-odir", str(tmp_path), *units],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(tmp_path.glob("*.ptx"))) == len(units)


@pytest.mark.parametrize("path, name", [pytest.param(p, n, id=f"{p.stem}:{n}") for p in MODELS
                                        for n in sg.load(p).models])
def test_the_forward_loop_with_fused_chains_computes_the_same_numbers(path, name):
    # on NumPy a fused chain evaluates its formulas: the same ufuncs in the same order
    model = sg.load(path).models[name]
    plain = sg.compile(model, dtype="float64", seed=1)
    fused = sg.compile(model, dtype="float64", seed=1)
    fused.program.fuse_chains = True
    inputs, lengths = random_inputs(model, batch=3, steps=5, ragged=True, seed=2)
    expected, got = plain.forward(inputs, lengths), fused.forward(inputs, lengths)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-13, atol=1e-14, err_msg=key)
    expected, got = plain.backward(), fused.backward()
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-12, atol=1e-14, err_msg=key)
    for code in [item.code for item in fused.program.schedule if isinstance(item, Scan)]:
        _, _, chains, source, _ = code.fused_forward()
        assert chains and all(f"F{code.index[c.nodes[-1]]}(" in source for c in chains)


def test_a_fused_chain_writes_every_value_backward_keeps():
    model = sg.load(MODELS[[p.stem for p in MODELS].index("lstm_adding")]).model()
    code = next(item.code for item in sg.compile(model).program.schedule if isinstance(item, Scan))
    gates, chain = code.fusible_chains()  # the sigmoid over i and f (four calls as ufuncs), the cell update
    assert [code.data[n].op for n in gates.nodes] == ["sigmoid"] and gates.outputs == gates.nodes
    assert set(chain.outputs) == {n for n in chain.nodes if n in code.kept}
    assert code.recomputed == {"lstm_0/tanh.1"}  # tanh(c): backward recomputes it from c
    assert len(chain.outputs) == 4 and len(chain.nodes) == 7  # the cell update: three inner values stay in registers


def test_with_several_outputs_every_value_is_computed_before_any_is_stored():
    lines = cuda_statements([("y0", parse_formula("x0 + 1")), ("y1", parse_formula("x0 * x1"))])
    assert lines == ["const T r0 = (x0 + ((T)1));", "const T r1 = (x0 * x1);", "y0 = r0;", "y1 = r1;"]
