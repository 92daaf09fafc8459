"""The CuPy backend: the same numbers as NumPy on every example model, gradient checks,
generated chain kernels against their formulas, captured steps against plain ones, and a GPU
run that resumes and samples on the CPU (all skipped, with the reason, without a GPU)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.backends import get_backend
from seqgraph.train.captured import TrainingStep
from seqgraph.backends.chains import ChainKernel
from seqgraph.crosscheck import crosscheck
from seqgraph.gradcheck import check_model, random_inputs
from seqgraph.train import optim
from seqgraph.train.run import run, sample

from .conftest import example_models

MODELS = Path(__file__).resolve().parents[2] / "models"


def _gpu_reason():
    if importlib.util.find_spec("cupy") is None:
        return "CuPy is not installed (pip install '.[gpu]')"
    try:
        get_backend("cupy")
    except sg.SeqgraphError as error:
        return error.message
    return None


REASON = _gpu_reason()
needs_gpu = pytest.mark.skipif(REASON is not None, reason=str(REASON))


def test_missing_cupy_is_a_one_line_error():
    if REASON is None:
        pytest.skip("a GPU is present")
    with pytest.raises(sg.SeqgraphError) as error:
        get_backend("cupy")
    assert "\n" not in error.value.message
    assert "gpu-cuda11" in error.value.hint or "no usable CUDA GPU" in error.value.message


@needs_gpu
@pytest.mark.parametrize("path, name", example_models())
def test_cupy_matches_numpy(path, name):
    model = sg.load(path).models[name]
    cpu = sg.compile(model, backend="numpy", dtype="float64", seed=2)
    gpu = sg.compile(model, backend="cupy", dtype="float64", seed=2)
    inputs, lengths = random_inputs(model, batch=3, steps=4, ragged=True)
    cpu_out, gpu_out = cpu.forward(inputs, lengths), gpu.forward(inputs, lengths)
    for key in cpu_out:
        np.testing.assert_allclose(gpu.backend.to_host(gpu_out[key]), cpu_out[key], atol=1e-10)
    cpu_grads, gpu_grads = cpu.backward(), gpu.backward()
    for key in cpu_grads:
        np.testing.assert_allclose(gpu.backend.to_host(gpu_grads[key]), cpu_grads[key], atol=1e-10, err_msg=key)


@needs_gpu
@pytest.mark.parametrize("path, name", example_models())
def test_cupy_gradient_check(path, name):
    model = sg.load(path).models[name]
    net = sg.compile(model, backend="cupy", dtype="float64", seed=3)
    inputs, lengths = random_inputs(model, batch=2, steps=4, ragged=True, seed=1)
    result = check_model(net, inputs, lengths)
    assert result.worst_error < 1e-5, (result.worst_name, result.culprit)


@needs_gpu
@pytest.mark.parametrize("path, name", example_models())
def test_crosscheck_finds_no_difference(path, name):
    result = crosscheck(sg.load(path).models[name], "numpy", "cupy")
    assert result.difference is None, str(result)
    assert result.values > 0


def _chains():
    from .test_cuda_kernels import CHAINS
    return CHAINS


@needs_gpu
@pytest.mark.parametrize("dtype, tolerance", [("float64", 1e-12), ("float32", 2e-5)])
def test_fused_chain_kernels_compute_what_their_formulas_compute(dtype, tolerance):
    import cupy
    from .test_cuda_kernels import _random_inputs
    rng = np.random.default_rng(5)
    for param in _chains():
        graph, code, chain = param.values
        inputs = [a.astype(dtype) for a in _random_inputs(graph, code, chain, rng)]
        host, device = ChainKernel(chain, np), ChainKernel(chain, cupy)
        expected = host.forward(*inputs)
        got = device.forward(*[cupy.asarray(a) for a in inputs])
        for e, g in zip(expected, got):
            np.testing.assert_allclose(cupy.asnumpy(g), e, rtol=tolerance, atol=tolerance, err_msg=param.id)
        cotangents = [rng.normal(size=np.shape(e)).astype(dtype) for e in expected]
        expected = host.backward(*inputs, *cotangents)
        got = device.backward(*[cupy.asarray(a) for a in inputs + cotangents])
        for e, g in zip(expected, got):
            np.testing.assert_allclose(cupy.asnumpy(g), e, rtol=tolerance, atol=tolerance, err_msg=param.id)


def _training_pair(path: str, backend: str, sizes: dict):
    model = sg.load(MODELS / path).model().with_sizes(**sizes)
    net = sg.compile(model, backend=backend, dtype="float64", seed=4)
    return net, optim.make_optimizer("adam", xp=net.backend.xp, lr=0.01)


@needs_gpu
@pytest.mark.parametrize("path, sizes", [("lstm_adding.sg", {"hidden": 16}), ("gru_tagger.sg", {"hidden": 8}),
                                         ("char_lstm.sg", {"hidden": 16, "vocab": 20})])
def test_captured_steps_match_plain_numpy_steps(path, sizes):
    cpu, cpu_optimizer = _training_pair(path, "numpy", sizes)
    gpu, gpu_optimizer = _training_pair(path, "cupy", sizes)
    step = TrainingStep(gpu, gpu_optimizer, clip=1.0)
    how = []
    for k in range(5):
        inputs, lengths = random_inputs(cpu.model, batch=4, steps=6, seed=k, ragged=True)
        expected = float(cpu.forward(inputs, lengths, training=True)["loss"])
        grads = {key: g for key, g in cpu.backward().items() if key in cpu.params}
        optim.clip_grad_norm(np, grads, 1.0)
        cpu_optimizer.step(cpu.params, grads)
        assert step.step(inputs, lengths) == pytest.approx(expected, rel=1e-10)
        how.append(step.last)
    assert how == ["warm-up", "recorded", "replayed", "replayed", "replayed"], step.capture.reasons
    for key in cpu.params:
        np.testing.assert_allclose(gpu.backend.to_host(gpu.params[key]), cpu.params[key], rtol=1e-9, atol=1e-12)


@needs_gpu
def test_a_gpu_run_resumes_and_samples_on_the_cpu(tmp_path):
    quiet = dict(progress=False, echo=lambda *args: None)
    settings = ["steps = 3", "valid = 0.01", "sample = 0", "examples = 20000"]
    run(MODELS / "char_lstm.sg", epochs=1, out=tmp_path, sizes={"hidden": 16}, settings=settings,
        backend="cupy", **quiet)
    resumed = run(MODELS / "char_lstm.sg", epochs=2, out=tmp_path, sizes={"hidden": 16}, settings=settings,
                  resume=str(tmp_path), **quiet)
    assert len(resumed.history) == 2 and np.isfinite(resumed.history[-1]["train_loss"])
    assert sample(tmp_path, length=10, prime="a").startswith("a")


@needs_gpu
@pytest.mark.parametrize("path, name", example_models())
def test_fused_and_unfused_forward_loops_agree_on_the_gpu(path, name):
    model = sg.load(path).models[name]
    nets = [sg.compile(model, backend="cupy", dtype="float64", seed=2) for _ in range(2)]
    nets[1].program.fuse_chains = False
    inputs, lengths = random_inputs(model, batch=3, steps=5, ragged=True, seed=6)
    outs = [net.forward(inputs, lengths) for net in nets]
    for key in outs[0]:
        np.testing.assert_allclose(nets[0].backend.to_host(outs[0][key]), nets[1].backend.to_host(outs[1][key]),
                                   rtol=1e-12, atol=1e-13, err_msg=key)
    grads = [net.backward() for net in nets]
    for key in grads[0]:
        np.testing.assert_allclose(nets[0].backend.to_host(grads[0][key]), nets[1].backend.to_host(grads[1][key]),
                                   rtol=1e-11, atol=1e-13, err_msg=key)
