"""``seqgraph bench``: what it reports, and its flop count."""

import re

import seqgraph as sg
from seqgraph.bench import measure, product_flops
from seqgraph.cli import main

from .conftest import ROOT


def test_bench_prints_compile_time_medians_rates_and_memory(capsys):
    status = main(["bench", str(ROOT / "models" / "peephole.sg"), "--batch", "3", "--steps", "5",
                   "--repeat", "2", "--size", "hidden=8", "--dtype", "float64"])
    out = capsys.readouterr().out
    assert status == 0
    assert "model PeepholeLM: batch 3, 5 steps, float64" in out
    for label in ("compile", "forward", "training step", "peak memory"):
        assert re.search(rf"^  {label}\s+\d+\.\d\d (ms|MiB)", out, re.M), label
    assert out.count("GFLOP/s") == 2 and "median of 2" in out


def test_bench_refuses_a_bad_count(capsys):
    assert main(["bench", str(ROOT / "models" / "peephole.sg"), "--repeat", "0"]) == 1
    assert "--repeat needs a positive number" in capsys.readouterr().err


def test_product_flops_counts_each_multiply_add_twice():
    model = sg.parse("""model M(hidden = 3) { input x : seq[float, 2]  target y : seq[int, 5]
        h = rnn(x, hidden)  loss = cross_entropy(dense(h, 5), y) }""").model()
    # per example and step: W_ih 3x2, W_hh 3x3, dense 5x3
    assert product_flops(model.graph, batch=4, steps=7) == 2 * (6 + 9 + 15) * 4 * 7
    result = measure(model, batch=4, steps=7, dtype="float64", repeat=2, warmup=1)
    assert result.forward_flops == 2 * (6 + 9 + 15) * 4 * 7
    assert result.compile_s > 0 and result.peak_bytes > 0 and len(result.train.runs) == 2
