"""seqgraph against PyTorch on the CPU: one training step of a recurrent language model.

The step: forward over all steps, a dense projection to 65 classes and the mean
cross-entropy at every step, backward through time, an SGD update. Batch 32, 64 steps, 64
inputs per step, hidden 128, 256 and 512 (float32). Contestants, timed in one run with the
order alternating from round to round:

- LSTM: seqgraph's built-in ``lstm``, ``torch.nn.LSTM``, and an eager PyTorch loop over a
  hand-written LSTM cell;
- GRU: seqgraph's ``gru``, ``torch.nn.GRU``, an eager loop over a hand-written GRU cell;
- user cells: seqgraph's built-in ``lstm`` beside the peephole LSTM of ``models/peephole.sg``
  and the gate-by-gate LSTM of ``benchmarks/user_lstm.sg`` (and an eager PyTorch loop over
  the peephole cell).

It writes ``docs/benchmarks.md``. PyTorch is needed only here: ``pip install 'seqgraph[bench]'``.

    python benchmarks/cpu_vs_torch.py [--threads 2,1] [--rounds 12] [--sizes 128,256,512]

``--against REV`` times this checkout against another revision of seqgraph in the same run:
each seqgraph contestant beside its twin from REV's tree (run in a process of its own, so
that both versions load), alternating round by round, and writes that comparison to its
own section of the report (a change's effect on speed is far smaller than the spread
between two runs on a shared machine, but not than the spread within one).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BATCH, STEPS, INPUTS, CLASSES, LR = 32, 64, 64, 65, 0.01
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def limit_threads(count: int) -> None:
    """Both libraries read these when they load, so this runs before either is imported."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(count)


# --- the contestants ------------------------------------------------------------------------

def seqgraph_source(cell: str, hidden: int) -> str:
    """The model: ``cell`` over float inputs, a dense layer and the cross-entropy."""
    cells = {"PeepholeLSTM": (ROOT / "models" / "peephole.sg").read_text().split("model PeepholeLM")[0],
             "GateLSTM": (HERE / "user_lstm.sg").read_text()}
    return cells.get(cell, "") + f"""
model Bench(hidden = {hidden}) {{
    input  x : seq[float, {INPUTS}]
    target y : seq[int, {CLASSES}]
    h = {cell}(x, hidden)
    loss = cross_entropy(dense(h, {CLASSES}), y)
}}
"""


def seqgraph_step(cell: str, hidden: int, data):
    """A training step of seqgraph's compiled program (and its compile time in seconds)."""
    import seqgraph as sg
    from seqgraph.bench import training_step
    from seqgraph.compiler import compile_program

    model = sg.parse(seqgraph_source(cell, hidden)).model()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        compile_program(model.graph, model.checked)
        times.append(time.perf_counter() - start)
    net = sg.compile(model, dtype="float32", seed=0)
    x, y = data
    inputs = {"x": x, "y": y}
    return (lambda: training_step(net, inputs, lr=LR)), statistics.median(times), net


def torch_module_step(kind: str, hidden: int, data):
    """A training step of ``torch.nn.LSTM`` or ``torch.nn.GRU``."""
    import torch

    torch.manual_seed(0)
    layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](INPUTS, hidden)
    head = torch.nn.Linear(hidden, CLASSES)
    return _torch_training(lambda x: layer(x)[0], [*layer.parameters(), *head.parameters()], head, data)


def torch_cell_step(kind: str, hidden: int, data):
    """A training step of an eager PyTorch loop over a hand-written cell."""
    import torch

    torch.manual_seed(0)
    gates = {"lstm": 4, "gru": 3, "peephole": 4}[kind]
    scale = hidden ** -0.5
    w_ih = torch.nn.Parameter(scale * torch.randn(gates * hidden, INPUTS))
    w_hh = torch.nn.Parameter(scale * torch.randn(gates * hidden, hidden))
    b_ih = torch.nn.Parameter(torch.zeros(gates * hidden))
    b_hh = torch.nn.Parameter(torch.zeros(gates * hidden))
    peep = torch.nn.Parameter(scale * torch.randn(3, hidden))
    head = torch.nn.Linear(hidden, CLASSES)
    cell = {"lstm": _lstm_cell, "gru": _gru_cell, "peephole": _peephole_cell}[kind]

    def run(x):
        h = x.new_zeros(x.shape[1], hidden)
        c = x.new_zeros(x.shape[1], hidden)
        outputs = []
        for t in range(x.shape[0]):
            h, c = cell(x[t], h, c, w_ih, w_hh, b_ih, b_hh, peep)
            outputs.append(h)
        return torch.stack(outputs)

    return _torch_training(run, [w_ih, w_hh, b_ih, b_hh, peep, *head.parameters()], head, data)


def _lstm_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, peep):
    import torch
    i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, peep):
    import torch
    xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, 1)
    hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, 1)
    r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn)
    return (1 - z) * n + z * h, c


def _peephole_cell(x, h, c, w_ih, w_hh, b_ih, b_hh, peep):
    import torch
    zi, zf, zg, zo = (x @ w_ih.T + h @ w_hh.T + b_ih).chunk(4, 1)
    i = torch.sigmoid(zi + peep[0] * c)
    f = torch.sigmoid(zf + peep[1] * c)
    c = f * c + i * torch.tanh(zg)
    return torch.sigmoid(zo + peep[2] * c) * torch.tanh(c), c


def _torch_training(run, params, head, data):
    import torch

    optimizer = torch.optim.SGD(params, lr=LR)
    x, y = (torch.from_numpy(a) for a in data)
    flat_y = y.reshape(-1)

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = head(run(x))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, CLASSES), flat_y)
        loss.backward()
        optimizer.step()
    return step


CONTESTANTS = {
    "lstm": [("seqgraph lstm", lambda h, d: seqgraph_step("lstm", h, d)),
             ("torch nn.LSTM", lambda h, d: torch_module_step("lstm", h, d)),
             ("torch eager LSTM cell", lambda h, d: torch_cell_step("lstm", h, d))],
    "gru": [("seqgraph gru", lambda h, d: seqgraph_step("gru", h, d)),
            ("torch nn.GRU", lambda h, d: torch_module_step("gru", h, d)),
            ("torch eager GRU cell", lambda h, d: torch_cell_step("gru", h, d))],
    "cells": [("seqgraph lstm", lambda h, d: seqgraph_step("lstm", h, d)),
              ("seqgraph PeepholeLSTM", lambda h, d: seqgraph_step("PeepholeLSTM", h, d)),
              ("seqgraph GateLSTM", lambda h, d: seqgraph_step("GateLSTM", h, d)),
              ("torch eager peephole cell", lambda h, d: torch_cell_step("peephole", h, d))],
}


def make_data():
    """The benchmark's inputs and targets, the same in every process."""
    import numpy

    rng = numpy.random.default_rng(0)
    return (rng.normal(size=(STEPS, BATCH, INPUTS)).astype("float32"),
            rng.integers(0, CLASSES, size=(STEPS, BATCH)))


class Baseline:
    """A seqgraph contestant from another revision's ``tree``, in a process of its own that
    imports that tree's seqgraph and runs this file's training step on it (``--serve``);
    :meth:`timed` asks it for one step after an untimed one."""

    def __init__(self, tree: Path, cell: str, hidden: int, warmup: int, repeat: int = 1):
        path = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", cell, str(hidden), str(warmup)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env={**os.environ, "PYTHONPATH": path})
        ready, compile_s, where = self.process.stdout.readline().split()
        if ready != "ready" or not Path(where).resolve().is_relative_to(tree.resolve()):
            raise RuntimeError(f"the baseline did not load from {tree}: {where}")
        self.compile_s = float(compile_s)
        self.repeat = repeat

    def timed(self) -> float:
        """The least seconds of ``repeat`` training steps, after one untimed step."""
        self.process.stdin.write(f"{self.repeat}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def cpu_ticks(self) -> int:
        """The CPU time its process has used (user and system), in clock ticks."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def close(self) -> None:
        """End the process."""
        self.process.stdin.close()
        self.process.wait(timeout=60)


def serve(cell: str, hidden: int, warmup: int) -> None:
    """The baseline's side of :class:`Baseline`: a step of this checkout's model on the
    seqgraph found first on the path, timed each time a line asks."""
    import seqgraph

    step, compile_s, _ = seqgraph_step(cell, hidden, make_data())
    for _ in range(warmup):
        step()
    print("ready", compile_s, Path(seqgraph.__file__).parent, flush=True)
    for line in sys.stdin:
        print(timer(step, int(line))(), flush=True)


def timer(step, repeat: int = 1):
    """A function giving the least seconds of ``repeat`` calls of ``step()``, after one
    untimed call: each is timed as in its own training loop, step after step."""
    def timed() -> float:
        step()
        return min(_seconds(step) for _ in range(repeat))
    return timed


def twin(name: str, revision: str) -> str:
    """The name of a seqgraph contestant's baseline twin."""
    return f"{name} @ {revision}"


def contestants(kind: str, args) -> list:
    """``(name, maker)`` of each contestant of a row; with ``--against``, each seqgraph one
    followed by its baseline twin, and the eager PyTorch loops left out."""
    if not args.against:
        return CONTESTANTS[kind]
    chosen = []
    for name, make in CONTESTANTS[kind]:
        if name.startswith("seqgraph"):
            cell = name.split()[1]
            chosen += [(name, make), (twin(name, args.against),
                                      lambda h, d, c=cell: Baseline(Path(args.baseline_tree), c, h, args.warmup, args.repeat))]
        elif "eager" not in name:
            chosen.append((name, make))
    return chosen


# --- measuring ---------------------------------------------------------------------------------

def busy_jiffies() -> int:
    """CPU time all processes on the machine have used, in clock ticks (from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields[:8]) - idle


def own_jiffies(baselines=()) -> float:
    """CPU time this process and its ``baselines``' processes have used, in clock ticks."""
    times = os.times()
    return (times.user + times.system) * os.sysconf("SC_CLK_TCK") + sum(b.cpu_ticks() for b in baselines)


@dataclass
class Round:
    """One round: a time per contestant, the 1-minute load average before it, and the share
    of the machine's CPUs that other processes used while it ran."""
    times: dict
    load: float
    others: float


@dataclass
class Config:
    """One table row: a kind of model at one hidden size."""
    kind: str
    hidden: int
    rounds: list = field(default_factory=list)
    compile_s: dict = field(default_factory=dict)
    peak_mib: dict = field(default_factory=dict)
    flops: float = 0.0

    def kept(self, limit: float) -> list:
        """The rounds taken while other processes used at most ``limit`` of the CPUs."""
        return [r for r in self.rounds if r.others <= limit]

    def median(self, name: str, limit: float) -> float:
        """The median time of one contestant over the kept rounds (all rounds if none kept)."""
        rounds = self.kept(limit) or self.rounds
        return statistics.median(r.times[name] for r in rounds)


def measure_config(kind: str, hidden: int, args) -> Config:
    data = make_data()
    config = Config(kind, hidden)
    timers, baselines = {}, []
    for name, make in contestants(kind, args):
        made = make(hidden, data)
        if isinstance(made, Baseline):
            baselines.append(made)
            config.compile_s[name] = made.compile_s
            timers[name] = made.timed
            continue
        if name.startswith("seqgraph"):
            step, config.compile_s[name], net = made
            if not config.flops:
                from seqgraph.bench import product_flops
                config.flops = 3 * product_flops(net.program.graph, BATCH, STEPS)
        else:
            step = made
        timers[name] = timer(step, args.repeat)
        for _ in range(args.warmup):
            step()
    names = list(timers)
    deadline = time.monotonic() + args.budget
    while True:
        order = names if len(config.rounds) % 2 == 0 else names[::-1]
        load = os.getloadavg()[0]
        start_busy, start_own, start = busy_jiffies(), own_jiffies(baselines), time.perf_counter()
        times = {}
        for name in order:
            # the other library's idle threads spin for a while after its step: rest until they
            # stop (the timer runs one untimed step before the timed one)
            time.sleep(args.rest)
            times[name] = timers[name]()
        wall = time.perf_counter() - start
        ticks = wall * os.sysconf("SC_CLK_TCK") * os.cpu_count()
        others = max(0.0, (busy_jiffies() - start_busy) - (own_jiffies(baselines) - start_own)) / ticks
        config.rounds.append(Round(times, load, others))
        kept = len(config.kept(args.max_others))
        if kept >= args.rounds or (time.monotonic() > deadline and len(config.rounds) >= args.rounds):
            break
        if config.rounds[-1].others > args.max_others:
            time.sleep(1.0)  # let the other work pass, then redo the round
    for baseline in baselines:
        baseline.close()
    for name, _ in CONTESTANTS[kind] if not args.against else ():
        config.peak_mib[name] = peak_in_subprocess(kind, hidden, name, args.threads)
    return config


def peak_in_subprocess(kind: str, hidden: int, name: str, threads: int) -> float:
    """Peak resident memory of two training steps beyond what setting up held, measured in a
    fresh process (the kernel's high-water mark, reset just before the steps)."""
    command = [sys.executable, __file__, "--threads", str(threads), "--probe", kind, str(hidden), name]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def probe(kind: str, hidden: int, name: str) -> None:
    """Print the peak memory of two training steps of one contestant, in MiB."""
    import gc

    made = dict(CONTESTANTS[kind])[name](hidden, make_data())
    step = made[0] if isinstance(made, tuple) else made
    warm_up_libraries()
    gc.collect()
    held = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    step()
    step()
    print((_status_kib("VmHWM") - held) / 1024)


def warm_up_libraries() -> None:
    """One small product in each library, so that loading their code and starting their
    thread pools is not counted as a training step's memory (both are loaded in any process
    that trains; the model's own arrays are not made here)."""
    import numpy
    import torch

    from seqgraph.backends.numpy_backend import NumpyBackend
    xp = NumpyBackend().xp
    small = numpy.ones((BATCH, 64), dtype=numpy.float32)
    xp.matmul(small, small.T)
    if hasattr(xp, "pack"):
        xp.dot(small, xp.pack(small.T, BATCH), numpy.empty((BATCH, BATCH), dtype=numpy.float32))
    torch.ones(BATCH, 64) @ torch.ones(64, BATCH)


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def matmul_peak(repeats: int = 5) -> dict:
    """The float32 matrix-product rate (GFLOP/s, best of ``repeats``) of seqgraph's products
    (NumPy's BLAS, or MKL where installed) and of PyTorch, on 2048 x 2048 matrices."""
    import numpy
    import torch

    from seqgraph.backends.numpy_backend import NumpyBackend
    xp = NumpyBackend().xp

    n = 2048
    a = numpy.random.default_rng(0).random((n, n), dtype=numpy.float32)
    rates = {}
    for name, product in (("numpy", lambda: xp.matmul(a, a)),
                          ("torch", lambda t=torch.from_numpy(a): t @ t)):
        product()
        best = min(_seconds(product) for _ in range(repeats))
        rates[name] = 2 * n ** 3 / best / 1e9
    return rates


def example_compile_times() -> dict:
    """Median compile time (graph passes and code generation, of 3) of every model in models/."""
    import seqgraph as sg
    from seqgraph.compiler import compile_program

    times = {}
    for path in sorted((ROOT / "models").glob("*.sg")):
        for name, model in sg.load(path).models.items():
            runs = []
            for _ in range(3):
                start = time.perf_counter()
                compile_program(model.graph, model.checked)
                runs.append(time.perf_counter() - start)
            times[f"{path.name}: {name}"] = statistics.median(runs)
    return times


def step_product_rates(sizes, repeats: int = 200) -> dict:
    """The float32 rate (GFLOP/s) of one step's recurrent product, ``(32, H) @ (H, 4H)``, in
    NumPy's BLAS, in seqgraph's step loop (packed by MKL where it is installed) and in
    PyTorch: the product a recurrent layer cannot batch over time."""
    import numpy
    import torch

    from seqgraph.backends.numpy_backend import NumpyBackend
    xp = NumpyBackend().xp
    pack = getattr(xp, "pack", lambda weight, rows: numpy.ascontiguousarray(weight))

    rng = numpy.random.default_rng(0)
    rates = {}
    for hidden in sizes:
        h = rng.random((BATCH, hidden), dtype=numpy.float32)
        w = rng.random((hidden, 4 * hidden), dtype=numpy.float32)
        out = numpy.empty((BATCH, 4 * hidden), dtype=numpy.float32)
        th, tw, tout = (torch.from_numpy(a) for a in (h, w, out))
        for name, product in (("numpy", lambda: numpy.dot(h, w, out)),
                              ("seqgraph", lambda packed=pack(w, BATCH): xp.dot(h, packed, out)),
                              ("torch", lambda: torch.mm(th, tw, out=tout))):
            product()
            best = min(_seconds(product) for _ in range(repeats))
            rates[name, hidden] = 2 * BATCH * hidden * 4 * hidden / best / 1e9
    return rates


def _seconds(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


# --- the report -----------------------------------------------------------------------------

def machine() -> dict:
    """The CPU, core count, BLAS and versions, for the report."""
    import numpy
    import torch

    import seqgraph

    from seqgraph.backends.native import cpu_identity
    from seqgraph.backends.numpy_backend import NumpyBackend

    identity = cpu_identity()
    blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]
    torch_blas = "MKL" if torch.backends.mkl.is_available() else "unknown"
    backend = NumpyBackend()
    products, step = backend.products, "numpy"
    if products == "MKL":
        step = backend.xp.step_products()
        products = (f"MKL {importlib.metadata.version('mkl')}; a step's recurrent product by {STEP_KERNELS[step]}; "
                    f"the products batched over time by {BATCHED_LIBRARIES[backend.xp.batched_products()]}")
    return {"products": products, "step": step, "cpu": identity["name"] or platform.processor(),
            "vendor": identity["vendor"],
            "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": numpy.__version__, "blas": f"{blas.get('name')} {blas.get('version')}{openblas_core()}",
            "torch": torch.__version__, "torch_blas": torch_blas, "seqgraph": seqgraph.__version__
            if hasattr(seqgraph, "__version__") else "checkout"}


def openblas_core() -> str:
    """`` (<kernels> kernels)`` of the OpenBLAS NumPy loaded, with ``OPENBLAS_CORETYPE`` where
    that is set (it picks slower kernels than the CPU's own); empty where not found."""
    import ctypes

    from seqgraph.backends.openblas import numpy_library_path

    path = numpy_library_path()
    if path is None:
        return ""
    library = ctypes.CDLL(path)
    name = next((n for n in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                             "openblas_get_corename") if hasattr(library, n)), None)
    if name is None:
        return ""
    getattr(library, name).restype = ctypes.c_char_p
    asked = os.environ.get("OPENBLAS_CORETYPE")
    return f" ({getattr(library, name)().decode()} kernels" + (f", OPENBLAS_CORETYPE={asked})" if asked else ")")


@dataclass
class Result:
    """Everything one thread setting measured (one child process)."""
    threads: int
    configs: list
    peaks: dict
    step_rates: dict
    elapsed: float

    def to_json(self) -> str:
        return json.dumps({"threads": self.threads, "peaks": self.peaks, "elapsed": self.elapsed,
                           "step_rates": {f"{k[0]}/{k[1]}": v for k, v in self.step_rates.items()},
                           "configs": [asdict(c) for c in self.configs]})

    @staticmethod
    def from_json(text: str) -> "Result":
        data = json.loads(text)
        configs = [Config(c["kind"], c["hidden"], [Round(**r) for r in c["rounds"]], c["compile_s"],
                          c["peak_mib"], c["flops"]) for c in data["configs"]]
        rates = {(k.split("/")[0], int(k.split("/")[1])): v for k, v in data["step_rates"].items()}
        return Result(data["threads"], configs, data["peaks"], rates, data["elapsed"])


def measure_all(args) -> Result:
    """Every row at the thread limit this process was started with."""
    start = time.perf_counter()
    peaks = matmul_peak()
    configs = []
    for kind in args.kinds.split(","):
        for hidden in (int(h) for h in args.sizes.split(",")):
            config = measure_config(kind, hidden, args)
            configs.append(config)
            print(f"{args.threads} threads, {kind} {hidden}: " + ", ".join(
                f"{n} {config.median(n, args.max_others) * 1e3:.1f} ms" for n in config.rounds[0].times),
                file=sys.stderr, flush=True)
    after = matmul_peak()
    peaks = {k: max(peaks[k], after[k]) for k in peaks}
    rates = step_product_rates(sorted({c.hidden for c in configs}))
    return Result(int(args.threads), configs, peaks, rates, time.perf_counter() - start)


def _kept_stats(config: Config, limit: float) -> str:
    kept = config.kept(limit) or config.rounds
    loads = [r.load for r in kept]
    return (f"{min(loads):.2f}-{max(loads):.2f} | {statistics.median(r.others for r in kept):.0%} | "
            f"{len(config.kept(limit))} of {len(config.rounds)}")


def _module_tables(result: Result, limit: float, verdicts: list) -> list:
    lines = []
    for kind, title, reference in (("lstm", "LSTM", "torch nn.LSTM"), ("gru", "GRU", "torch nn.GRU")):
        rows = [c for c in result.configs if c.kind == kind]
        if not rows:
            continue
        names = [n for n, _ in CONTESTANTS[kind]]
        ours = names[0]
        lines += [f"#### {title}", "",
                  "| hidden | " + " | ".join(f"{n} (ms)" for n in names) +
                  f" | seqgraph / {reference.split()[1]} | seqgraph GFLOP/s (% of peak) | compile (ms) "
                  f"| peak memory seqgraph / torch (MiB) | load (1-min) | others' CPU share | rounds kept |",
                  "|" + "---|" * (len(names) + 8)]
        for c in rows:
            times = {n: c.median(n, limit) for n in names}
            ratio = times[ours] / times[reference]
            rate = c.flops / times[ours] / 1e9
            lines.append(f"| {c.hidden} | " + " | ".join(f"{times[n] * 1e3:.1f}" for n in names) +
                         f" | {ratio:.2f} | {rate:.1f} ({rate / result.peaks['numpy']:.0%}) | "
                         f"{c.compile_s[ours] * 1e3:.0f} | {c.peak_mib[ours]:.1f} / {c.peak_mib[reference]:.1f} | "
                         f"{_kept_stats(c, limit)} |")
            verdicts.append((f"{title} at hidden {c.hidden}: seqgraph {times[ours] * 1e3:.1f} ms vs "
                             f"{reference} {times[reference] * 1e3:.1f} ms", ratio <= 1.0,
                             f"{1 - ratio:.0%} less time" if ratio <= 1 else f"{ratio:.2f}x its time"))
            verdicts.append((f"{title} at hidden {c.hidden}: peak memory {c.peak_mib[ours]:.1f} MiB vs "
                             f"{c.peak_mib[reference]:.1f} MiB", c.peak_mib[ours] < c.peak_mib[reference], ""))
        lines.append("")
    return lines


def _cell_table(result: Result, limit: float, verdicts: list) -> list:
    rows = [c for c in result.configs if c.kind == "cells"]
    if not rows:
        return []
    names = [n for n, _ in CONTESTANTS["cells"]]
    lines = ["#### User-written cells against the built-in lstm", "",
             "| hidden | " + " | ".join(f"{n} (ms)" for n in names) +
             " | Peephole / lstm | GateLSTM / lstm | compile lstm / Peephole / GateLSTM (ms) "
             "| peak memory (MiB) | load (1-min) | others' CPU share | rounds kept |",
             "|" + "---|" * (len(names) + 8)]
    for c in rows:
        times = {n: c.median(n, limit) for n in names}
        base = times[names[0]]
        lines.append(f"| {c.hidden} | " + " | ".join(f"{times[n] * 1e3:.1f}" for n in names) +
                     f" | {times[names[1]] / base:.2f} | {times[names[2]] / base:.2f} | " +
                     " / ".join(f"{c.compile_s[n] * 1e3:.0f}" for n in names[:3]) + " | " +
                     " / ".join(f"{c.peak_mib[n]:.1f}" for n in names) + f" | {_kept_stats(c, limit)} |")
        for n in names[1:3]:
            ratio = times[n] / base
            verdicts.append((f"{n.split()[1]} at hidden {c.hidden}: {ratio:.2f}x the built-in lstm's time",
                             ratio <= 1.15, ""))
    return lines + [""]


BATCHED_LIBRARIES = {"mkl": "MKL", "openblas": "NumPy's OpenBLAS, one block per thread of MKL's pool"}
STEP_KERNELS = {"mkl": "MKL (the weight packed once per pass)",
                "avx512": "seqgraph's AVX-512 panel kernel (the weight copied into panels once per pass)",
                "numpy": "NumPy"}

# what was measured of where the time goes, per CPU vendor and choice of the step's product
TIME_SPLIT = {
    ("GenuineIntel", "mkl"): "- Where the time goes at hidden 128 (2 threads; py-spy samples of the training loop): "
    "the two recurrent loops about a third (per step and thread about 16 us of product and "
    "5 us of chains forward), the products batched over time about two fifths (the recurrent "
    "weight's gradient the largest), the loss, the weights' packing, the bias column and "
    "Python the rest. At 256 and 512 each thread's per-step products run near one core's "
    "MKL rate and dominate. With 1 thread nothing is shared and both libraries are bound by "
    "the same products: at hidden 256 seqgraph's step took 0.90-1.13x PyTorch's over six "
    "full runs.",
    ("AuthenticAMD", "avx512"): "- Why a kernel of its own here: MKL takes its generic code path on this CPU "
    "(`libmkl_def`, kernel `sgemm_kernel_0_zen`, by `perf`), and its packed GEMM ran a "
    "step's `(16, H) @ (H, 4H)` at 49-76 GFLOP/s on one core, seqgraph's panel kernel at "
    "75-110 and oneDNN's `dnnl_sgemm` (the kernels of PyTorch's `nn.LSTM`) at 97-99; "
    "OpenBLAS (NumPy's) 59-84, BLIS from PyPI (generic build) 21-32, AOCL-BLAS (inside "
    "`aoclda`) 69-110. At hidden 256 (timed around each call) the step loops and the "
    "products batched over time took about half of seqgraph's step each, with 1 thread "
    "and with 2. Those products run on OpenBLAS's kernels, each cut into one block per "
    "thread of MKL's pool (OpenBLAS's own pool, spinning beside MKL's, made the step 1.26x "
    "as long with 2 threads): timed alternately against MKL's products in one process, "
    "the LSTM step took 0.90-0.93 of the time at hidden 128 and 256. The wide ones run on "
    "the panel kernel, shared out the same way: input projections for 0.95-1.01 of the "
    "step's time, and the input and recurrent weights' gradients, whose transposed left "
    "operand the kernel reads where it lies, for 0.92-0.94 at hidden 128 and 256 with 1 "
    "thread and with 2 (docs/compiler.md).",
}


def reading(info: dict) -> list:
    """The notes under the tables, for the step products this machine ran on."""
    return [
    "### Reading the numbers", "",
    "- How a step runs: each recurrent loop is one native call per pass (the step program "
    "lowered to a tape of instructions a C function runs), and each step in it one matrix "
    f"product by {STEP_KERNELS[info['step']]} and one loop per fused elementwise "
    "chain: for the LSTM the product accumulates straight into the input projection's row, "
    "then two loops forward; backward one product, an add, a copy and two loops. With more "
    "than one thread the batch's rows are shared out: each thread runs every step of the loop "
    "on its own 16 rows, its products on one thread, and nothing waits between steps. "
    "`nn.LSTM` runs one product over both threads and one fused oneDNN kernel per step. The "
    "products that can be batched over time (input projections, output layer, every weight "
    "gradient) run as single large products.",
    *([TIME_SPLIT[info['vendor'], info['step']]] if (info['vendor'], info['step']) in TIME_SPLIT else []),
    "- Peak memory: the LSTM's input projection holds its pre-activations and then their "
    "gradient (no scan buffer for either), values one op recomputes (tanh(c), 1 - z) are not "
    "kept, and a scan repacks its weights into the same buffer every pass.",
    "- PyTorch's GRU is less tuned than its LSTM on the CPU, which is where seqgraph's GRU, "
    "compiled from the same kind of `.sg` cell, draws well ahead.",
    "- The eager PyTorch loop over the same cell is what a new cell gets without a compiler; "
    "seqgraph's user cells (peephole, gate by gate) compile to the built-in lstm's loop.",
    "- Figures move between runs on this shared virtual machine (up to about 30% for the same "
    "row in two full runs an hour apart); within a row the contestants alternate round by "
    "round, so their ratios are steadier than their times.",
]


def write_report(path: Path, results: list, info: dict, args, elapsed: float, compile_times: dict) -> str:
    limit = args.max_others
    lines = [f"## {info['cpu']} ({info['vendor']}), {info['cores']} cores", "",
             "Written by `python benchmarks/cpu_vs_torch.py` on this machine (do not edit by hand; rerun it).", "",
             "One **training step** of a one-layer recurrent language model: forward over all 64 steps, "
             "a dense projection to 65 classes and the mean cross-entropy at every step, backward "
             "through time, an SGD update. Batch 32, 64 inputs per step, float32. Times are medians "
             "over rounds; in each round every contestant runs once, and the order alternates "
             "from round to round.", "",
             "### The machine", "",
             f"- CPU: {info['cpu']} (vendor {info['vendor']}), {info['cores']} cores",
             f"- seqgraph on NumPy {info['numpy']} with {info['blas']}, matrix products by "
             f"{info['products']}; PyTorch {info['torch']} "
             f"({info['torch_blas']}); Python {info['python']}",
             "- threads: the same limit for both (`OMP_NUM_THREADS`, `OPENBLAS_NUM_THREADS`, "
             "`MKL_NUM_THREADS` and `torch.set_num_threads`), each limit measured in its own "
             "process: " + ", ".join(str(r.threads) for r in results) + ".",
             "- the machine is shared with other work. Before each round the 1-minute load "
             "average is read, and while it runs the share of all CPUs used by *other* "
             f"processes (from /proc/stat, less this process's own CPU time). Rounds where others "
             f"used more than {limit:.0%} were dropped and redone (up to {args.budget:.0f} s per "
             "row, after which all rounds count, as the `rounds kept` column shows); the tables "
             "give the load beside each figure.",
             f"- each timed step comes after {args.rest:g} s of rest and one untimed step of the "
             "same contestant, so each library is timed as in its own training loop: after a "
             "step a library's idle threads keep spinning for a while (OpenBLAS's for about "
             "0.1 s), and the next contestant would pay for it. Measured here with 2 threads "
             "and no rest, seqgraph's LSTM step at hidden 128 took 1.3x as long right after "
             "PyTorch's, and PyTorch's about 2x as long right after seqgraph's.",
             f"- the whole run took {elapsed:.0f} s.", ""]
    verdict_sections = []
    for result in results:
        verdicts = []
        rates = result.step_rates
        lines += [f"### {result.threads} thread{'s' if result.threads > 1 else ''}", "",
                  f"Float32 2048x2048 matrix-product peak in this run: seqgraph's products "
                  f"{result.peaks['numpy']:.0f} GFLOP/s, PyTorch {result.peaks['torch']:.0f} GFLOP/s "
                  "(*% of peak* is the step's matrix-product work over its time, over seqgraph's "
                  "peak). The one product per step "
                  "no compiler can batch over time, `(32, H) @ (H, 4H)`, runs at (GFLOP/s, best of "
                  "200) " + ", ".join(f"H={h}: NumPy {rates['numpy', h]:.0f}, seqgraph's step loop "
                                      f"{rates['seqgraph', h]:.0f}, PyTorch {rates['torch', h]:.0f}"
                                      for h in sorted({h for _, h in rates})) + ".", ""]
        lines += _module_tables(result, limit, verdicts)
        lines += _cell_table(result, limit, verdicts)
        verdict_sections.append((result.threads, verdicts))
    lines += ["### Compile time of the example models", "",
              "Graph passes and code generation (`compile_program`), median of 3. It does not "
              "depend on the number of steps: the program is made from the folded graph "
              "(`tests/compiler/test_program.py` checks that 10 and 1000 steps give the same "
              "program).", "", "| model | compile (ms) |", "|---|---|"]
    lines += [f"| {name} | {seconds * 1e3:.0f} |" for name, seconds in compile_times.items()]
    slowest = max(compile_times.values())
    lines += ["", "### Targets", "", "Aim: seqgraph's step at least as fast as PyTorch's module (20% "
              "less time is the goal), user cells within 15% of the built-in lstm, lower peak memory, "
              "compile time under half a second.", "",
              f"- {'met' if slowest < 0.5 else '**not met**'}: compile time of every example model "
              f"under 0.5 s (slowest {slowest * 1e3:.0f} ms)"]
    for threads, verdicts in verdict_sections:
        lines += ["", f"With {threads} thread{'s' if threads > 1 else ''}:", ""]
        for text, met, note in verdicts:
            lines.append(f"- {'met' if met else '**not met**'}: {text}" + (f" ({note})" if note else ""))
    lines += [""] + reading(info)
    lines += ["", "### How it is measured", "",
              "- seqgraph: `seqgraph.compile(model, dtype='float32')`, then per step "
              "`forward`, `backward`, `params -= lr * grads` (`seqgraph.bench.training_step`). "
              "Compile time is `compile_program` (graph passes and code generation), median of 3.",
              "- PyTorch: the module (or the eager loop), `nn.Linear`, `F.cross_entropy`, "
              "`torch.optim.SGD`, `zero_grad(set_to_none=True)`. Neither computes the input's "
              "gradient: the input does not require one in PyTorch, and seqgraph's step asks "
              "`backward(wrt=params)`.",
              "- GFLOP/s counts the matrix products only (2 flops per multiply-add, three "
              "products per forward product in a training step).",
              "- Peak memory: a fresh process per contestant sets up the model and data, runs one "
              "small product in each library (so that loading their code and starting their "
              "threads is not counted), resets the kernel's resident-memory high-water mark, runs "
              "two training steps, and reports the high-water mark less the memory held before "
              "the steps.",
              f"- Rounds: {args.rounds} kept per row after {args.warmup} warm-up steps per contestant"
              + (f"; in each round a contestant ran {args.repeat} timed steps in a row, the least kept."
                 if args.repeat > 1 else "."), ""]
    text = "\n".join(lines)
    write_section(path, text, machine_markers(info))
    return text


def machine_markers(info: dict, part: str = "") -> tuple:
    """The markers around this machine's section of the report: a run replaces only the
    section of the CPU it ran on (vendor and model name), and adds one for a new CPU.
    ``part``: a further section of that machine's (``against``, the comparison)."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"{info['vendor']} {info['cpu']}".lower()).strip("-") + \
        (f" {part}" if part else "")
    return f"<!-- cpu_vs_torch.py {slug}: start -->", f"<!-- cpu_vs_torch.py {slug}: end -->"


def paired(config: Config, name: str, other: str, limit: float) -> float:
    """The median over the kept rounds of ``name``'s time over ``other``'s in the same round."""
    rounds = config.kept(limit) or config.rounds
    return statistics.median(r.times[name] / r.times[other] for r in rounds)


# Within a row the reference each seqgraph contestant's ratio is taken to (the user cells: the
# built-in lstm of the same revision), and how far a ratio may grow on the baseline's.
REFERENCES = {"lstm": "torch nn.LSTM", "gru": "torch nn.GRU", "cells": "seqgraph lstm"}
TOLERANCE = 1.03


def comparison(results: list, info: dict, args, elapsed: float) -> str:
    """The report of a run ``--against`` a revision: per row and seqgraph contestant, its time
    and its twin's, and its ratio to the row's reference beside the twin's."""
    revision, limit = args.against, args.max_others
    lines = [f"## {info['cpu']} ({info['vendor']}): this checkout against {revision}", "",
             f"Written by `python benchmarks/cpu_vs_torch.py --against {revision}` on this machine "
             "(do not edit by hand; rerun it). The training step of this machine's section, each "
             f"seqgraph contestant beside its twin from {revision}'s tree (in a process of its "
             "own), the order alternating round by round. *Ratio* is a contestant's time over the "
             "row's reference in the same round (PyTorch's module; for the user cells the built-in "
             "lstm of the same revision), the median over rounds. The verdict asks that each "
             f"contestant's time be at most {TOLERANCE:.2f} times its twin's in the same round "
             "(the median of those quotients, *this / REV*): then each of its ratios is within "
             "that much of the twin's, without the reference's own spread from round to round.", "",
             f"- CPU: {info['cpu']} (vendor {info['vendor']}), {info['cores']} cores; products by "
             f"{info['products']}; rounds where other processes used more than {limit:.0%} of "
             f"the CPUs were redone; {args.rounds} kept per row"
             + (f", each contestant timed over {args.repeat} steps in a row per round, the least kept"
                if args.repeat > 1 else "") + f"; the whole run took {elapsed:.0f} s.", ""]
    verdicts = []
    for result in results:
        lines += [f"### {result.threads} thread{'s' if result.threads > 1 else ''}", "",
                  f"| row | contestant | this checkout (ms) | {revision} (ms) | this / {revision} "
                  f"| ratio here | ratio at {revision} | load (1-min) | others' CPU share | rounds kept |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for c in result.configs:
            reference = REFERENCES[c.kind]
            for name in (n for n in c.rounds[0].times if n.startswith("seqgraph") and "@" not in n):
                old = twin(name, revision)
                quotient = paired(c, name, old, limit)
                ratios = ("—", "—")
                if name != reference:
                    old_reference = twin(reference, revision) if reference.startswith("seqgraph") else reference
                    ratios = (f"{paired(c, name, reference, limit):.2f}", f"{paired(c, old, old_reference, limit):.2f}")
                verdicts.append((f"{c.kind} {c.hidden}, {result.threads} thread{'s' if result.threads > 1 else ''}, "
                                 f"{name}: {quotient:.2f}x its time at {revision}", quotient <= TOLERANCE))
                lines.append(f"| {c.kind} {c.hidden} | {name} | {c.median(name, limit) * 1e3:.1f} | "
                             f"{c.median(old, limit) * 1e3:.1f} | {quotient:.2f} | {ratios[0]} | {ratios[1]} | "
                             f"{_kept_stats(c, limit)} |")
        lines.append("")
    lines += ["### Verdicts", ""] + [f"- {'met' if met else '**not met**'}: {text}" for text, met in verdicts]
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str, markers: tuple) -> None:
    """Put ``text`` between the two ``markers`` in ``path``, leaving the rest of the file
    alone (each benchmark script owns its own section of docs/benchmarks.md); appended when
    the markers are not there yet."""
    start, end = markers
    section = f"{start}\n{text.strip()}\n{end}\n"
    old = path.read_text() if path.exists() else ""
    if start in old and end in old:
        before, rest = old.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        new = before + section + ("\n" + after if after else "")
    else:
        new = old + ("\n" if old and not old.endswith("\n") else "") + ("\n" if old else "") + section
    path.write_text(new)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="2,1",
                        help="thread limits to measure, each in its own process (2,1)")
    parser.add_argument("--rounds", type=int, default=9, help="rounds kept per row (9)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--sizes", default="128,256,512")
    parser.add_argument("--kinds", default="lstm,gru,cells")
    parser.add_argument("--max-others", type=float, default=0.10,
                        help="drop a round when other processes used more than this share of the CPUs")
    parser.add_argument("--budget", type=float, default=25.0,
                        help="seconds per row after which rounds are kept whatever the load")
    parser.add_argument("--rest", type=float, default=0.2,
                        help="seconds of rest before each contestant's steps (0.2)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--results", metavar="DIR",
                        help="keep each thread limit's measurements here as THREADS.json")
    parser.add_argument("--report-only", action="store_true",
                        help="write the report from the measurements in --results, measuring nothing")
    parser.add_argument("--repeat", type=int, default=1,
                        help="time each contestant this many steps in a row per round, keeping the least (1)")
    parser.add_argument("--against", metavar="REV",
                        help="time each seqgraph contestant beside its twin from git revision REV, "
                             "and write that comparison instead of the tables")
    parser.add_argument("--json", help=argparse.SUPPRESS)
    parser.add_argument("--probe", nargs=3, metavar=("KIND", "HIDDEN", "NAME"), help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs=3, metavar=("CELL", "HIDDEN", "WARMUP"), help=argparse.SUPPRESS)
    parser.add_argument("--baseline-tree", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    counts = [int(n) for n in str(args.threads).split(",")]
    if args.report_only and not args.results:
        parser.error("--report-only needs --results DIR")
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), int(args.serve[2]))
        return 0
    if args.json or args.probe:
        (args.threads,) = counts
        limit_threads(args.threads)
        import torch
        torch.set_num_threads(args.threads)
        if args.probe:
            probe(args.probe[0], int(args.probe[1]), args.probe[2])
        else:
            Path(args.json).write_text(measure_all(args).to_json())
        return 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.results or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        child = list(argv if argv is not None else sys.argv[1:])
        if args.against and not args.report_only:
            child += ["--baseline-tree", str(export_tree(args.against, Path(scratch) / "baseline"))]
        if not args.report_only:
            for count in counts:
                subprocess.run([sys.executable, __file__, *child, "--threads", str(count), "--json",
                                str(folder / f"{count}.json")], check=True)
        results = [Result.from_json((folder / f"{count}.json").read_text()) for count in counts]
    elapsed = sum(r.elapsed for r in results) if args.report_only else time.perf_counter() - start
    info = machine()
    if args.against:
        text = comparison(results, info, args, elapsed)
        write_section(Path(args.out), text, machine_markers(info, "against"))
    else:
        text = write_report(Path(args.out), results, info, args, elapsed, example_compile_times())
    print(text)
    return 0


def export_tree(revision: str, folder: Path) -> Path:
    """The files of git ``revision`` of this repository, written under ``folder``."""
    import io
    import tarfile

    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", revision],
                             capture_output=True, check=True).stdout
    folder.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return folder


if __name__ == "__main__":
    sys.exit(main())
