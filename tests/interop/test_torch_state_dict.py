"""PyTorch state dicts both ways: a module's weights load into the matching seqgraph layer,
which then computes the module's outputs, and come back out as a state dict the module
loads with ``load_state_dict``. Files: .safetensors and torch.save's .pt."""

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.weights import (load_torch_state_dict, read_torch_state_dict, save_torch_state_dict,
                              to_torch_state_dict)

torch = pytest.importorskip("torch")


def _recurrent(kind, **options):
    return lambda: getattr(torch.nn, kind)(3, 4, num_layers=2, bidirectional=True, **options)


# name -> (seqgraph source, layer, a torch module, its input (seqgraph's, torch's))
CASES = {
    "LSTM": ("input x : seq[float, 3]  h = lstm(x, 4, layers = 2, direction = both)  output h",
             "lstm_0", _recurrent("LSTM"), "sequence"),
    "GRU": ("input x : seq[float, 3]  h = gru(x, 4, layers = 2, direction = both)  output h",
            "gru_0", _recurrent("GRU"), "sequence"),
    "RNN": ("input x : seq[float, 3]  h = rnn(x, 4, layers = 2, direction = both)  output h",
            "rnn_0", _recurrent("RNN"), "sequence"),
    "RNN relu": ("input x : seq[float, 3]  h = rnn_relu(x, 4, layers = 2, direction = both)  output h",
                 "rnn_relu_0", _recurrent("RNN", nonlinearity="relu"), "sequence"),
    "one-layer LSTM": ("input x : seq[float, 3]  h = lstm(x, 4, name = enc)  output h",
                       "enc", lambda: torch.nn.LSTM(3, 4), "sequence"),
    "Linear": ("input x : seq[float, 3]  h = dense(x, 5)  output h", "dense_0",
               lambda: torch.nn.Linear(3, 5), "sequence"),
    "Embedding": ("input x : seq[int, 7]  h = embedding(x, 7, 4)  output h", "embedding_0",
                  lambda: torch.nn.Embedding(7, 4), "ids"),
    "Conv2d": ("input x : tensor[float, 2, 6, 5]  h = conv2d(x, 3, 3, stride = 2, pad = 1)  output h",
               "conv2d_0", lambda: torch.nn.Conv2d(2, 3, 3, stride=2, padding=1), "image"),
}


def _inputs(kind, rng):
    if kind == "ids":
        return rng.integers(0, 7, size=(5, 2))
    if kind == "image":
        return rng.normal(size=(2, 2, 6, 5))
    return rng.normal(size=(5, 2, 3))


def _run_torch(module, x):
    with torch.no_grad():
        out = module(torch.from_numpy(x))
    return (out[0] if isinstance(out, tuple) else out).numpy()


def _module(case, seed):
    torch.manual_seed(seed)
    module = CASES[case][2]().double()
    with torch.no_grad():  # move every weight (an Embedding's and zero biases too) away from its init
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)
    return module


@pytest.mark.parametrize("case", sorted(CASES))
def test_torch_to_seqgraph_to_torch_gives_the_same_outputs(case):
    source, layer, _, kind = CASES[case]
    x = _inputs(kind, np.random.default_rng(1))
    original = _module(case, seed=0)
    expected = _run_torch(original, x)

    net = sg.compile(sg.parse(f"model M {{ {source} }}").model(), dtype="float64")
    load_torch_state_dict(net, layer, original.state_dict())
    np.testing.assert_allclose(net.forward({"x": x})["h"], expected, rtol=0, atol=1e-10)

    returned = _module(case, seed=1)
    assert not np.allclose(_run_torch(returned, x), expected)
    back = to_torch_state_dict(net, layer)
    assert sorted(back) == sorted(original.state_dict())
    returned.load_state_dict({key: torch.from_numpy(value) for key, value in back.items()})
    np.testing.assert_allclose(_run_torch(returned, x), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_state_dict_files_both_ways(tmp_path, suffix):
    pytest.importorskip("safetensors")
    import safetensors.torch
    source, layer, _, kind = CASES["LSTM"]
    x = _inputs(kind, np.random.default_rng(2))
    original = _module("LSTM", seed=3)
    path = tmp_path / f"lstm{suffix}"
    if suffix == ".pt":
        torch.save(original.state_dict(), path)
    else:
        safetensors.torch.save_file(original.state_dict(), path)
    net = sg.compile(sg.parse(f"model M {{ {source} }}").model(), dtype="float64")
    load_torch_state_dict(net, layer, read_torch_state_dict(path))
    expected = _run_torch(original, x)
    np.testing.assert_allclose(net.forward({"x": x})["h"], expected, rtol=0, atol=1e-10)

    written = tmp_path / f"back{suffix}"
    save_torch_state_dict(net, layer, written)
    state = torch.load(written, weights_only=True) if suffix == ".pt" else safetensors.torch.load_file(written)
    returned = _module("LSTM", seed=4)
    returned.load_state_dict(state)
    np.testing.assert_allclose(_run_torch(returned, x), expected, rtol=0, atol=1e-10)


def test_a_whole_models_state_dict_loads_one_module_at_a_time():
    class Tagger(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed, self.rnn, self.out = torch.nn.Embedding(7, 4), torch.nn.GRU(4, 5), torch.nn.Linear(5, 3)

        def forward(self, ids):
            return self.out(self.rnn(self.embed(ids))[0])

    torch.manual_seed(0)
    module = Tagger().double()
    source = "model M { input x : seq[int, 7]  h = dense(gru(embedding(x, 7, 4), 5), 3)  output h }"
    net = sg.compile(sg.parse(source).model(), dtype="float64")
    state = module.state_dict()
    for prefix, layer in (("embed.", "embedding_0"), ("rnn.", "gru_0"), ("out.", "dense_0")):
        load_torch_state_dict(net, layer, state, prefix=prefix)
    ids = np.random.default_rng(0).integers(0, 7, size=(6, 3))
    with torch.no_grad():
        expected = module(torch.from_numpy(ids)).numpy()
    np.testing.assert_allclose(net.forward({"x": ids})["h"], expected, rtol=0, atol=1e-10)
    back = {**to_torch_state_dict(net, "embedding_0", "embed."), **to_torch_state_dict(net, "gru_0", "rnn."),
            **to_torch_state_dict(net, "dense_0", "out.")}
    assert sorted(back) == sorted(state)
    for key, value in state.items():
        np.testing.assert_array_equal(back[key], value.numpy())


def test_state_dict_mistakes_are_clear_errors(tmp_path):
    net = sg.compile(sg.parse("model M { input x : seq[float, 3]  h = dense(x, 5)  output h }").model())
    with pytest.raises(sg.SeqgraphError, match="has no layer 'dens_0'.*\n?.*dense_0") as caught:
        load_torch_state_dict(net, "dens_0", {})
    assert "dense_0" in caught.value.hint
    with pytest.raises(sg.SeqgraphError, match="has no parameter 'dense_0.weights'"):
        load_torch_state_dict(net, "dense_0", {"weights": np.zeros((5, 3)), "bias": np.zeros(5)})
    with pytest.raises(sg.SeqgraphError, match="lacks dense_0.bias"):
        load_torch_state_dict(net, "dense_0", {"weight": np.zeros((5, 3))})
    with pytest.raises(sg.SeqgraphError, match=r"'dense_0.weight' has shape \(3, 5\)"):
        load_torch_state_dict(net, "dense_0", {"weight": np.zeros((3, 5)), "bias": np.zeros(5)})
    (tmp_path / "model.pt").write_bytes(b"not a torch file")
    with pytest.raises(sg.SeqgraphError, match="torch.load\\(weights_only=True\\) can read"):
        read_torch_state_dict(tmp_path / "model.pt")
    torch.save(torch.nn.Linear(3, 5), tmp_path / "module.pt")  # the module itself, pickled
    with pytest.raises(sg.SeqgraphError, match="can read"):
        read_torch_state_dict(tmp_path / "module.pt")
