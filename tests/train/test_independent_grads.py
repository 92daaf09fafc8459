"""Every gradient ``backward`` returns is an array of its own, so clipping, which scales each
one in place, scales each exactly once. (An LSTM's two biases get one cotangent: the
compiler adds them once, ``b_ih + b_hh``, and ``add`` hands its cotangent to both.)"""

import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqgraph as sg
from seqgraph.gradcheck import random_inputs
from seqgraph.train import optim

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(ROOT.glob("models/*.sg"))


def _overlapping(grads: dict) -> list:
    return [(a, b) for a, b in itertools.combinations(grads, 2) if np.may_share_memory(grads[a], grads[b])]


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_no_two_returned_gradients_share_memory(path):
    model = sg.load(path).model()
    net = sg.compile(model, dtype="float64", hidden=3) if "hidden" in model.sizes else \
        sg.compile(model, dtype="float64")
    inputs, lengths = random_inputs(net.model, batch=2, steps=3, ragged=True)
    net.forward(inputs, lengths)
    assert _overlapping(net.backward()) == []
    net.forward(inputs, lengths)
    assert _overlapping(net.backward(wrt=list(net.params))) == []
    probe = sg.Probe(net)
    probe.forward(inputs, lengths)
    assert _overlapping(probe.backward()) == []


LSTM = """
model Adding(hidden = 3) {
    input  x : seq[float, 2]
    target y : [1]
    loss = mse(dense(last(lstm(x, hidden)), 1), y)
}"""


def _lstm_step(clip: float, lr: float = 0.5):
    """One training step as the trainer takes it (backward, clipping, SGD); returns the
    network, the batch, the parameters before and after, the unclipped gradients and the norm."""
    model = sg.parse(LSTM).model()
    net = sg.compile(model, dtype="float64", seed=3)
    inputs, _ = random_inputs(model, batch=4, steps=5, seed=2)
    before = {k: v.copy() for k, v in net.params.items()}
    reference = net.reference()
    reference.forward(inputs)
    unclipped = {k: v.copy() for k, v in reference.backward().items() if k in net.params}
    net.forward(inputs)
    grads = {k: v for k, v in net.backward().items() if k in net.params}
    norm = optim.clip_grad_norm(net.backend.xp, grads, clip)
    optim.SGD(lr=lr).step(net.params, grads)
    return net, inputs, before, unclipped, norm


def test_a_clipped_lstm_step_scales_every_gradient_once():
    net, _, before, unclipped, norm = _lstm_step(clip=0.05)
    expected_norm = np.sqrt(sum((g * g).sum() for g in unclipped.values()))
    assert norm == pytest.approx(expected_norm, rel=1e-12) and norm > 0.05  # so clipping acts
    scale = 0.05 / (expected_norm + 1e-6)
    for key, grad in unclipped.items():
        np.testing.assert_allclose(net.params[key], before[key] - 0.5 * scale * grad, rtol=1e-12, atol=1e-15,
                                   err_msg=key)


def test_a_clipped_lstm_step_matches_torch():
    torch = pytest.importorskip("torch")
    net, inputs, before, _, _ = _lstm_step(clip=0.05)
    lstm, dense = torch.nn.LSTM(2, 3).double(), torch.nn.Linear(3, 1).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(lstm, f"{name}_l0").copy_(torch.from_numpy(before[f"lstm_0.{name}"]))
        dense.weight.copy_(torch.from_numpy(before["dense_0.weight"]))
        dense.bias.copy_(torch.from_numpy(before["dense_0.bias"]))
    params = list(lstm.parameters()) + list(dense.parameters())
    out, _ = lstm(torch.from_numpy(inputs["x"]))
    loss = torch.nn.functional.mse_loss(dense(out[-1]), torch.from_numpy(inputs["y"]))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 0.05)
    torch.optim.SGD(params, lr=0.5).step()
    ours = {"lstm_0.bias_ih": lstm.bias_ih_l0, "lstm_0.bias_hh": lstm.bias_hh_l0,
            "lstm_0.weight_ih": lstm.weight_ih_l0, "lstm_0.weight_hh": lstm.weight_hh_l0,
            "dense_0.weight": dense.weight, "dense_0.bias": dense.bias}
    for key, theirs in ours.items():
        np.testing.assert_allclose(net.params[key], theirs.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=key)


class _WithoutOverlapCheck:
    """NumPy as a namespace that cannot tell whether two arrays overlap."""

    def __getattr__(self, name):
        if name == "may_share_memory":
            raise AttributeError(name)
        return getattr(np, name)


def test_a_namespace_without_an_overlap_check_still_gets_its_own_arrays():
    from types import SimpleNamespace

    backend = SimpleNamespace(name="plain", xp=_WithoutOverlapCheck(), asarray=np.asarray, to_host=np.asarray)
    model = sg.parse(LSTM).model()
    net = sg.compile(model, backend=backend, dtype="float64", seed=3)
    net.forward(random_inputs(model, batch=2, steps=3)[0])
    grads = net.backward()
    assert grads["lstm_0.bias_ih"] is not grads["lstm_0.bias_hh"]
    np.testing.assert_array_equal(grads["lstm_0.bias_ih"], grads["lstm_0.bias_hh"])


def test_a_gradient_is_never_the_caller_s_own_cotangent():
    model = sg.parse("""
    model M {
        input  x : seq[float, 2]
        target y : seq[float, 2]
        output o = x + 0
        loss = mse(x, y)
    }""").model()
    net = sg.compile(model, dtype="float64")
    inputs = {"x": np.ones((3, 2, 2)), "y": np.zeros((3, 2, 2))}
    cotangent = np.full((3, 2, 2), 0.5)
    probe = sg.Probe(net)
    probe.forward(inputs)
    net.forward(inputs)
    for grads in (net.backward({"o": cotangent}), probe.backward({"o": cotangent})):
        assert not np.may_share_memory(grads["x"], cotangent)
        np.testing.assert_array_equal(grads["x"], cotangent)


def _views(draw_slices):
    """Views of two buffers (one of them read backwards) from the drawn ``(buffer, start,
    stop, step)`` tuples, with a 2-d view of each and a 0-size one."""
    buffers = [np.arange(40.0), np.arange(30.0)[::-1]]
    views = [buffers[b][start:stop:step] for b, start, stop, step in draw_slices]
    return views + [buffers[0].reshape(8, 5)[1:4, ::2], buffers[1][5:5]]


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 39), st.integers(0, 40),
                          st.sampled_from([1, 2, 3, -1])), max_size=12), st.randoms(use_true_random=False))
def test_the_footprint_answers_as_the_pairwise_bounds_check(slices, random):
    """Whether each array overlaps those before it: one binary search, the same answer as
    ``may_share_memory`` against each."""
    from seqgraph.backends import Footprint

    views = _views(slices)
    random.shuffle(views)
    footprint = Footprint(np)
    for k, view in enumerate(views):
        assert footprint.overlaps(view) == any(np.may_share_memory(view, v) for v in views[:k]), k
        footprint.add(view)


def test_overlapping_gradients_are_copied_and_the_others_handed_back_as_they_are():
    model = sg.parse(LSTM).model()
    net = sg.compile(model, dtype="float64", seed=3)
    buffer, cotangent = np.arange(24.0), np.ones(4)
    grads = {"a": buffer[:8], "b": buffer[4:12], "c": buffer[12:16], "d": buffer[13::2], "e": buffer[:8],
             "f": cotangent, "g": buffer[20:24]}
    result = net.collect_grads(grads, {name: name for name in grads}, held=[cotangent])
    copied = sorted(name for name in grads if result[name] is not grads[name])
    assert copied == ["b", "d", "e", "f"]  # d interleaves with c: its bounds overlap c's
    assert _overlapping(result) == [] and not any(np.may_share_memory(g, cotangent) for g in result.values())
    for name, grad in grads.items():
        np.testing.assert_array_equal(result[name], grad)
