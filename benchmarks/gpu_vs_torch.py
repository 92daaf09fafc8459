"""seqgraph against PyTorch on an NVIDIA GPU: one training step of a recurrent language model.

The step is the one ``benchmarks/cpu_vs_torch.py`` times on the CPU: forward over all 64
steps, a dense projection to 65 classes and the mean cross-entropy at every step, backward
through time, an SGD update (64 inputs per step, float32). Here at batch 32 and 128 and
hidden 256 and 1024, for an LSTM and a GRU. Contestants, timed in one run on one GPU, the
order rotating from round to round:

- seqgraph with the step captured as a CUDA graph (:mod:`seqgraph.backends.capture`), and
  the same step run plainly from Python (every kernel launched one by one);
- ``torch.nn.LSTM`` / ``torch.nn.GRU`` (cuDNN);
- an eager PyTorch loop over the same cell written by hand.

Every contestant's data is on the device before timing starts. seqgraph's step reads its loss
back every step (it reports it); PyTorch's do not, which favours PyTorch slightly. TF32 is
off for PyTorch (cuBLAS and cuDNN), as CuPy does not use it by default.

It writes its table into ``docs/benchmarks.md`` between the markers below, leaving the rest
of that file alone. It needs a CUDA GPU, CuPy (``pip install '.[gpu]'``) and a CUDA build of
PyTorch (``pip install '.[bench]'``); elsewhere it says what is missing and exits 1.

    python benchmarks/gpu_vs_torch.py [--rounds 7] [--block 10] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from cpu_vs_torch import (CLASSES, INPUTS, LR, STEPS, _gru_cell, _lstm_cell, seqgraph_source,  # noqa: E402
                          write_section)

BATCHES, HIDDEN = (32, 128), (256, 1024)
MARKERS = ("<!-- gpu_vs_torch.py: start -->", "<!-- gpu_vs_torch.py: end -->")
NAMES = ("seqgraph captured", "seqgraph uncaptured", "torch cuDNN", "torch eager cell")


def missing() -> str | None:
    """What this machine lacks for the benchmark, or None."""
    try:
        import torch
    except ImportError:
        return "PyTorch is not installed (pip install '.[bench]')"
    if not torch.cuda.is_available():
        return "PyTorch sees no CUDA GPU (a CPU-only build, or no GPU here)"
    import seqgraph as sg
    from seqgraph.backends import get_backend
    try:
        get_backend("cupy")
    except sg.SeqgraphError as error:
        return error.message
    return None


def host_data(batch: int, seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(STEPS, batch, INPUTS)).astype(np.float32)
    y = rng.integers(0, CLASSES, size=(STEPS, batch))
    return x, y


def seqgraph_steps(kind: str, hidden: int, data) -> tuple:
    """The captured and the uncaptured seqgraph step, each fed from device-resident data."""
    import seqgraph as sg
    from seqgraph.train.captured import TrainingStep
    from seqgraph.runtime import prepare_feed
    from seqgraph.train import optim

    model = sg.parse(seqgraph_source(kind, hidden)).model()
    steps = []
    for captured in (True, False):
        net = sg.compile(model, backend="cupy", dtype="float32", seed=0)
        step = TrainingStep(net, optim.SGD(lr=LR, xp=net.backend.xp))
        if not captured:
            step.capture.limit = 0  # every shape past the limit runs plainly
        feed = prepare_feed(model, net.backend, "float32", {"x": data[0], "y": data[1]}, training=True,
                            rng=net.rng)
        steps.append((lambda s=step, f=feed: s.step_feed(f), step))
    return steps


def torch_steps(kind: str, hidden: int, data) -> tuple:
    """The cuDNN module step and the eager hand-written cell step."""
    import torch
    device = torch.device("cuda")
    torch.manual_seed(0)
    x, y = (torch.from_numpy(a).to(device) for a in data)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](INPUTS, hidden).to(device)
    module_head = torch.nn.Linear(hidden, CLASSES).to(device)
    gates = {"lstm": 4, "gru": 3}[kind]
    scale = hidden ** -0.5
    weights = [torch.nn.Parameter(scale * torch.randn(gates * hidden, n, device=device)) for n in (INPUTS, hidden)]
    biases = [torch.nn.Parameter(torch.zeros(gates * hidden, device=device)) for _ in range(2)]
    cell_head = torch.nn.Linear(hidden, CLASSES).to(device)
    cell = {"lstm": _lstm_cell, "gru": _gru_cell}[kind]

    def eager(inputs):
        h = inputs.new_zeros(inputs.shape[1], hidden)
        c = inputs.new_zeros(inputs.shape[1], hidden)
        outputs = []
        for t in range(inputs.shape[0]):
            h, c = cell(inputs[t], h, c, *weights, *biases, None)
            outputs.append(h)
        return torch.stack(outputs)

    return (_torch_training(lambda inputs: module(inputs)[0], [*module.parameters(), *module_head.parameters()],
                            module_head, x, y),
            _torch_training(eager, [*weights, *biases, *cell_head.parameters()], cell_head, x, y))


def _torch_training(run, params, head, x, y):
    import torch
    optimizer = torch.optim.SGD(params, lr=LR)
    flat_y = y.reshape(-1)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(head(run(x)).reshape(-1, CLASSES), flat_y)
        loss.backward()
        optimizer.step()
    return step


def measure(kind: str, batch: int, hidden: int, rounds: int, block: int) -> dict:
    """Milliseconds per step of every contestant (median over rounds of ``block`` steps), and
    how seqgraph's captured step ran."""
    import cupy
    import torch
    data = host_data(batch)
    (captured, captured_step), (plain, _) = seqgraph_steps(kind, hidden, data)
    module, eager = torch_steps(kind, hidden, data)
    contestants = dict(zip(NAMES, (captured, plain, module, eager)))
    for run in contestants.values():  # warm-up: kernels compiled, the graph recorded
        for _ in range(3):
            run()
    times = {name: [] for name in NAMES}
    order = list(NAMES)
    for _ in range(rounds):
        for name in order:
            cupy.cuda.Device().synchronize()
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(block):
                contestants[name]()
            cupy.cuda.Device().synchronize()
            torch.cuda.synchronize()
            times[name].append((time.perf_counter() - start) / block * 1e3)
        order = order[1:] + order[:1]
    result = {name: statistics.median(values) for name, values in times.items()}
    result["how"] = captured_step.last if not captured_step.capture.reasons else \
        "plain: " + "; ".join(captured_step.capture.reasons.values())
    return result


def table(kind: str, rows: list) -> list:
    title = {"lstm": "LSTM", "gru": "GRU"}[kind]
    lines = [f"### {title}", "",
             "| batch | hidden | " + " | ".join(f"{n} (ms)" for n in NAMES)
             + " | captured / cuDNN | eager / captured |",
             "|---:|---:|" + "---:|" * (len(NAMES) + 2)]
    for batch, hidden, r in rows:
        cells = " | ".join(f"{r[n]:.2f}" for n in NAMES)
        lines.append(f"| {batch} | {hidden} | {cells} | {r[NAMES[0]] / r[NAMES[2]]:.2f}x "
                     f"| {r[NAMES[3]] / r[NAMES[0]]:.1f}x |")
    return lines + [""]


def section(results: dict, device: str, versions: str, rounds: int, block: int, elapsed: float) -> str:
    lines = ["## seqgraph against PyTorch on a GPU", "",
             "Written by `python benchmarks/gpu_vs_torch.py` (do not edit by hand; rerun it).", "",
             f"One training step of a one-layer recurrent language model (64 steps, 64 inputs per step, "
             f"a dense layer to 65 classes, cross-entropy, SGD), float32, on "
             f"**{device}** ({versions}). Milliseconds per step: the median over {rounds} rounds of "
             f"{block} steps, the order of the contestants rotating from round to round; the whole "
             f"run took {elapsed:.0f} s. *captured*: the step replayed as one CUDA graph; "
             f"*uncaptured*: the same kernels launched one by one from Python.", ""]
    for kind in ("lstm", "gru"):
        lines += table(kind, results[kind])
    notes = sorted({f"{kind} batch {b} hidden {h}: {r['how']}" for kind, rows in results.items()
                    for b, h, r in rows if r["how"] != "replayed"})
    if notes:
        lines += ["Steps that could not be captured:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--block", type=int, default=10, help="steps timed together")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    reason = missing()
    if reason is not None:
        print(f"gpu_vs_torch: cannot run here: {reason}", file=sys.stderr)
        return 1
    import cupy
    import torch
    from seqgraph.backends import get_backend
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    started = time.perf_counter()
    results = {}
    for kind in ("lstm", "gru"):
        results[kind] = []
        for batch in BATCHES:
            for hidden in HIDDEN:
                row = measure(kind, batch, hidden, args.rounds, args.block)
                print(kind, batch, hidden, {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()})
                results[kind].append((batch, hidden, row))
    device = get_backend("cupy").device_name()
    versions = f"CuPy {cupy.__version__}, PyTorch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}"
    write_section(Path(args.out), section(results, device, versions, args.rounds, args.block,
                                          time.perf_counter() - started), MARKERS)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
