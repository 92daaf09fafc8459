"""The memory estimate, and the guard that refuses a model too big for the machine."""

import platform
import resource
from pathlib import Path

import pytest

import seqgraph as sg
from seqgraph import SeqgraphError, resources
from seqgraph.train.run import run

MODELS = Path(__file__).resolve().parents[1] / "models"
QUIET = dict(progress=False, echo=lambda *args: None)
RNN = sg.load(MODELS / "rnn_adding.sg").model()


def test_parameters_gradients_and_optimizer_state_count_every_weight():
    hidden, features = 5, 2
    model = RNN.with_sizes(hidden=hidden)
    count = hidden * features + hidden * hidden + 2 * hidden + hidden + 1  # rnn, then dense to 1
    for dtype, item in (("float32", 4), ("float64", 8)):
        needed = resources.estimate(model, batch=3, steps=7, dtype=dtype)
        assert needed.parts["parameters"] == count * item
        assert needed.parts["gradients"] == count * item
        assert needed.parts["optimizer state"] == 2 * count * item
    inference = resources.estimate(model, batch=3, steps=7, training=False)
    assert inference.parts["gradients"] == inference.parts["optimizer state"] == 0


def test_activations_grow_with_batch_and_with_steps_for_per_step_values():
    """activations(batch, steps) = batch * (steps * per_step + once): bilinear, and the
    per-step part holds at least the hidden sequence."""
    model = RNN.with_sizes(hidden=16)
    act = {(b, s): resources.estimate(model, b, s).parts["activations"] for b in (1, 2) for s in (1, 3)}
    assert act[2, 1] == 2 * act[1, 1] and act[2, 3] == 2 * act[1, 3]
    per_step = (act[1, 3] - act[1, 1]) / 2
    assert per_step >= 16 * 4 * 2  # h (16 floats) and its pre-activation, every step
    assert act[1, 1] > per_step  # plus the values that exist once (last(h), pred, loss, ...)


def test_format_bytes():
    assert [resources.format_bytes(n) for n in (0, 1000, 1536, 3 * 2 ** 30, 3 * 2 ** 40)] == \
        ["0 B", "1000 B", "1.5 KiB", "3.0 GiB", "3.0 TiB"]
    assert resources.format_bytes(10 ** 30) == "about 2^99 bytes"


@pytest.mark.parametrize("text, expected", [("8G", 8 * 2 ** 30), ("512M", 512 * 2 ** 20),
                                            ("1.5GiB", 3 * 2 ** 29), ("4096", 4096), ("2k", 2048),
                                            ("off", None), ("0", None)])
def test_parse_memory(text, expected):
    assert resources.parse_memory(text) == expected


def test_parse_memory_refuses_nonsense():
    with pytest.raises(SeqgraphError, match="cannot read the memory limit 'lots'"):
        resources.parse_memory("lots")


def test_available_memory_reads_the_machine():
    free = resources.available_memory()
    if Path("/proc/meminfo").exists():
        line = next(l for l in open("/proc/meminfo") if l.startswith("MemAvailable:"))
        assert abs(free - int(line.split()[1]) * 1024) < 2 ** 30  # it moves between the reads
    assert free is None or free > 0


def test_an_absurd_hidden_size_is_refused_before_anything_is_allocated():
    model = sg.load(MODELS / "char_lstm.sg").model()
    with pytest.raises(SeqgraphError) as caught:
        sg.compile(model, hidden=10 ** 6)
    message = caught.value.render()
    # weight_hh alone holds 4e6 x 1e6 float32 values: 14.6 TiB
    assert "model CharLSTM needs 43.7 TiB (parameters 43.7 TiB" in message
    assert "is available" in message
    assert "lower the model's sizes" in message and "lstm_0.weight_hh [4000000, 1000000]" in message


def test_the_limit_comes_from_the_environment(monkeypatch):
    needed = resources.estimate(RNN, training=False).total
    monkeypatch.setenv("SEQGRAPH_MEMORY", str(needed - 1))
    with pytest.raises(SeqgraphError, match=f"needs {resources.format_bytes(needed)} .* but only "
                                            f"{resources.format_bytes(needed - 1)} is available"):
        sg.compile(RNN)
    monkeypatch.setenv("SEQGRAPH_MEMORY", str(needed))
    sg.compile(RNN)
    monkeypatch.setenv("SEQGRAPH_MEMORY", "off")
    assert resources.memory_limit() is None


def test_training_checks_its_batch_and_window_against_the_memory_setting(tmp_path):
    with pytest.raises(SeqgraphError) as caught:
        run(MODELS / "char_lstm.sg", out=tmp_path, settings=['memory = "1M"', "batch = 16", "bptt = 50"],
            **QUIET)
    message = caught.value.render()
    assert "for a batch of 16 x 50 steps in float32, but only 1.0 MiB is available" in message
    assert "activations dominate: lower batch (now 16) or the sequence length / bptt (now 50 steps)" \
        in message
    assert not (tmp_path / "last.npz").exists()


def test_a_bad_memory_setting_points_at_itself():
    with pytest.raises(SeqgraphError) as caught:
        run(MODELS / "rnn_adding.sg", settings=['memory = "a lot"'], **QUIET)
    assert str(caught.value.span) == "--set memory:1:18"


def test_a_memory_error_while_allocating_becomes_a_clear_error(monkeypatch):
    """NumPy's MemoryError (the estimate is a lower bound) is reported like the estimate."""
    def refuse(*args):
        raise MemoryError("Unable to allocate 1.00 TiB for an array")

    monkeypatch.setattr("seqgraph.runtime.initial_value", refuse)
    with pytest.raises(SeqgraphError) as caught:
        sg.compile(RNN)
    assert caught.value.message.startswith("out of memory running model RNNAdding (Unable to allocate "
                                           "1.00 TiB for an array); it needs ")
    assert caught.value.hint.startswith(("activations dominate", "parameters dominate"))


def test_training_an_absurd_size_from_the_command_line_is_one_clear_error(tmp_path):
    with pytest.raises(SeqgraphError) as caught:
        run(MODELS / "rnn_adding.sg", out=tmp_path, sizes={"hidden": 10 ** 6}, settings=["examples = 64"],
            **QUIET)
    message = caught.value.message
    assert message.startswith("model RNNAdding needs ")
    assert "for a batch of 32 x 50 steps in float32, but only " in message
    assert "rnn_0.weight_hh [1000000, 1000000]" in caught.value.hint


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's allocator")
def test_memory_a_pass_frees_is_kept_for_the_next_pass():
    from seqgraph.bench import bench_inputs
    assert resources.keep_freed_memory()
    net = sg.compile(sg.load(MODELS / "char_lstm.sg").model(), dtype="float32", seed=0)
    inputs, lengths = bench_inputs(net, 32, 64)
    for _ in range(3):
        net.forward(inputs, lengths)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        net.forward(inputs, lengths)
    # glibc's defaults hand the freed arrays back: about 1400 page faults a pass here
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 200
