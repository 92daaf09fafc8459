"""Timing a compiled model: what ``seqgraph bench`` measures and prints.

For one model at one shape (batch, steps, dtype) it measures

- **compile time**: the graph passes and the code generation of :func:`compile_program`;
- **forward** and **training step** times, the median of many runs after warm-up runs (a
  training step is forward, backward through time and a plain SGD update of every
  parameter in place);
- **achieved GFLOP/s**: the model's matrix-product work (two flops per multiply-add; a
  training step counts each product three times, forward and its two gradient products)
  divided by the median time;
- **peak memory**: the most array memory held at once during one training step beyond what
  was held before it (NumPy reports its allocations to :mod:`tracemalloc`).
"""

from __future__ import annotations

import os
import statistics
import time
import tracemalloc
from dataclasses import dataclass

from .backends import DEFAULT_BACKEND
from .compiler import compile_program
from .errors import SeqgraphError
from .gradcheck import random_inputs
from .ir import node_of, nodes_of
from .runtime import compile_model


@dataclass
class Timing:
    """Seconds per run: every measured run, and their median."""
    runs: list

    @property
    def median(self) -> float:
        """The median run time in seconds."""
        return statistics.median(self.runs)


@dataclass
class BenchResult:
    """What one ``seqgraph bench`` measured."""
    model: str
    batch: int
    steps: int
    dtype: str
    compile_s: float
    forward: Timing
    train: Timing
    forward_flops: float
    peak_bytes: int
    products: str = "NumPy"

    def gflops(self, timing: Timing, training: bool) -> float:
        """Matrix-product GFLOP/s achieved at ``timing``'s median."""
        work = self.forward_flops * (3 if training else 1)
        return work / timing.median / 1e9


def product_flops(graph, batch: int, steps: int) -> float:
    """Flops of every matrix product in a folded ``graph`` for one forward pass."""
    total = 0.0
    for _, data in nodes_of(graph):
        if data.op not in ("matmul", "affine"):
            continue
        vtype = data.type
        rows, inner = node_of(graph, data.args[0]).shape
        count = (batch if vtype.batched else 1) * (steps if vtype.timed or vtype.is_seq else 1)
        total += 2.0 * rows * inner * count
    return total


def sgd_update(network, grads: dict, lr: float) -> None:
    """``p -= lr * grad`` for every parameter, in place."""
    xp = network.backend.xp
    for key, param in network.params.items():
        xp.subtract(param, lr * grads[key], out=param)


def training_step(network, inputs: dict, lengths=None, lr: float = 0.01) -> None:
    """One training step: forward, backward through time, SGD update."""
    network.forward(inputs, lengths, training=True)
    sgd_update(network, network.backward(wrt=list(network.params)), lr)


def bench_inputs(network, batch: int, steps: int, seed: int = 0):
    """Random inputs of the right shapes and dtype for ``network``'s model."""
    inputs, lengths = random_inputs(network.model, batch=batch, steps=steps, seed=seed)
    host = {k: v.astype(network.dtype) if v.dtype.kind == "f" else v for k, v in inputs.items()}
    return {k: network.backend.asarray(v) for k, v in host.items()}, lengths or None


def _timed(run, repeat: int, warmup: int, synchronize) -> Timing:
    for _ in range(warmup):
        run()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        synchronize()
        runs.append(time.perf_counter() - start)
    return Timing(runs)


def peak_memory(run) -> int:
    """Peak bytes allocated (by NumPy, through tracemalloc) while ``run()`` runs, beyond what
    was held when it started."""
    tracemalloc.start()
    try:
        held, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - held


def measure(model, batch: int = 32, steps: int = 64, dtype: str = "float32", repeat: int = 20,
            warmup: int = 3, backend: str = DEFAULT_BACKEND, seed: int = 0) -> BenchResult:
    """Compile ``model`` and time it at one shape (see the module docstring)."""
    if batch < 1 or steps < 1 or repeat < 1:
        raise SeqgraphError("batch, steps and repeat must be positive")
    start = time.perf_counter()
    compile_program(model.graph, model.checked)
    compile_s = time.perf_counter() - start
    network = compile_model(model, backend=backend, dtype=dtype, seed=seed)
    inputs, lengths = bench_inputs(network, batch, steps, seed)
    synchronize = network.backend.synchronize
    forward = _timed(lambda: network.forward(inputs, lengths), repeat, warmup, synchronize)
    if model.checked.loss is None:
        train = Timing([float("nan")])
        peak = peak_memory(lambda: network.forward(inputs, lengths))
    else:
        train = _timed(lambda: training_step(network, inputs, lengths), repeat, warmup, synchronize)
        peak = peak_memory(lambda: training_step(network, inputs, lengths))
    flops = product_flops(network.program.graph, batch, steps)
    products = network.backend.products or network.backend.name
    return BenchResult(model.name, batch, steps, dtype, compile_s, forward, train, flops, peak, products)


def threads_note() -> str:
    """The thread limits set in the environment (BLAS libraries read these at start-up)."""
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    given = [f"{name}={os.environ[name]}" for name in names if name in os.environ]
    return ", ".join(given) if given else "not limited (set OPENBLAS_NUM_THREADS to limit)"


PRODUCTS = {"MKL": "MKL (recurrent weights packed once per pass)", "NumPy": "NumPy's BLAS"}


def format_result(result: BenchResult) -> str:
    """The lines ``seqgraph bench`` prints."""
    def row(title, timing, training):
        runs = timing.runs
        return (f"  {title:<14}{timing.median * 1e3:9.2f} ms median of {len(runs)} "
                f"(min {min(runs) * 1e3:.2f}, max {max(runs) * 1e3:.2f})   "
                f"{result.gflops(timing, training):6.1f} GFLOP/s")
    lines = [f"model {result.model}: batch {result.batch}, {result.steps} steps, {result.dtype}",
             f"  {'compile':<14}{result.compile_s * 1e3:9.2f} ms (graph passes and code generation)",
             row("forward", result.forward, False)]
    if result.train.runs[0] == result.train.runs[0]:
        lines.append(row("training step", result.train, True))
    lines += [f"  {'peak memory':<14}{result.peak_bytes / 2 ** 20:9.2f} MiB (arrays held at once during "
              f"one {'training step' if result.train.runs[0] == result.train.runs[0] else 'forward'})",
              f"  matrix products: {result.forward_flops / 1e9:.3f} GFLOP per forward pass, run by "
              f"{PRODUCTS.get(result.products, result.products)}",
              f"  threads: {threads_note()}; load average {os.getloadavg()[0]:.2f}"]
    return "\n".join(lines) + "\n"
