"""Data-parallel training on this machine: throughput on 1 and 2 ranks, and a model of many.

Trains the character LSTM of ``models/char_lstm.sg`` (hidden 128, float32, truncated BPTT
over 64 steps, batch 32 per rank) for a few steps alone and under ``mpiexec -n 2``, timing
every step and, inside it, the one all-reduce of the fused gradient buffer. Then it times
MPI's all-reduce alone on 2 ranks for buffers of several sizes and fits the alpha-beta model

    t(n bytes) = alpha + beta * n           (ring all-reduce on P ranks:
                                             t_P(n) = 2 (P - 1) alpha + 2 (P - 1) / P * beta * n)

from which it predicts the step time, throughput and efficiency on P ranks with the batch
per rank fixed (weak scaling): compute (measured) + t_P(gradient bytes). It writes its own
section of ``docs/benchmarks.md``. Needs the ``dist`` extra (mpi4py, mpiexec).

    python benchmarks/data_parallel.py [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
from cpu_vs_torch import write_section  # noqa: E402  (benchmarks/ is a folder of scripts)

MARKERS = ("<!-- data_parallel.py: start -->", "<!-- data_parallel.py: end -->")
BATCH, BPTT, WARMUP = 32, 64, 3
SIZES = [2 ** k for k in (10, 13, 16, 19, 22)]  # float32 numbers per all-reduce
RANKS = (2, 8, 64, 512)
# A network to compare with, not measured here: 100 Gb/s Ethernet or InfiniBand EDR class.
NETWORK = {"name": "a 100 Gb/s network (alpha 5 us, 12.5 GB/s; assumed)", "alpha": 5e-6, "beta": 1 / 12.5e9}


def train_worker(result: str, steps: int) -> None:
    """Train for ``steps`` steps; rank 0 saves each step's time and all-reduce time."""
    from seqgraph.train import distributed, loop
    from seqgraph.train.run import run

    times, reduces = [], []

    def timed(method, into):
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            result = method(*args, **kwargs)
            into.append(time.perf_counter() - started)
            return result
        return wrapper

    for owner in (loop.Trainer, distributed.DataParallelTrainer):
        owner._step = timed(owner._step, times)
    distributed.MpiReducer.sum = timed(distributed.MpiReducer.sum, reduces)
    with tempfile.TemporaryDirectory() as out:
        trainer = run(ROOT / "models" / "char_lstm.sg", out=out, progress=False, echo=lambda *a: None,
                      settings=[f"batch = {BATCH}", f"bptt = {BPTT}", f"steps = {steps + WARMUP}",
                                "epochs = 1", "valid = 0", "sample = 0", "examples = 400000"])
    if trainer.writes:
        world = distributed.world()
        ranks = world.size if world else 1
        Path(result).write_text(json.dumps({
            "ranks": ranks, "step": times[WARMUP:], "allreduce": reduces[WARMUP:],
            "tokens": BATCH * ranks * BPTT, "threads": int(os.environ.get("MKL_NUM_THREADS", os.cpu_count())),
            "numbers": sum(int(p.size) for p in trainer.net.params.values())}))


def allreduce_worker(result: str, repeat: int = 20) -> None:
    """The fastest of ``repeat`` in-place MPI all-reduces of each size in :data:`SIZES`, in
    seconds: on a shared machine a rank is often descheduled for a while mid-call, and the
    fastest run is the one that measures the link rather than the wait."""
    import numpy
    from mpi4py import MPI

    comm, fastest = MPI.COMM_WORLD, {}  # bytes -> seconds
    for size in SIZES:
        buffer = numpy.ones(size, dtype=numpy.float32)
        runs = []
        for _ in range(repeat + 2):
            comm.Barrier()
            started = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
            runs.append(time.perf_counter() - started)
        fastest[size * 4] = min(runs[2:])
    if comm.Get_rank() == 0:
        Path(result).write_text(json.dumps(fastest))


def fit(points: dict) -> tuple:
    """``(alpha, beta)`` of ``t = 2 alpha + beta n`` (the ring all-reduce on 2 ranks) over
    ``{bytes: seconds}``, by least squares on the relative error (weights 1 / t^2), so the
    small messages that set alpha count as much as the large ones that set beta."""
    rows = [(1.0 / t, float(n) / t) for n, t in points.items()]  # t = a + b n, divided by t
    s11 = sum(u * u for u, _ in rows)
    s12 = sum(u * v for u, v in rows)
    s22 = sum(v * v for _, v in rows)
    s1, s2 = sum(u for u, _ in rows), sum(v for _, v in rows)
    det = s11 * s22 - s12 * s12
    a, b = (s1 * s22 - s2 * s12) / det, (s11 * s2 - s12 * s1) / det
    return max(a, 0.0) / 2, max(b, 0.0)


def ring(ranks: int, nbytes: int, alpha: float, beta: float) -> float:
    """Seconds of a ring all-reduce of ``nbytes`` on ``ranks`` ranks."""
    return 2 * (ranks - 1) * alpha + 2 * (ranks - 1) / ranks * beta * nbytes


def _launch(ranks: int, mode: str, result: Path, steps: int) -> dict:
    command = [sys.executable, __file__, "--worker", mode, str(result), "--steps", str(steps)]
    if ranks > 1:
        mpiexec = Path(sys.executable).with_name("mpiexec")
        command = [str(mpiexec) if mpiexec.exists() else shutil.which("mpiexec"), "-n", str(ranks)] + command
    subprocess.run(command, check=True, cwd=ROOT)
    return json.loads(result.read_text())


def _cpu() -> str:
    try:
        lines = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
        name = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("Model name"))
    except (OSError, StopIteration):
        name = "unknown"
    return f"{name}, {os.cpu_count()} cores"


def report(runs: list, latency: dict, loads: tuple, seconds: float) -> str:
    """The markdown section of docs/benchmarks.md."""
    alpha, beta = fit(latency)
    lines = ["# Data-parallel training (MPI)", "",
             "Written by `python benchmarks/data_parallel.py` (rerun it to refresh).", "",
             f"`models/char_lstm.sg` (hidden 128, {runs[0]['numbers']:,} parameters), float32, batch "
             f"{BATCH} per rank, truncated BPTT over {BPTT} steps; step times are fastest of "
             f"{len(runs[0]['step'])} steps after {WARMUP} warm-up steps. A step on several ranks is "
             "forward, backward, one all-reduce of the fused gradient buffer, the update; the "
             "all-reduce's time includes waiting for the slower rank to reach it.", "",
             f"- CPU: {_cpu()}; MPICH through mpi4py, ranks on one machine (shared memory).",
             f"- load average (1 minute) {loads[0]:.2f} before and {loads[1]:.2f} after; the machine "
             "is shared with other work, so these figures are indicative only.",
             f"- the whole run took {seconds:.0f} s.", "",
             "| ranks | threads per rank | step ms | all-reduce ms (share) | tokens/s |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for run in runs:
        step = statistics.median(run["step"])
        reduce = statistics.median(run["allreduce"]) if run["allreduce"] else 0.0
        lines.append(f"| {run['ranks']} | {run['threads']} | {step * 1e3:.1f} | {reduce * 1e3:.2f} "
                     f"({reduce / step:.0%}) | {run['tokens'] / step:,.0f} |")
    two = runs[-1]
    step, reduce = statistics.median(two["step"]), statistics.median(two["allreduce"])
    compute, nbytes = step - reduce, (two["numbers"] + 4) * 4
    lines += ["", "MPI's all-reduce alone on 2 ranks (the fastest of 20):", "",
              "| bytes | ms |", "| ---: | ---: |"]
    lines += [f"| {int(n):,} | {t * 1e3:.3f} |" for n, t in latency.items()]
    lines += ["", f"Fitted: alpha = {alpha * 1e6:.1f} us per message, beta = {beta * 1e9:.3f} ns per byte "
              f"({1 / beta / 1e9:.1f} GB/s). Model of P ranks with the batch per rank fixed: step = "
              f"compute ({compute * 1e3:.1f} ms, the 2-rank step less its all-reduce) + "
              f"2 (P - 1) alpha + 2 (P - 1) / P beta n, n = {nbytes:,} bytes:", "",
              "| P | links like these (all-reduce ms, efficiency, tokens/s) | "
              f"{NETWORK['name']} |", "| ---: | ---: | ---: |"]
    for ranks in RANKS:
        cells = []
        for a, b in ((alpha, beta), (NETWORK["alpha"], NETWORK["beta"])):
            cost = ring(ranks, nbytes, a, b)
            cells.append(f"{cost * 1e3:.2f} ms, {compute / (compute + cost):.0%}, "
                         f"{ranks * BATCH * BPTT / (compute + cost):,.0f}")
        lines.append(f"| {ranks} | {cells[0]} | {cells[1]} |")
    alone = ring(2, nbytes, alpha, beta)
    lines += ["", f"Inside a 2-rank step the all-reduce took {reduce * 1e3:.2f} ms; the fit gives "
              f"{alone * 1e3:.2f} ms for the buffer alone, so the rest is one rank waiting for the "
              "other (on a machine this loaded, the ranks' steps differ). The model's compute is "
              "the step less all of it. The 1-rank row runs MKL on both cores, the 2-rank rows one "
              "core per rank."]
    lines += ["", "The model leaves out what a real cluster adds: the slowest rank sets every step's "
              "pace, links shared by many nodes, and all-reduce algorithms other than the ring "
              "(MPI picks by size). The ring's bandwidth term hardly grows with P, so a model this "
              "small stays compute-bound far out; the latency term grows with P and sets the limit."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per run (20)")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    if args.worker:
        mode, result = args.worker
        train_worker(result, args.steps) if mode == "train" else allreduce_worker(result)
        return 0
    started, before = time.monotonic(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as scratch:
        runs = [_launch(ranks, "train", Path(scratch) / f"train{ranks}.json", args.steps) for ranks in (1, 2)]
        latency = {float(n): t for n, t in _launch(2, "allreduce", Path(scratch) / "latency.json", 0).items()}
    text = report(runs, latency, (before, os.getloadavg()[0]), time.monotonic() - started)
    write_section(Path(args.out), text, MARKERS)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
