"""Pooling options (dilation, ceil_mode, count_include_pad) and convolution and pooling along
a sequence's time axis, against PyTorch's numbers (values and gradients, float64)."""

import numpy as np
import pytest

from seqgraph.ops import get_op

RNG = np.random.default_rng(5)
LENGTHS = np.array([7, 4, 1])


def _value_and_grad(name, inputs, **attrs):
    op = get_op(name)
    out = op(np, *inputs, **attrs)
    g = RNG.normal(size=out.shape)
    return out, g, op.vjp(np, g, out, *inputs, **attrs)


@pytest.mark.parametrize("attrs", [
    {"kernel": 3, "stride": 2, "pad": 1, "dilation": 2, "ceil_mode": True},
    {"kernel": 2, "stride": 2, "pad": 0, "dilation": 1, "ceil_mode": True},
    {"kernel": 3, "stride": 1, "pad": 1, "dilation": 2, "ceil_mode": False},
])
def test_maxpool_options_match_pytorch(attrs):
    torch = pytest.importorskip("torch")
    x = RNG.normal(size=(2, 3, 9, 8))
    out, g, (gx,) = _value_and_grad("maxpool2d", [x], **attrs)
    tx = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.max_pool2d(tx, attrs["kernel"], attrs["stride"], attrs["pad"], attrs["dilation"],
                                          ceil_mode=attrs["ceil_mode"])
    want.backward(torch.tensor(g))
    np.testing.assert_array_equal(out, want.detach().numpy())
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-13)  # sums of routed gradients, in another order


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("count_include_pad", [False, True])
def test_avgpool_options_match_pytorch(ceil_mode, count_include_pad):
    torch = pytest.importorskip("torch")
    x = RNG.normal(size=(2, 3, 9, 8))
    attrs = {"kernel": 3, "stride": 2, "pad": 1, "ceil_mode": ceil_mode, "count_include_pad": count_include_pad}
    out, g, (gx,) = _value_and_grad("avgpool2d", [x], **attrs)
    tx = torch.tensor(x, requires_grad=True)
    want = torch.nn.functional.avg_pool2d(tx, 3, 2, 1, ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    want.backward(torch.tensor(g))
    np.testing.assert_allclose(out, want.detach().numpy(), rtol=1e-13)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-13)


def _per_sequence(torch, x, make):
    """``make(one)`` for each sequence b alone, ``one`` of shape (1, C, lengths[b])."""
    return [make(torch.tensor(x[:LENGTHS[b], b].T[None], requires_grad=True)) for b in range(x.shape[1])]


@pytest.mark.parametrize("kernel, dilation", [(3, 1), (2, 2), (4, 1)])
def test_time_conv1d_is_each_sequence_convolved_alone_with_same_padding(kernel, dilation):
    torch = pytest.importorskip("torch")
    x, w, b = RNG.normal(size=(7, 3, 2)), RNG.normal(size=(4, 2, kernel)), RNG.normal(size=4)
    wild = x.copy()
    wild[LENGTHS[1]:, 1] = 1e30  # padding: never read
    out, g, (gx, gw, gb, none) = _value_and_grad("time_conv1d", [wild, w, b, LENGTHS], dilation=dilation)
    tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    for seq, (one, made) in enumerate(_per_sequence(torch, x, lambda one: (one, torch.nn.functional.conv1d(
            one, tw, tb, padding="same", dilation=dilation)))):
        valid = LENGTHS[seq]
        np.testing.assert_allclose(out[:valid, seq], made[0].T.detach().numpy(), rtol=1e-12, atol=1e-12)
        made.backward(torch.tensor(g[:valid, seq].T[None]))
        np.testing.assert_allclose(gx[:valid, seq], one.grad[0].T.numpy(), rtol=1e-12, atol=1e-12)
    assert none is None and np.all(out[LENGTHS[1]:, 1] == 0) and np.all(gx[LENGTHS[1]:, 1] == 0)
    np.testing.assert_allclose(gw, tw.grad.numpy(), rtol=1e-11)
    np.testing.assert_allclose(gb, tb.grad.numpy(), rtol=1e-11)


@pytest.mark.parametrize("name, attrs", [("time_maxpool", {"kernel": 3, "dilation": 2}),
                                         ("time_avgpool", {"kernel": 3}),
                                         ("time_avgpool", {"kernel": 3, "count_include_pad": True})])
def test_time_pooling_is_each_sequence_pooled_alone(name, attrs):
    torch = pytest.importorskip("torch")
    F_ = torch.nn.functional
    x = RNG.normal(size=(7, 3, 2))
    out, g, (gx, _) = _value_and_grad(name, [x, LENGTHS], **attrs)
    half = attrs.get("dilation", 1) * (attrs["kernel"] - 1) // 2
    if name == "time_maxpool":
        def pool(one):
            return F_.max_pool1d(F_.pad(one, (half, half), value=-np.inf), attrs["kernel"], 1, dilation=attrs["dilation"])
    else:
        def pool(one):
            return F_.avg_pool1d(one, attrs["kernel"], 1, half, count_include_pad=attrs.get("count_include_pad", False))
    for seq, (one, made) in enumerate(_per_sequence(torch, x, lambda one: (one, pool(one)))):
        valid = LENGTHS[seq]
        np.testing.assert_allclose(out[:valid, seq], made[0].T.detach().numpy(), rtol=1e-13)
        made.backward(torch.tensor(g[:valid, seq].T[None]))
        np.testing.assert_allclose(gx[:valid, seq], one.grad[0].T.numpy(), rtol=1e-13)
        assert np.all(out[valid:, seq] == 0) and np.all(gx[valid:, seq] == 0)
