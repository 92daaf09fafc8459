"""Capturing a training step, tested without a GPU: the decision logic with a stand-in
recorder, and the whole captured step (device step counts, clipping on the device, skipped
non-finite steps) on NumPy against the plain training step."""

import contextlib
from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.backends.capture import StepCapture
from seqgraph.train.captured import TrainingStep
from seqgraph.gradcheck import random_inputs
from seqgraph.train import optim

MODELS = Path(__file__).resolve().parents[2] / "models"


class FakeRecorder:
    """Records nothing: a "graph" runs the body again at every launch, as a replay would."""

    def __init__(self, fail=None):
        self.fail, self.recorded, self.launches = fail, 0, 0

    def scope(self):
        return contextlib.nullcontext()

    def capture(self, body):
        if self.fail:
            raise RuntimeError(self.fail)
        self.recorded += 1
        return _FakeGraph(self, body)


class _FakeGraph:
    def __init__(self, recorder, body):
        self.recorder, self.body = recorder, body

    def launch(self):
        self.recorder.launches += 1
        self.body()


def _counting():
    calls = {"plain": 0, "body": 0}
    return calls, (lambda: calls.__setitem__("body", calls["body"] + 1),
                   lambda: calls.__setitem__("plain", calls["plain"] + 1))


def test_a_signature_runs_plainly_then_is_recorded_then_replayed():
    recorder = FakeRecorder()
    capture = StepCapture(recorder)
    calls, (body, plain) = _counting()
    assert [capture.run("a", body, plain) for _ in range(4)] == ["warm-up", "recorded", "replayed", "replayed"]
    assert calls == {"plain": 0, "body": 4} and recorder.recorded == 1
    assert capture.run("b", body, plain) == "warm-up" and capture.run("b", body, plain) == "recorded"
    assert capture.run("a", body, plain) == "replayed" and recorder.recorded == 2


def test_a_failed_recording_falls_back_for_good_and_says_why():
    recorder = FakeRecorder(fail="operation not permitted when stream is capturing")
    capture = StepCapture(recorder)
    calls, (body, plain) = _counting()
    assert [capture.run("a", body, plain) for _ in range(4)] == ["warm-up"] + ["plain"] * 3
    assert calls == {"plain": 3, "body": 1}
    assert capture.reasons == {"a": "RuntimeError: operation not permitted when stream is capturing"}


def test_past_the_limit_new_shapes_run_plainly():
    capture = StepCapture(FakeRecorder(), limit=2)
    calls, (body, plain) = _counting()
    for signature in "abc":
        capture.run(signature, body, plain)
        capture.run(signature, body, plain)
    assert set(capture.graphs) == {"a", "b"}
    assert "more than 2" in capture.reasons["c"]


def _setup(optimizer_name="adam", dtype="float64", **kwargs):
    model = sg.load(MODELS / "lstm_adding.sg").model().with_sizes(hidden=5)
    net = sg.compile(model, dtype=dtype, seed=4)
    optimizer = optim.make_optimizer(optimizer_name, xp=np, **kwargs)
    return net, optimizer


def _batches(count, seed=0):
    model = sg.load(MODELS / "lstm_adding.sg").model()
    return [random_inputs(model, batch=3, steps=6, seed=seed + k, ragged=True) for k in range(count)]


def _plain_steps(net, optimizer, batches, clip):
    losses = []
    for inputs, lengths in batches:
        losses.append(float(net.forward(inputs, lengths, training=True)["loss"]))
        grads = {k: g for k, g in net.backward().items() if k in net.params}
        optim.clip_grad_norm(np, grads, clip)
        optimizer.step(net.params, grads)
    return losses


@pytest.mark.parametrize("name, kwargs", [("adam", {"lr": 0.05}),
                                          ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
                                          ("adamw", {"lr": 0.05, "weight_decay": 0.1, "amsgrad": True}),
                                          ("adagrad", {"lr": 0.1, "lr_decay": 0.1})])
def test_captured_steps_compute_what_plain_steps_compute(name, kwargs):
    batches = _batches(5)
    net, optimizer = _setup(name, **kwargs)
    expected = _plain_steps(net, optimizer, batches, clip=0.5)
    net2, optimizer2 = _setup(name, **kwargs)
    recorder = FakeRecorder()
    step = TrainingStep(net2, optimizer2, clip=0.5, recorder=recorder)
    losses, how = [], []
    for inputs, lengths in batches:
        losses.append(step.step(inputs, lengths))
        how.append(step.last)
    assert how == ["warm-up", "recorded", "replayed", "replayed", "replayed"]
    np.testing.assert_allclose(losses, expected, rtol=1e-13)
    for key in net.params:
        np.testing.assert_allclose(net2.params[key], net.params[key], rtol=1e-12, atol=1e-14, err_msg=key)
    assert optimizer2.steps == optimizer.steps == {key: 5 for key in net.params}
    assert losses[0] != losses[-1]


def test_a_non_finite_captured_step_is_skipped_and_leaves_everything_as_it_was():
    net, optimizer = _setup("adam", lr=0.05)
    step = TrainingStep(net, optimizer, clip=1.0, recorder=FakeRecorder())
    (good, lengths), (bad, _) = _batches(2)
    step.step(good, lengths)
    step.step(good, lengths)
    assert step.last == "recorded"
    before = {k: v.copy() for k, v in net.params.items()}
    state = {k: v.copy() for k, v in optimizer.state["exp_avg"].items()}
    bad = dict(bad, x=bad["x"].copy())
    bad["x"][0, 0, 0] = np.nan
    assert step.step(bad, lengths) is None and step.last == "replayed"
    for key in before:
        assert np.array_equal(net.params[key], before[key])
        assert np.array_equal(optimizer.state["exp_avg"][key], state[key])
    assert optimizer.steps == {key: 2 for key in net.params}
    assert step.step(good, lengths) is not None and optimizer.steps == {key: 3 for key in net.params}


def test_a_new_learning_rate_or_shape_is_recorded_afresh_and_counts_stay_in_step():
    net, optimizer = _setup("adam", lr=0.05)
    recorder = FakeRecorder()
    step = TrainingStep(net, optimizer, recorder=recorder)
    (inputs, lengths), = _batches(1)
    for _ in range(3):
        step.step(inputs, lengths)
    optimizer.lr = 0.01
    assert [step.step(inputs, lengths) is not None and step.last for _ in range(2)] == ["warm-up", "recorded"]
    longer, longer_lengths = random_inputs(net.model, batch=3, steps=7, seed=9)
    step.step(longer, longer_lengths)
    assert step.last == "warm-up" and recorder.recorded == 2
    step.step(inputs, lengths)
    assert step.last == "replayed"
    assert optimizer.steps == {key: 7 for key in net.params}
    assert all(float(c) == 7 for c in step.counts.values())


def test_clipping_on_the_device_scales_as_the_host_version_does():
    rng = np.random.default_rng(0)
    for max_norm in (0.5, 50.0):
        grads = {"a": rng.normal(size=(3, 4)).astype(np.float32), "b": rng.normal(size=5).astype(np.float32)}
        copies = {k: v.copy() for k, v in grads.items()}
        norm = optim.clip_grad_norm(np, grads, max_norm)
        device_norm = optim.clip_grad_norm_on_device(np, copies, max_norm)
        assert float(device_norm) == norm
        for key in grads:
            assert np.array_equal(grads[key], copies[key])


def _trainer(tmp_path, file, sizes, settings, captured):
    from seqgraph.train.config import resolve
    from seqgraph.train.loop import Trainer, load_dataset
    model = sg.load(MODELS / file).model().with_sizes(**sizes)
    config = resolve(model.train, dict(s.split(" = ", 1) for s in settings))
    dataset = load_dataset(config, model, MODELS)
    trainer = Trainer(model, config, tmp_path, dataset, echo=lambda *a: None, show_progress=False)
    if captured:
        trainer.captured = TrainingStep(trainer.net, trainer.optimizer, config.clip or None,
                                        recorder=FakeRecorder())
    return trainer


@pytest.mark.parametrize("file, sizes, settings", [
    ("char_lstm.sg", {"hidden": 8}, ["epochs = 2", "steps = 4", "valid = 0.01", "examples = 5000", "sample = 0"]),
    ("rnn_adding.sg", {"hidden": 8}, ["epochs = 2", "examples = 200", "batch = 50", "clip = 0.5"]),
])
def test_the_training_loop_with_captured_steps_gives_the_losses_of_plain_steps(tmp_path, file, sizes, settings):
    plain = _trainer(tmp_path / "plain", file, sizes, settings, captured=False)
    captured = _trainer(tmp_path / "captured", file, sizes, settings, captured=True)
    expected, got = plain.run(), captured.run()
    recorder = captured.captured.capture.recorder
    assert recorder.recorded >= 1 and recorder.launches > recorder.recorded  # some steps were replays
    for column in ("train_loss", "valid_loss"):
        np.testing.assert_allclose([row[column] for row in got], [row[column] for row in expected], rtol=1e-5)
    for key in plain.net.params:
        np.testing.assert_allclose(captured.net.params[key], plain.net.params[key], rtol=1e-4, atol=1e-6)


class _FakeCuda:
    """The parts of ``cupy.cuda`` the recorder uses, keeping a log of the calls."""

    def __init__(self):
        self.log = []
        cuda = self

        class Stream:
            def __init__(self, non_blocking=False):
                cuda.log.append(("stream", non_blocking))

            def begin_capture(self):
                cuda.log.append("begin")

            def end_capture(self):
                cuda.log.append("end")
                return _LoggedGraph(cuda)

        class MemoryPool:
            def malloc(self, size):
                raise AssertionError("not called here")

        @contextlib.contextmanager
        def using_allocator(allocator):
            cuda.log.append("private pool")
            try:
                yield
            finally:
                cuda.log.append("default pool")

        self.Stream, self.MemoryPool, self.using_allocator = Stream, MemoryPool, using_allocator


class _LoggedGraph:
    def __init__(self, cuda):
        self.cuda = cuda

    def launch(self, stream):
        self.cuda.log.append("launch")


def test_the_cuda_recorder_records_in_a_private_pool_and_ends_a_failed_recording():
    from types import SimpleNamespace
    from seqgraph.backends.capture import CudaGraphRecorder
    cuda = _FakeCuda()
    recorder = CudaGraphRecorder(SimpleNamespace(cuda=cuda))
    graph = recorder.capture(lambda: cuda.log.append("body"))
    graph.launch()
    assert cuda.log == [("stream", True), "private pool", "begin", "body", "end", "default pool", "launch"]
    cuda.log.clear()

    def synchronising():
        raise RuntimeError("cudaErrorStreamCaptureUnsupported")
    capture = StepCapture(recorder)
    calls, (body, plain) = _counting()
    assert capture.run("a", body, plain) == "warm-up"
    assert capture.run("a", synchronising, plain) == "plain"
    assert cuda.log == ["private pool", "begin", "end", "default pool"]
    assert capture.reasons["a"] == "RuntimeError: cudaErrorStreamCaptureUnsupported"


def test_captured_steps_clamp_gradients_as_plain_steps_do():
    batches = _batches(3)
    net, optimizer = _setup("sgd", lr=1.0)
    for inputs, lengths in batches:
        net.forward(inputs, lengths, training=True)
        grads = {k: g for k, g in net.backward().items() if k in net.params}
        optim.clip_grad_value(np, grads, 0.01)
        optimizer.step(net.params, grads)
    net2, optimizer2 = _setup("sgd", lr=1.0)
    step = TrainingStep(net2, optimizer2, clip_value=0.01, recorder=FakeRecorder())
    for inputs, lengths in batches:
        step.step(inputs, lengths)
    assert step.last == "replayed"
    for key in net.params:
        np.testing.assert_allclose(net2.params[key], net.params[key], rtol=1e-13, atol=1e-15, err_msg=key)
