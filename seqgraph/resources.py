"""How much memory a model needs, checked before anything is allocated.

:func:`estimate` adds up, for a batch of ``batch`` sequences of ``steps`` steps:

- **parameters**: every parameter array;
- **gradients**: one array per parameter (training only);
- **optimizer state**: Adam's two moments per parameter (training only; SGD with momentum
  keeps one, so this is an upper bound for it);
- **activations**: every value of the forward run, kept for the backward pass — per-step
  values once per step, everything else once.

:func:`require_fit` compares the total with the memory there is (``MemAvailable`` in
``/proc/meminfo``, else ``os.sysconf``; free device memory for CuPy), or with a limit given
by the ``SEQGRAPH_MEMORY`` environment variable (``"8G"``, ``"512M"``, a number of bytes;
``"off"`` turns the check off) or the train setting ``memory``. A model that cannot fit is a
:class:`SeqgraphError` with the estimate and what to lower, before the first allocation,
not a ``MemoryError`` half-way through. :func:`memory_errors` turns a ``MemoryError`` that
still happens (the estimate is a lower bound) into the same kind of message.

:func:`keep_freed_memory` asks the C library's allocator to keep memory a pass frees for
the next pass; the command line does so at start.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Optional

from .errors import SeqgraphError
from .ir import nodes_of

ITEM_BYTES = {"float32": 4, "float64": 8, "int": 8}
OPTIMIZER_SLOTS = 2
ENVIRONMENT = "SEQGRAPH_MEMORY"
_UNITS = {"": 1, "K": 2 ** 10, "M": 2 ** 20, "G": 2 ** 30, "T": 2 ** 40}


@dataclass
class Estimate:
    """Bytes a model needs, by part (``parameters``, ``gradients``, ``optimizer state``,
    ``activations``), for the batch, steps and dtype it was estimated for."""

    model: str
    parts: dict
    batch: int
    steps: int
    dtype: str
    largest: tuple = field(default=("", ()))  # the biggest parameter: (key, shape)

    @property
    def total(self) -> int:
        """All parts together, in bytes."""
        return sum(self.parts.values())

    def describe(self) -> str:
        """``about 1.2 GiB (parameters 300 MiB, gradients 300 MiB, ...)``."""
        parts = ", ".join(f"{name} {format_bytes(size)}" for name, size in self.parts.items() if size)
        return f"{format_bytes(self.total)} ({parts})"

    def hint(self) -> str:
        """What to lower: the batch and window when activations dominate, else the sizes."""
        activations = self.parts.get("activations", 0)
        if activations * 2 > self.total:
            return (f"activations dominate: lower batch (now {self.batch}) or the sequence "
                    f"length / bptt (now {self.steps} steps)")
        key, shape = self.largest
        where = f"; the largest is {key} {list(shape)}" if key else ""
        return f"parameters dominate: lower the model's sizes (e.g. --size hidden=...){where}"


def estimate(model, batch: int = 1, steps: int = 1, dtype: str = "float32",
             training: bool = True) -> Estimate:
    """The memory ``model`` needs for ``batch`` sequences of ``steps`` steps (see the module
    docstring). Sizes are Python integers, so an absurd model gives an absurd number rather
    than an overflow."""
    if dtype not in ("float32", "float64"):
        raise SeqgraphError(f"unknown dtype '{dtype}'", hint="use float32 or float64")
    item = ITEM_BYTES[dtype]
    counts = {key: math.prod(shape) for key, (shape, _) in model.params.items()}
    parameters = sum(counts.values()) * item
    activations = 0
    for _, data in nodes_of(model.graph):
        if data.op == "param":
            continue
        per_example = math.prod(data.shape) * ITEM_BYTES["int" if data.dtype == "int" else dtype]
        per_step = data.timed or data.type.is_seq
        activations += per_example * batch * (steps if per_step else 1)
    parts = {"parameters": parameters,
             "gradients": parameters if training else 0,
             "optimizer state": OPTIMIZER_SLOTS * parameters if training else 0,
             "activations": activations}
    largest = max(counts, key=counts.get, default="")
    return Estimate(model.name, parts, batch, steps, dtype,
                    (largest, model.params[largest][0]) if largest else ("", ()))


def format_bytes(size: int) -> str:
    """``1536`` → ``1.5 KiB``, ``3 * 2**40`` → ``3.0 TiB``; beyond that, powers of two."""
    if size >= 2 ** 50:
        return f"about 2^{size.bit_length() - 1} bytes"
    value, units = float(size), ["B", "KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and len(units) > 1:
        value, units = value / 1024, units[1:]
    return f"{size} B" if units[0] == "B" else f"{value:.1f} {units[0]}"


def parse_memory(text) -> Optional[int]:
    """Bytes from ``"8G"``, ``"512M"``, ``"1.5G"`` or a plain number; None for ``"off"``."""
    cleaned = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    if cleaned in ("OFF", "NONE", "0"):
        return None
    match = re.fullmatch(r"(\d+(?:\.\d*)?)\s*([KMGT]?)", cleaned)
    if match is None:
        raise SeqgraphError(f"cannot read the memory limit {text!r}",
                            hint="write it like 8G, 512M or a number of bytes; off turns it off")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def available_memory(backend=None) -> Optional[int]:
    """Bytes that can still be allocated: free device memory for the CuPy backend, else the
    host's ``MemAvailable`` (``/proc/meminfo``) or ``os.sysconf``; None when unknown."""
    free = backend.free_memory() if backend is not None else None
    if free is not None:
        return free
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_limit(backend=None, limit=None) -> Optional[int]:
    """The bytes a run may use: ``limit`` (bytes or text such as ``"8G"``) when given, else
    ``$SEQGRAPH_MEMORY``, else what :func:`available_memory` finds; None means no check."""
    if limit is not None:
        return parse_memory(limit)
    if os.environ.get(ENVIRONMENT):
        return parse_memory(os.environ[ENVIRONMENT])
    return available_memory(backend)


def require_fit(needed: Estimate, backend=None, limit=None) -> Estimate:
    """``needed`` unchanged when it fits in :func:`memory_limit`, else a SeqgraphError
    saying how much is needed, how much there is, and what to lower."""
    available = memory_limit(backend, limit)
    if available is not None and needed.total > available:
        raise SeqgraphError(
            f"model {needed.model} needs {needed.describe()} for a batch of {needed.batch} "
            f"x {needed.steps} steps in {needed.dtype}, but only {format_bytes(available)} "
            "is available", hint=needed.hint() + f"; or raise the limit with {ENVIRONMENT}=...")
    return needed


@contextmanager
def memory_errors(needed: Estimate):
    """Turn a ``MemoryError`` raised inside (NumPy's, or CuPy's out-of-memory error, which
    derives from it) into a SeqgraphError with the estimate and the same hint."""
    try:
        yield
    except MemoryError as error:
        raise SeqgraphError(f"out of memory running model {needed.model} ({error}); it needs "
                            f"{needed.describe()} for a batch of {needed.batch} x {needed.steps} "
                            "steps", hint=needed.hint()) from None


# glibc's mallopt parameters
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit systems


def keep_freed_memory(limit: int = 512 << 20) -> bool:
    """Ask glibc's allocator to keep up to ``limit`` bytes of freed memory for later
    allocations, and to serve arrays up to 32 MiB from that memory rather than from fresh
    mappings. Every pass of a network allocates and frees arrays of the same sizes; by
    default glibc hands large freed blocks back to the system, and the next pass faults the
    same amount in again page by page: a forward-only pass of the char_lstm example took
    1400 page faults and 12.5 ms on a 2-core virtual machine, 7.9 ms with none. A training
    step frees and allocates in an order that mostly avoids it already. The setting holds for
    the whole process (the command line makes it; a program that uses seqgraph may call
    this too). False where the C library is not glibc, and nothing changes."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1 and mallopt(_M_TRIM_THRESHOLD, limit) == 1
