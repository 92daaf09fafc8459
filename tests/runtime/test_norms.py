"""layer_norm and batch_norm in models, against torch.nn.LayerNorm and BatchNorm2d (float64):
values, gradients, and batch_norm's running statistics while training, used when evaluating."""

import numpy as np
import pytest

import seqgraph as sg

RNG = np.random.default_rng(11)

BATCH_NORM = """
model M {
    input img : tensor[float, 3, 4, 5]
    input w : tensor[float, 3, 4, 5]
    out = batch_norm(img, momentum = 0.2)
    loss = sum(out * w, over = all)
    output out
}
"""


def test_layer_norm_matches_pytorch_in_and_out_of_a_cell():
    torch = pytest.importorskip("torch")
    source = """
    model M {
        input x : seq[float, 6]
        input w : seq[float, 6]
        out = layer_norm(x * 2, eps = 0.001)
        loss = sum(out * w, over = all)
        output out
    }
    """
    net = sg.compile(sg.parse(source).model(), dtype="float64")
    x, w = RNG.normal(size=(4, 3, 6)), RNG.normal(size=(4, 3, 6))
    net.params["layer_norm_0.weight"][:] = RNG.normal(size=6)
    net.params["layer_norm_0.bias"][:] = RNG.normal(size=6)
    out = net.forward({"x": x, "w": w})["out"]
    grads = net.backward()
    norm = torch.nn.LayerNorm(6, eps=0.001).double()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(net.params["layer_norm_0.weight"]))
        norm.bias.copy_(torch.tensor(net.params["layer_norm_0.bias"]))
    tx = torch.tensor(x, requires_grad=True)
    want = norm(tx * 2)
    (want * torch.tensor(w)).sum().backward()
    np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(grads["x"], tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grads["layer_norm_0.weight"], norm.weight.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(grads["layer_norm_0.bias"], norm.bias.grad.numpy(), rtol=1e-10)


def test_batch_norm_trains_on_batch_statistics_and_evaluates_on_running_ones():
    torch = pytest.importorskip("torch")
    net = sg.compile(sg.parse(BATCH_NORM).model(), dtype="float64")
    norm = torch.nn.BatchNorm2d(3, momentum=0.2).double()
    batches = [(3 * RNG.normal(size=(5, 3, 4, 5)) + 1, RNG.normal(size=(5, 3, 4, 5))) for _ in range(3)]
    for img, w in batches:  # two training steps' worth of running statistics, then evaluation
        out = net.forward({"img": img, "w": w}, training=True)["out"]
        grads = net.backward()
        timg = torch.tensor(img, requires_grad=True)
        want = norm.train()(timg)
        (want * torch.tensor(w)).sum().backward()
        np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(grads["img"], timg.grad.numpy(), rtol=1e-9, atol=1e-11)
        assert grads.get("batch_norm_0.running_mean") is None and grads.get("batch_norm_0.running_var") is None
    np.testing.assert_allclose(net.params["batch_norm_0.running_mean"], norm.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(net.params["batch_norm_0.running_var"], norm.running_var.numpy(), rtol=1e-12)
    img, w = batches[0]
    before = net.params["batch_norm_0.running_mean"].copy()
    out = net.forward({"img": img, "w": w})["out"]  # evaluating: running statistics, left as they are
    np.testing.assert_allclose(out, norm.eval()(torch.tensor(img)).detach().numpy(), rtol=1e-11, atol=1e-12)
    np.testing.assert_array_equal(net.params["batch_norm_0.running_mean"], before)


def test_batch_norm_updates_the_network_s_own_running_statistics_not_a_caller_s():
    net = sg.compile(sg.parse(BATCH_NORM).model(), dtype="float64")
    mean, var = np.zeros(3), np.ones(3)
    net.params["batch_norm_0.running_mean"], net.params["batch_norm_0.running_var"] = mean, var
    img, w = 3 * RNG.normal(size=(5, 3, 4, 5)) + 1, RNG.normal(size=(5, 3, 4, 5))
    net.forward({"img": img, "w": w}, training=True)
    np.testing.assert_array_equal(mean, 0.0)
    np.testing.assert_array_equal(var, 1.0)
    moved = net.params["batch_norm_0.running_mean"]
    np.testing.assert_allclose(moved, 0.2 * img.mean(axis=(0, 2, 3)), rtol=1e-12)
    net.reference().forward({"img": img, "w": w}, training=True)
    assert net.params["batch_norm_0.running_mean"] is moved  # the network's own, updated in place
    np.testing.assert_allclose(moved, 0.36 * img.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_array_equal(mean, 0.0)
    assert sg.ops.REGISTRY["batch_norm"].updates == (1, 2)


def test_batch_norm_of_a_sequence_is_an_error_with_a_hint():
    with pytest.raises(sg.SeqgraphError) as caught:
        sg.parse("model M {\n    input x : seq[float, 3]\n    output y = batch_norm(x)\n}\n", "m.sg").model()
    assert "m.sg:3:27" in caught.value.render() and "layer_norm" in caught.value.diagnostics[0].hint
