"""The seqgraph command line: check, graph, run, sample, errors and exit codes."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import seqgraph as sg
from seqgraph import cli

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"
MODEL_FILES = sorted(MODELS.glob("*.sg"))
IDS = [p.stem for p in MODEL_FILES]

BROKEN = """\
model M(hidden = 8) {
    input x : seq[float, 4]
    target y : [1]
    h = lstm(x, hiden)
    loss = mse(dense(last(h), 1), y)
}
"""


@pytest.fixture
def broken(tmp_path):
    path = tmp_path / "broken.sg"
    path.write_text(BROKEN)
    return path


@pytest.mark.parametrize("path", MODEL_FILES, ids=IDS)
def test_check_every_model(path, capsys):
    assert cli.main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"{path}: ok\n")
    assert "  inputs:" in out and "  outputs:" in out and "  parameters:" in out
    assert "    total " in out and " parameters in " in out


def test_check_prints_inputs_targets_outputs_and_the_parameter_table(capsys):
    assert cli.main(["check", str(MODELS / "char_lstm.sg")]) == 0
    out = capsys.readouterr().out
    assert "model CharLSTM(vocab = 45, embed = 32, hidden = 128)" in out
    assert "    x  seq[int, 45]" in out
    assert "    y  seq[int, 45]" in out
    assert "    loss   scalar" in out
    assert "    lstm_0.weight_ih    [512, 32]    16,384" in out
    assert "    total                           222,285" in out
    assert "222,285 parameters in 11 tensors" in out


def test_check_names_extra_time_axes(capsys):
    assert cli.main(["check", str(MODELS / "seq2seq_attention.sg")]) == 0
    assert "src     seq[int, 13]  (time axis 'src')" in capsys.readouterr().out


def test_check_calls_the_gradient_check_hook(capsys, monkeypatch):
    monkeypatch.setattr(cli, "_gradient_check_report", lambda model: f"gradient check of {model.name}: ok")
    assert cli.main(["check", str(MODELS / "rnn_adding.sg")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("gradient check of RNNAdding: ok")


def test_a_broken_model_fails_with_a_caret_and_no_traceback(broken, capsys):
    assert cli.main(["check", str(broken)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (f"{broken}:4:17: error: unknown size 'hiden'\n"
                   "        h = lstm(x, hiden)\n"
                   "                    ^~~~~\n"
                   "hint: did you mean 'hidden'?\n")
    assert "Traceback" not in err


def test_a_missing_file_is_exit_1(tmp_path, capsys):
    assert cli.main(["check", str(tmp_path / "nope.sg")]) == 1
    assert "error: no such file" in capsys.readouterr().err


@pytest.mark.parametrize("path", MODEL_FILES, ids=IDS)
@pytest.mark.parametrize("fmt", ["text", "dot"])
def test_graph_unrolled_in_text_and_dot(path, fmt, capsys):
    assert cli.main(["graph", str(path), "--unroll", "3", "--format", fmt]) == 0
    out = capsys.readouterr().out
    if fmt == "text":
        title = out.splitlines()[0]
        assert title.startswith("# ") and "unrolled" in title
        if sg.load(path).model().checked.time_axes:  # a model with sequences, not images alone
            assert "unrolled over 3 steps" in title
    else:
        assert out.startswith("digraph ") and out.rstrip().endswith("}")


def test_graph_folded_text_marks_delays(capsys):
    assert cli.main(["graph", str(MODELS / "rnn_adding.sg")]) == 0
    assert "= prev(rnn_0/tanh @ t-1, rnn_0/h_init)" in capsys.readouterr().out


def test_graph_of_one_layer_to_a_file(tmp_path, capsys):
    target = tmp_path / "layer.dot"
    assert cli.main(["graph", str(MODELS / "char_lstm.sg"), "--unroll", "2", "--layer", "lstm_1",
                     "-o", str(target)]) == 0
    assert capsys.readouterr().out == ""
    source = target.read_text()
    assert source.startswith("digraph ")  # the suffix picked the format
    assert '"lstm_1/mul.2@1"' in source and '"lstm_0/h_seq"' in source  # the latter feeds lstm_1
    assert '"lstm_0/mul.2@1"' not in source
    assert 'subgraph "cluster_t1"' in source


def test_graph_with_several_models_needs_a_name(tmp_path, capsys):
    path = tmp_path / "two.sg"
    model = (MODELS / "rnn_adding.sg").read_text().split("train {")[0]
    path.write_text(model + model.replace("RNNAdding", "Other"))
    assert cli.main(["graph", str(path)]) == 1
    assert "holds 2 models; name one" in capsys.readouterr().err
    assert cli.main(["graph", str(path), "--model", "Other"]) == 0


@pytest.mark.parametrize("argv, message", [
    (["graph", "MODEL", "--layer", "lstm"], "error: no layer 'lstm' in this graph"),
    (["graph", "MODEL", "--unroll", "0"], "error: --unroll needs a positive number of steps, got 0"),
    (["run", "MODEL", "--size", "hidden=big"], "error: --size takes NAME=INTEGER, got 'hidden=big'"),
    (["run", "MODEL", "--set", "clip"], "error: --set takes KEY=VALUE, got 'clip'"),
    (["sample", "runs/nowhere"], "error: no such file: runs/nowhere"),
])
def test_user_errors_exit_1_with_a_message(argv, message, capsys):
    argv = [str(MODELS / "rnn_adding.sg") if a == "MODEL" else a for a in argv]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(message)
    assert "Traceback" not in err


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
@pytest.mark.parametrize("fmt, magic", [("svg", b"<svg"), ("png", b"\x89PNG")])
def test_graph_renders_images_with_graphviz(fmt, magic, tmp_path):
    target = tmp_path / f"graph.{fmt}"
    assert cli.main(["graph", str(MODELS / "lstm_adding.sg"), "--unroll", "2", "--format", fmt,
                     "-o", str(target)]) == 0
    assert magic in target.read_bytes()[:1000]


def test_without_graphviz_images_are_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert cli.main(["graph", str(MODELS / "lstm_adding.sg"), "-o", str(tmp_path / "g.svg")]) == 1
    err = capsys.readouterr().err
    assert "needs Graphviz" in err and "apt-get install graphviz" in err
    assert not (tmp_path / "g.svg").exists()


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("seqgraph ")


def test_python_dash_m_runs_the_command():
    result = subprocess.run([sys.executable, "-m", "seqgraph", "check", str(MODELS / "rnn_adding.sg")],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "total" in result.stdout


def test_python_dash_m_reports_errors_without_traceback(broken):
    result = subprocess.run([sys.executable, "-m", "seqgraph", "graph", str(broken)],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1
    assert "^~~~~" in result.stderr and "Traceback" not in result.stderr


def test_run_trains_writes_a_run_folder_and_sample_reads_it(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["run", str(MODELS / "char_lstm.sg"), "--out", str(out), "--epochs", "1", "--quiet",
            "--size", "hidden=8", "--set", "steps = 2", "--set", "examples = 5000", "--set", "sample = 0"]
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "epoch 1/1  train " in printed
    assert {"final.npz", "best.npz", "last.npz", "metrics.csv", "config.json", "loss.png"} <= \
        {p.name for p in out.iterdir()}
    assert cli.main(["sample", str(out), "--length", "40", "--prime", "The "]) == 0
    text = capsys.readouterr().out.rstrip("\n")
    assert text.startswith("The ") and len(text) == 4 + 40


PRELUDE_FILES = sorted((ROOT / "seqgraph" / "prelude").glob("*.sg"))


@pytest.mark.parametrize("path", PRELUDE_FILES, ids=[p.stem for p in PRELUDE_FILES])
def test_the_prelude_is_plain_source_that_check_accepts(path, capsys):
    assert cli.main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: ok\n")
    assert f"  cell {path.stem}(x) -> h" in out
    assert "parameters weight_ih, weight_hh, bias_ih, bias_hh" in out


def test_a_copy_of_a_prelude_cell_elsewhere_is_a_duplicate(tmp_path, capsys):
    copy = tmp_path / "lstm.sg"
    copy.write_text((ROOT / "seqgraph" / "prelude" / "lstm.sg").read_text())
    assert cli.main(["check", str(copy)]) == 1
    assert "cell 'lstm' is already defined in the prelude" in capsys.readouterr().err


def test_graph_program_prints_each_step_loop_with_its_buffers_named(capsys):
    assert cli.main(["graph", "--program", str(MODELS / "rnn_adding.sg")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "# RNNAdding: scan 0 over time axis time, 4 nodes"
    assert "v3, g3: rnn_0/tanh" in lines
    forward, backward = out.split("scan_forward (for t in 0 .. T-1)")[1].split("scan_backward")
    assert "  buffer S3: state steps of node 3, [T+1, B, 32]" in forward
    assert "  buffer wt_rnn_0_weight_hh: transposed weight, [32, 32]" in forward
    calls = [line.strip() for line in forward.split("every step:")[1].splitlines() if "(" in line]
    assert calls == ["dot(v0, wt_rnn_0_weight_hh, v1)", "add(v1, x_rnn_0_add_2_grouped, v2)", "tanh(v2, v3)"]
    assert "(for t from T-1 down to 0)" in backward and "buffer C0: carried cotangent of node 0" in backward
    assert "    g0.fill(0)" in backward.split("every step:")[0]
    assert "dot(g1, w_rnn_0_weight_hh, g0)" in backward


def test_graph_program_of_a_model_without_recurrence_says_so(capsys):
    assert cli.main(["graph", "--program", str(MODELS / "digits_cnn.sg")]) == 0
    assert "no recurrent core" in capsys.readouterr().out
