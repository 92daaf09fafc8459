"""The thread policy: how many threads seqgraph's CPU work runs on, and how idle ones wait.

seqgraph's CPU products and native loops run on the one pool of OpenMP threads MKL uses
(:mod:`seqgraph.backends.mkl`; the native loops share their rows out on it, one part a
thread MKL would use). The runtime reads its settings when it loads, so :func:`apply` runs
just before MKL is loaded and sets, for whatever the user left unset:

- **waiting**: ``KMP_BLOCKTIME=1`` (Intel's OpenMP runtime) and ``OMP_WAIT_POLICY=passive``
  (any OpenMP runtime): a thread out of work spins for 1 ms, then sleeps. By default it spins
  for 200 ms, which on a machine whose other cores are busy takes a core from the work that
  the pool itself waits for (a two-thread training step ran about 20 times slower beside one
  busy process). Sleeping at once (``KMP_BLOCKTIME=0``) is as good beside a busy process but
  costs a quiet machine dearly: a step's products and loops come a fraction of a millisecond
  apart, and waking the pool for each made an LSTM training step about 1.4 times as long
  (``benchmarks/contention.py`` measured all three on a 2-core AMD EPYC).
- **count**, for ``SEQGRAPH_THREADS`` set (it sets ``MKL_NUM_THREADS``):

  - ``SEQGRAPH_THREADS=N``: ``N`` threads (a whole number, at least 1);
  - ``SEQGRAPH_THREADS=auto``: one thread for each core others leave free, read when MKL
    loads (see :func:`auto_threads`); a run started beside a busy process keeps its
    smaller pool after that process ends;
  - unset: what ``MKL_NUM_THREADS`` or ``OMP_NUM_THREADS`` say, else one thread a core.

An OpenMP runtime loaded before MKL has read its settings already: where PyTorch was
imported first, MKL runs on the GNU runtime PyTorch loaded, which waits its own way (a
short spin, then sleep).

``auto`` is not the default: with passive waiting, a pool of one thread a core loses little
beside a busy process (the thread sharing a core with it runs at half speed, its share of
the rows takes longer, and the whole takes about what one thread would), and gains whenever
the other process pauses, which a count read once cannot see.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Mapping, MutableMapping, Optional

from ..errors import SeqgraphError

WAITING = {"KMP_BLOCKTIME": "1", "OMP_WAIT_POLICY": "passive"}
COUNT_VARIABLES = ("MKL_NUM_THREADS", "OMP_NUM_THREADS")
# Readings of the running-task count, and the seconds between them: the least of them drops
# tasks that ran for a moment only (a compiler, a shell), and keeps a process that computes.
READINGS, PAUSE = 5, 0.002


@dataclass(frozen=True)
class Choice:
    """What :func:`choose` decided: ``threads`` (None: left to the environment's own
    ``MKL_NUM_THREADS`` / ``OMP_NUM_THREADS``) and ``why``, a few words for reports."""
    threads: Optional[int]
    why: str


def apply(environ: MutableMapping = os.environ) -> Choice:
    """Set the waiting and the thread count in ``environ`` (see the module's docstring),
    keeping every waiting variable the user set; returns the choice."""
    for name, value in WAITING.items():
        environ.setdefault(name, value)
    choice = choose(environ)
    if choice.threads is not None:
        environ["MKL_NUM_THREADS"] = str(choice.threads)
    return choice


def choose(environ: Mapping, busy=None) -> Choice:
    """The thread count ``environ`` asks for; ``busy`` (a function giving the tasks others
    run now, default :func:`busy_tasks`) is asked only for ``auto``."""
    given = environ.get("SEQGRAPH_THREADS", "").strip().lower()
    if not given:
        return Choice(None, "as the environment says" if any(environ.get(n) for n in COUNT_VARIABLES)
                      else "one a core")
    if given == "auto":
        others, cores = (busy or busy_tasks)(), os.cpu_count() or 1
        return Choice(auto_threads(allowed_cores(), cores, others), f"auto: {others} of {cores} cores busy")
    if not given.isdigit() or int(given) < 1:
        raise SeqgraphError(f"SEQGRAPH_THREADS must be a whole number of threads or auto, "
                            f"not {environ['SEQGRAPH_THREADS']!r}", hint="e.g. SEQGRAPH_THREADS=2")
    return Choice(int(given), "SEQGRAPH_THREADS")


def auto_threads(allowed: int, cores: int, busy: int) -> int:
    """The ``auto`` rule: one thread for each core that is free, ``cores`` less the ``busy``
    tasks other processes run, but no more than the ``allowed`` cores this process may run
    on, and at least one."""
    return max(1, min(allowed, cores - busy))


def allowed_cores() -> int:
    """How many cores this process may run on (its affinity; all of them off Linux)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def busy_tasks(readings: int = READINGS, pause: float = PAUSE) -> int:
    """How many tasks other processes run right now: the kernel's count of running tasks
    (``/proc/loadavg``'s fourth field, ``running/total``) less this one, the least of
    ``readings`` readings ``pause`` seconds apart; where that file is missing, the 1-minute
    load average rounded down."""
    counts = []
    for reading in range(readings):
        running = _running_tasks()
        if running is None:
            return int(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
        counts.append(running - 1)
        if reading + 1 < readings:
            time.sleep(pause)
    return max(0, min(counts))


def _running_tasks() -> Optional[int]:
    try:
        with open("/proc/loadavg") as file:
            return int(file.read().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None
