"""Training parity with PyTorch: the same model, data, initial weights and settings, trained by
``seqgraph run``'s own loop and by a plain PyTorch loop in float64, give the same loss at every
step and the same parameters at the end, to 1e-10.

The seqgraph side uses only public API: :func:`seqgraph.train.run.run` with ``init=`` (the
``--init WEIGHTS`` flag) and an ``on_step`` callback. Each case makes clipping act (and checks
that it did), so a gradient that clipping scales twice cannot pass.
"""

from pathlib import Path

import numpy as np
import pytest

import seqgraph as sg
from seqgraph.train.run import run

torch = pytest.importorskip("torch")

QUIET = dict(progress=False, echo=lambda *args: None, dtype="float64")

LANGUAGE_MODEL = """
model LM(vocab = 5, embed = 4, hidden = 6) {
    input  x : seq[int, vocab]
    target y : seq[int, vocab]
    h = lstm(embedding(x, vocab, embed), hidden)
    loss = cross_entropy(dense(h, vocab), y)
}
train {
    data = text("corpus.txt")
    optimizer = sgd(lr = 0.5, momentum = 0.9)
    weight_decay = 0.01
    batch = 4   bptt = 7   clip = 0.2   epochs = 2   valid = 0
}
"""

CLASSIFIER = """
model Classifier(hidden = 5) {
    input  x : seq[float, 3]
    target label : int[4]
    h = {cell}(x, hidden)
    loss = cross_entropy(dense(last(h), 4), label)
}
train {
    data = npz("sequences.npz")
    optimizer = adam(lr = 0.02)
    weight_decay = 0.001
    batch = 16   clip = 0.3   epochs = 25   valid = 0
}
"""


def initial_weights(model_text: str, path: Path, scale: float) -> dict:
    """Random weights for every parameter of the model, saved as a plain ``.npz`` at ``path``."""
    shapes = {key: shape for key, (shape, _) in sg.parse(model_text).model().params.items()}
    rng = np.random.default_rng(3)
    weights = {key: rng.uniform(-scale, scale, size=shape) for key, shape in shapes.items()}
    np.savez(path, **weights)
    return weights


def train_with_seqgraph(tmp_path: Path, model_text: str, weights_file: Path):
    """(trainer, the Step of every update) of a seqgraph run from ``weights_file``."""
    model_file = tmp_path / "model.sg"
    model_file.write_text(model_text)
    steps = []
    trainer = run(model_file, out=tmp_path / "run", init=str(weights_file), on_step=[steps.append], **QUIET)
    return trainer, steps


def assert_same_training(trainer, steps, torch_losses, torch_norms, torch_params):
    losses = [s.loss for s in steps]
    assert len(losses) == len(torch_losses) >= 20
    np.testing.assert_allclose(losses, torch_losses, rtol=0, atol=1e-10)
    np.testing.assert_allclose([s.grad_norm for s in steps], torch_norms, rtol=1e-10)
    clipped = [s.clipped for s in steps]
    assert clipped == [n > trainer.config.clip for n in torch_norms]
    assert len(clipped) // 4 <= sum(clipped), "clipping acted too rarely to test it"
    for key, value in torch_params.items():
        np.testing.assert_allclose(trainer.net.params[key], value, rtol=0, atol=1e-10, err_msg=key)


def torch_name(module, name: str) -> str:
    """The torch attribute of seqgraph's parameter ``name`` (a recurrent layer's names end in ``_l0``)."""
    return f"{name}_l0" if isinstance(module, torch.nn.RNNBase) else name


def copy_into(layers: dict, weights: dict) -> None:
    """Copy seqgraph's ``<layer>.<param>`` arrays into the torch modules ``layers`` by layer name."""
    with torch.no_grad():
        for key, value in weights.items():
            layer, name = key.split(".")
            getattr(layers[layer], torch_name(layers[layer], name)).copy_(torch.from_numpy(value))


def params_of(layers: dict, keys) -> dict:
    """The torch modules' parameters under seqgraph's keys, as NumPy arrays."""
    found = {}
    for key in keys:
        layer, name = key.split(".")
        found[key] = getattr(layers[layer], torch_name(layers[layer], name)).detach().numpy()
    return found


def clip_and_step(parameters, optimizer, clip: float) -> float:
    norm = float(torch.nn.utils.clip_grad_norm_(parameters, clip))
    optimizer.step()
    return norm


def test_lstm_language_model_with_tbptt_momentum_clipping_and_weight_decay(tmp_path):
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list("abcde"), size=300))
    (tmp_path / "corpus.txt").write_text(text)
    weights = initial_weights(LANGUAGE_MODEL, tmp_path / "init.npz", scale=0.8)
    trainer, steps = train_with_seqgraph(tmp_path, LANGUAGE_MODEL, tmp_path / "init.npz")

    vocab = sorted(set(text))
    ids = np.array([vocab.index(c) for c in text])
    embed = torch.nn.Embedding(5, 4).double()
    lstm = torch.nn.LSTM(4, 6).double()
    dense = torch.nn.Linear(6, 5).double()
    layers = {"embedding_0": embed, "lstm_0": lstm, "dense_0": dense}
    copy_into(layers, weights)
    parameters = [p for layer in layers.values() for p in layer.parameters()]
    optimizer = torch.optim.SGD(parameters, lr=0.5, momentum=0.9, weight_decay=0.01)
    batch, window = 4, 7
    columns = (len(ids) - 1) // batch
    losses, norms = [], []
    for _ in range(2):
        state = None  # every epoch starts from zero states
        for start in range(0, columns, window):
            stop = min(start + window, columns)
            x = np.stack([ids[b * columns + start: b * columns + stop] for b in range(batch)], axis=1)
            y = np.stack([ids[b * columns + start + 1: b * columns + stop + 1] for b in range(batch)], axis=1)
            optimizer.zero_grad()
            h, state = lstm(embed(torch.from_numpy(x)), state)
            state = tuple(s.detach() for s in state)  # carried into the next window, no gradient
            logits = dense(h)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 5), torch.from_numpy(y).reshape(-1))
            loss.backward()
            losses.append(float(loss))
            norms.append(clip_and_step(parameters, optimizer, 0.2))
    assert_same_training(trainer, steps, losses, norms, params_of(layers, weights))


@pytest.mark.parametrize("cell, torch_layer", [("gru", "GRU"), ("rnn", "RNN")])
def test_recurrent_classifier_with_variable_lengths_adam_clipping_and_weight_decay(tmp_path, cell, torch_layer):
    rng = np.random.default_rng(1)
    count, longest = 16, 6
    lengths = rng.integers(2, longest + 1, size=count)
    x = rng.normal(size=(count, longest, 3))
    x[np.arange(longest)[None, :] >= lengths[:, None]] = 0
    label = rng.integers(0, 4, size=count)
    np.savez(tmp_path / "sequences.npz", x=x, label=label, lengths=lengths)
    model_text = CLASSIFIER.replace("{cell}", cell)
    weights = initial_weights(model_text, tmp_path / "init.npz", scale=0.9)
    trainer, steps = train_with_seqgraph(tmp_path, model_text, tmp_path / "init.npz")

    recurrent = getattr(torch.nn, torch_layer)(3, 5).double()
    dense = torch.nn.Linear(5, 4).double()
    layers = {f"{cell}_0": recurrent, "dense_0": dense}
    copy_into(layers, weights)
    parameters = list(recurrent.parameters()) + list(dense.parameters())
    optimizer = torch.optim.Adam(parameters, lr=0.02, weight_decay=0.001)
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), torch.from_numpy(lengths),
                                                     batch_first=True, enforce_sorted=False)
    losses, norms = [], []
    for _ in range(25):  # one batch holds every example, so their order does not matter
        optimizer.zero_grad()
        _, last = recurrent(packed)
        loss = torch.nn.functional.cross_entropy(dense(last[0]), torch.from_numpy(label))
        loss.backward()
        losses.append(float(loss))
        norms.append(clip_and_step(parameters, optimizer, 0.3))
    assert_same_training(trainer, steps, losses, norms, params_of(layers, weights))
