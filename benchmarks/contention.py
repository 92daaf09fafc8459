"""seqgraph and PyTorch on a shared machine: the training step, quiet and beside a busy process.

The step is the LSTM language model's of ``benchmarks/cpu_vs_torch.py`` (batch 32, 64
steps, 64 inputs, hidden 128, float32): seqgraph's built-in ``lstm`` and ``torch.nn.LSTM``,
each with its library's own thread settings. Every measurement is a fresh process, started
either on a quiet machine or while one competing process spins on a core (a Python busy
loop, started half a second before), the way a run starts on a machine someone else is
using; so seqgraph's thread policy (``seqgraph/backends/cores.py``) sees the machine as it
is. The contestants and the two conditions alternate from round to round; each cell of the
table is the median over the rounds of each process's median step time. A contestant's
slowdown is its busy time over its quiet time.

Contestants: seqgraph as it starts by default (one thread a core, idle threads spinning
1 ms, then sleeping); seqgraph with ``KMP_BLOCKTIME=0`` (idle threads sleep at once);
seqgraph with ``KMP_BLOCKTIME=200``, the OpenMP runtime's own default (idle threads spin for
200 ms first, as before the thread policy); seqgraph with
``SEQGRAPH_THREADS=auto`` (fewer threads when cores are busy as it starts); and
``torch.nn.LSTM`` with PyTorch's default threads.

It writes the "Contention" section of ``docs/benchmarks.md`` (between its markers).

    python benchmarks/contention.py [--rounds 3] [--steps 12] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import cpu_vs_torch  # noqa: E402

HIDDEN = 128
MARKERS = ("<!-- contention.py: start -->", "<!-- contention.py: end -->")
SPINNER = "while True: pass"
# each contestant with the variables its process starts with
CONTESTANTS = {"seqgraph lstm": {}, "seqgraph lstm, KMP_BLOCKTIME=0": {"KMP_BLOCKTIME": "0"},
               "seqgraph lstm, KMP_BLOCKTIME=200": {"KMP_BLOCKTIME": "200"},
               "seqgraph lstm, SEQGRAPH_THREADS=auto": {"SEQGRAPH_THREADS": "auto"}, "torch nn.LSTM": {}}


def contestant_environment(name: str) -> dict:
    """The environment a contestant's process starts with: the caller's without its thread
    and waiting variables, and the contestant's own."""
    environ = {k: v for k, v in os.environ.items()
               if k not in (*cpu_vs_torch.THREAD_VARIABLES, "SEQGRAPH_THREADS", "KMP_BLOCKTIME", "OMP_WAIT_POLICY")}
    environ.update(CONTESTANTS[name])
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")]))
    return environ


def measure_step(name: str, steps: int, warmup: int) -> dict:
    """In this process: ``{"ms": median step time, "threads": the threads it ran on}``."""
    import numpy

    rng = numpy.random.default_rng(0)
    data = (rng.normal(size=(cpu_vs_torch.STEPS, cpu_vs_torch.BATCH, cpu_vs_torch.INPUTS)).astype("float32"),
            rng.integers(0, cpu_vs_torch.CLASSES, size=(cpu_vs_torch.STEPS, cpu_vs_torch.BATCH)))
    if name.startswith("seqgraph"):
        step, _, net = cpu_vs_torch.seqgraph_step("lstm", HIDDEN, data)
        # without MKL the products are OpenBLAS's, on one thread a core
        threads = net.backend.xp.threads() if net.backend.products == "MKL" else os.cpu_count()
    else:
        import torch
        step, threads = cpu_vs_torch.torch_module_step("lstm", HIDDEN, data), torch.get_num_threads()
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        begin = time.perf_counter()
        step()
        times.append(time.perf_counter() - begin)
    return {"ms": statistics.median(times) * 1e3, "threads": threads}


def measure_in_process(name: str, busy: bool, args) -> dict:
    """One contestant's measurement in a fresh process, beside a spinning one when ``busy``."""
    spinner = subprocess.Popen([sys.executable, "-c", SPINNER]) if busy else None
    try:
        if spinner is not None:
            time.sleep(0.5)
        done = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(args.steps),
                               "--warmup", str(args.warmup)], env=contestant_environment(name),
                              check=True, capture_output=True, text=True)
    finally:
        if spinner is not None:
            spinner.kill()
            spinner.wait()
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_all(args) -> dict:
    """``{contestant: {"quiet": [runs], "busy": [runs]}}``, conditions and contestants
    alternating in order from round to round."""
    runs = {name: {"quiet": [], "busy": []} for name in CONTESTANTS}
    for round_ in range(args.rounds):
        conditions = ("quiet", "busy") if round_ % 2 == 0 else ("busy", "quiet")
        names = list(CONTESTANTS) if round_ % 2 == 0 else list(CONTESTANTS)[::-1]
        for condition in conditions:
            for name in names:
                run = measure_in_process(name, condition == "busy", args)
                runs[name][condition].append(run)
                print(f"round {round_ + 1}, {condition}: {name} {run['ms']:.1f} ms on {run['threads']} "
                      f"thread(s)", file=sys.stderr, flush=True)
            time.sleep(args.rest)
    return runs


def summarise(runs: dict) -> list:
    """One row per contestant: ``(name, quiet ms, busy ms, quiet threads, busy threads)``."""
    rows = []
    for name, conditions in runs.items():
        quiet, busy = conditions["quiet"], conditions["busy"]
        rows.append((name, statistics.median(r["ms"] for r in quiet), statistics.median(r["ms"] for r in busy),
                     _threads(quiet), _threads(busy)))
    return rows


def _threads(runs: list) -> str:
    counts = sorted({r["threads"] for r in runs})
    return "/".join(str(c) for c in counts)


def report(rows: list, info: dict, args, load: tuple, elapsed: float) -> str:
    """The Contention section: the table and what it says."""
    tokens = cpu_vs_torch.BATCH * cpu_vs_torch.STEPS
    lines = ["# Contention: a training step beside a busy process", "",
             f"Written by `python benchmarks/contention.py` (rerun it to refresh). One LSTM training step "
             f"(batch {cpu_vs_torch.BATCH}, {cpu_vs_torch.STEPS} steps, {cpu_vs_torch.INPUTS} inputs, "
             f"hidden {HIDDEN}, float32), each measurement a fresh process started on a quiet machine "
             f"or beside one process spinning on a core; median of {args.steps} steps after "
             f"{args.warmup} warm-up steps per process, median over {args.rounds} rounds.", "",
             f"- CPU: {info['cpu']} (vendor {info['vendor']}), {info['cores']} cores; "
             f"seqgraph's products: {info['products']}; PyTorch {info['torch']}",
             f"- load average (1 minute) {load[0]:.2f} before and {load[1]:.2f} after; the whole run "
             f"took {elapsed:.0f} s" + (" (a --quick run: indicative only)" if args.quick else ""), "",
             "| contestant | threads quiet / busy | quiet ms | busy ms | slowdown | tokens/s quiet | tokens/s busy |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, quiet, busy, quiet_threads, busy_threads in rows:
        lines.append(f"| {name} | {quiet_threads} / {busy_threads} | {quiet:.1f} | {busy:.1f} | "
                     f"{busy / quiet:.2f}x | {tokens / quiet * 1e3:,.0f} | {tokens / busy * 1e3:,.0f} |")
    slowdown = {name: busy / quiet for name, quiet, busy, *_ in rows}
    ours, theirs = slowdown["seqgraph lstm"], slowdown["torch nn.LSTM"]
    verdict = "no worse than" if ours <= theirs else "worse than"
    lines += ["", f"seqgraph's default slowed {ours:.2f}x beside the busy process, {verdict} PyTorch's "
              f"{theirs:.2f}x. Its thread policy: idle threads spin 1 ms, then sleep (`KMP_BLOCKTIME=1`, "
              "`OMP_WAIT_POLICY=passive`), rather than spin 200 ms; `SEQGRAPH_THREADS=auto` "
              "takes one thread for each core others leave free as MKL loads."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every contestant and condition (3)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per process (12)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rest", type=float, default=1.0, help="seconds of rest between conditions (1)")
    parser.add_argument("--quick", action="store_true", help="one round of 4 steps, to check it works")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_step(args.child, args.steps, args.warmup)))
        return 0
    if args.quick:
        args.rounds, args.steps, args.warmup = 1, 4, 1
    start, load_before = time.perf_counter(), os.getloadavg()[0]
    rows = summarise(measure_all(args))
    text = report(rows, cpu_vs_torch.machine(), args, (load_before, os.getloadavg()[0]),
                  time.perf_counter() - start)
    cpu_vs_torch.write_section(Path(args.out), text, MARKERS)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
