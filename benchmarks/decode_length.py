"""Decoding time against output length: the compiled step loop is linear in the length.

Greedy decoding with ``models/seq2seq_attention.sg`` (random weights, the end token made
unreachable so every row runs the whole length), batch 32, for output lengths 16 to 256.
Beside it, what decoding costs without a step program: running the whole model again on the
prefix for every new token (``net.predict`` on ``tgt_in[:t]``), quadratic in the length.
It runs on one thread and measures the process's CPU time, best of a few runs, so that
other work on a shared machine shows as little as it can; each length's runs are
interleaved with the other lengths'. A column gives the time per generated token.

It writes its section of ``docs/benchmarks.md`` (between its markers).

    python benchmarks/decode_length.py [--lengths 16,32,64,128,256] [--repeat 3] [--prefix-up-to 128]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import time
from pathlib import Path

for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(variable, "1")  # before NumPy loads its libraries

import numpy  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import seqgraph as sg  # noqa: E402

BATCH, SOURCE = 32, 12
START, END = "<!-- decode_length.py: start -->", "<!-- decode_length.py: end -->"


def network(hidden: int):
    """The example seq2seq at ``hidden``, float32, with its end token never chosen."""
    model = sg.load(ROOT / "models" / "seq2seq_attention.sg").model().with_sizes(hidden=hidden)
    net = sg.compile(model, seed=0)
    end = model.checked.feedback["tgt_in"].end
    net.params["dense_1.bias"][end] = -1e4
    return net


def cpu_time(function) -> float:
    """The CPU time this process spends in ``function()``."""
    started = time.process_time()
    function()
    return time.process_time() - started


def rerun_prefix(net, src, length: int):
    """Greedy decoding by running the whole model on the prefix for every token."""
    tokens = numpy.ones((1, src.shape[1]), dtype=numpy.int64)
    for _ in range(length):
        probs = net.predict({"src": src, "tgt_in": tokens})["probs"]
        tokens = numpy.vstack([tokens, probs[-1].argmax(-1)[None]])
    return tokens


def measure(hidden: int, lengths: list, repeat: int, prefix_up_to: int) -> list:
    """``(hidden, length, step loop s, prefix re-run s or None)`` per length."""
    net = network(hidden)
    src = numpy.random.default_rng(0).integers(3, 13, (SOURCE, BATCH))
    for length in lengths:
        generated = net.generate({"src": src}, max_length=length)  # also the untimed warm-up
        assert generated.lengths.min() == length, "a row stopped early"
    step = {length: [] for length in lengths}
    prefix = {length: [] for length in lengths if length <= prefix_up_to}
    for round_ in range(repeat):
        for length in lengths:
            step[length].append(cpu_time(lambda: net.generate({"src": src}, max_length=length)))
            if length in prefix and round_ < 2:
                prefix[length].append(cpu_time(lambda: rerun_prefix(net, src, length)))
    rows = [(hidden, n, min(step[n]), min(prefix[n]) if n in prefix else None) for n in lengths]
    for _, n, mine, rerun in rows:
        print(f"hidden {hidden} length {n}: step loop {mine * 1e3:.1f} ms"
              + (f", prefix re-run {rerun * 1e3:.1f} ms" if rerun else ""), flush=True)
    return rows


def cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        found = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        return found.group(1).strip() if found else platform.processor()
    except OSError:
        return platform.processor() or "unknown"


def section(rows: list, seconds: float, load: tuple) -> str:
    lines = [START, "## Decoding time against output length", "",
             "Written by `python benchmarks/decode_length.py` (do not edit by hand; rerun it).", "",
             f"Greedy decoding with output feedback, `models/seq2seq_attention.sg` (float32, random "
             f"weights, the end token made unreachable), batch {BATCH}, source length {SOURCE}; "
             "CPU time on one thread, best of several interleaved runs. "
             "*Step loop*: `net.generate`, the compiled decoder step run once per token. *Prefix "
             "re-run*: the whole model run again on the prefix for each new token. CPU: "
             f"{cpu_name()}, {os.cpu_count()} cores, shared with other work (1-minute load average "
             f"{load[0]:.1f} before the run, {load[1]:.1f} after); the whole run took {seconds:.0f} s.", "",
             "| hidden | output length | step loop (ms) | per token (ms) | prefix re-run (ms) | per token (ms) |",
             "|---|---|---|---|---|---|"]
    for hidden, length, step, prefix in rows:
        rerun = f"{prefix * 1e3:.1f} | {prefix * 1e3 / length:.2f}" if prefix else "- | -"
        lines.append(f"| {hidden} | {length} | {step * 1e3:.1f} | {step * 1e3 / length:.2f} | {rerun} |")
    lines += ["", "Time per token at the longest length over the time per token at the shortest "
              "(1.0: linear in the length):", ""]
    for hidden in sorted({row[0] for row in rows}):
        mine = [row for row in rows if row[0] == hidden]
        ratios = [f"{name} {_growth([(r[1], r[i]) for r in mine if r[i]]):.2f}x"
                  for name, i in (("step loop", 2), ("prefix re-run", 3))]
        lines.append(f"- hidden {hidden}: " + ", ".join(ratios))
    lines.append(END)
    return "\n".join(lines) + "\n"


def _growth(points: list) -> float:
    """Per-token time at the longest length over per-token time at the shortest."""
    (short, first), (long, last) = points[0], points[-1]
    return (last / long) / (first / short)


def write(text: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    page = path.read_text()
    if START in page:
        page = page[:page.index(START)] + text + page[page.index(END) + len(END) + 1:]
    else:
        page = page.rstrip("\n") + "\n\n" + text
    path.write_text(page)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="16,32,64,128,256")
    parser.add_argument("--hidden", default="32,128")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--prefix-up-to", type=int, default=128)
    args = parser.parse_args()
    started, load = time.perf_counter(), os.getloadavg()[0]
    lengths = [int(x) for x in args.lengths.split(",")]
    rows = [row for hidden in args.hidden.split(",")
            for row in measure(int(hidden), lengths, args.repeat, args.prefix_up_to)]
    write(section(rows, time.perf_counter() - started, (load, os.getloadavg()[0])))


if __name__ == "__main__":
    main()
