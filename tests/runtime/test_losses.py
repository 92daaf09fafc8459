"""Losses a model writes itself, over ragged sequences and per example, against PyTorch's
numbers (loss and gradients, float64) when torch is importable; and the reductions over the
batch and the valid steps leaving padding out."""

import numpy as np
import pytest

import seqgraph as sg

T, B, F = 5, 3, 4
LENGTHS = np.array([5, 2, 4])
RNG = np.random.default_rng(7)


def _net(body: str, declarations: str):
    source = "model M {\n" + "".join(f"    {line}\n" for line in declarations.splitlines() + body.splitlines()) + "}\n"
    return sg.compile(sg.parse(source).model(), dtype="float64")


def _valid(a):
    """The valid steps of a (T, B, ...) array, one row per valid (t, b), in (b, t) order."""
    return np.concatenate([a[:LENGTHS[b], b] for b in range(B)])


def _run(body: str, declarations: str, feed: dict, lengths=None):
    net = _net(body, declarations)
    loss = net.forward(feed, lengths)["loss"]
    return float(loss), net.backward()


def test_padding_is_left_out_of_a_per_step_loss():
    pred, y = RNG.normal(size=(T, B, F)), RNG.normal(size=(T, B, F))
    wild = pred.copy()
    wild[2:, 1] = np.nan  # padding of the second sequence
    declarations = "input p : seq[float, 4]\ninput y : seq[float, 4]"
    loss, grads = _run("loss = mean(huber(p, y, delta = 0.5))", declarations, {"p": wild, "y": y}, LENGTHS)
    d = np.abs(_valid(pred) - _valid(y))
    np.testing.assert_allclose(loss, np.mean(np.where(d < 0.5, 0.5 * d * d, 0.5 * (d - 0.25))), rtol=1e-13)
    assert np.all(grads["p"][2:, 1] == 0.0) and np.all(np.isfinite(grads["p"]))


@pytest.mark.parametrize("body, reference", [
    ("loss = mean(huber(p, y, delta = 0.5))", lambda F_, p, y: F_.huber_loss(p, y, delta=0.5)),
    ("loss = sum(l1(p, y), over = all)", lambda F_, p, y: F_.l1_loss(p, y, reduction="sum")),
    ("loss = mean(binary_cross_entropy(sigmoid(p), sigmoid(y)))",
     lambda F_, p, y: F_.binary_cross_entropy(p.sigmoid(), y.sigmoid())),
    ("loss = mean(binary_cross_entropy_with_logits(3 * p, sigmoid(y)), over = all)",
     lambda F_, p, y: F_.binary_cross_entropy_with_logits(3 * p, y.sigmoid())),
    ("loss = 0.3 * mean(huber(p, y)) + 2 * sum(l1(p, y))",
     lambda F_, p, y: 0.3 * F_.huber_loss(p, y) + 2 * F_.l1_loss(p, y, reduction="sum") / p.shape[0]),
], ids=["huber", "l1_sum", "bce", "bce_logits", "weighted_sum"])
def test_sequence_losses_match_pytorch(body, reference):
    torch = pytest.importorskip("torch")
    pred, y = RNG.normal(size=(T, B, F)), RNG.normal(size=(T, B, F))
    loss, grads = _run(body, "input p : seq[float, 4]\ninput y : seq[float, 4]", {"p": pred, "y": y}, LENGTHS)
    tp = torch.tensor(_valid(pred), requires_grad=True)
    want = reference(torch.nn.functional, tp, torch.tensor(_valid(y)))
    want.backward()
    np.testing.assert_allclose(loss, want.item(), rtol=1e-12)
    np.testing.assert_allclose(_valid(grads["p"]), tp.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_distillation_with_a_temperature_matches_pytorchs_batchmean_kl():
    torch = pytest.importorskip("torch")
    student, teacher = RNG.normal(size=(6, 5)), RNG.normal(size=(6, 5))
    body = "loss = 4 * sum(kl_div(log_softmax(s / 2), softmax(t / 2)))"
    loss, grads = _run(body, "input s : [5]\ninput t : [5]", {"s": student, "t": teacher})
    F_ = torch.nn.functional
    ts = torch.tensor(student, requires_grad=True)
    want = 4 * F_.kl_div(F_.log_softmax(ts / 2, -1), F_.softmax(torch.tensor(teacher) / 2, -1), reduction="batchmean")
    want.backward()
    np.testing.assert_allclose(loss, want.item(), rtol=1e-12)
    np.testing.assert_allclose(grads["s"], ts.grad.numpy(), rtol=1e-10)
    assert "t" not in grads or not np.any(grads["t"])  # soft targets are constants


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_soft_and_smoothed_cross_entropy_match_pytorch(smoothing):
    torch = pytest.importorskip("torch")
    logits, ids = RNG.normal(size=(T, B, F)), RNG.integers(0, F, size=(T, B))
    probabilities = RNG.dirichlet(np.ones(F), size=(T, B))
    declarations = "input z : seq[float, 4]\ntarget c : seq[int, 4]\ninput q : seq[float, 4]"
    body = f"loss = cross_entropy(z, c, label_smoothing = {smoothing}) + 0.5 * cross_entropy(z, q, label_smoothing = {smoothing})"
    loss, grads = _run(body, declarations, {"z": logits, "c": ids, "q": probabilities}, LENGTHS)
    F_ = torch.nn.functional
    tz = torch.tensor(_valid(logits), requires_grad=True)
    want = F_.cross_entropy(tz, torch.tensor(_valid(ids)), label_smoothing=smoothing) + \
        0.5 * F_.cross_entropy(tz, torch.tensor(_valid(probabilities)), label_smoothing=smoothing)
    want.backward()
    np.testing.assert_allclose(loss, want.item(), rtol=1e-12)
    np.testing.assert_allclose(_valid(grads["z"]), tz.grad.numpy(), rtol=1e-10, atol=1e-15)


def test_a_per_example_loss_is_averaged_and_a_reduction_inside_a_cell_is_an_error():
    x = RNG.normal(size=(6, 3))
    loss, _ = _run("loss = sum(x * x)", "input x : [3]", {"x": x})
    np.testing.assert_allclose(loss, np.mean(np.sum(x * x, axis=1)), rtol=1e-14)
    with pytest.raises(sg.SeqgraphError) as caught:
        sg.parse("cell C(x : [X]) -> h : [X] {\n state h : [X] = 0\n h = x * mean(h[t-1], over = all)\n}\n"
                 "model M {\n input x : seq[float, 3]\n output h = C(x)\n}\n").model()
    assert "cannot run inside a cell" in caught.value.render()
