"""The thread policy: passive waiting unless set, SEQGRAPH_THREADS=N|auto, the auto rule."""

import os
import subprocess
import sys

import pytest

from seqgraph import SeqgraphError
from seqgraph.backends import cores, mkl


def test_waiting_is_passive_unless_the_user_set_it():
    environ = {"KMP_BLOCKTIME": "50"}
    cores.apply(environ)
    assert environ["KMP_BLOCKTIME"] == "50" and environ["OMP_WAIT_POLICY"] == "passive"
    fresh = {}
    cores.apply(fresh)
    assert fresh["KMP_BLOCKTIME"] == "1"


def test_a_number_of_threads_sets_mkl_s_count_over_the_environment_s():
    environ = {"SEQGRAPH_THREADS": "3", "MKL_NUM_THREADS": "8"}
    assert cores.apply(environ) == cores.Choice(3, "SEQGRAPH_THREADS")
    assert environ["MKL_NUM_THREADS"] == "3"


def test_unset_leaves_the_count_to_the_environment():
    environ = {"OMP_NUM_THREADS": "2"}
    assert cores.apply(environ).threads is None
    assert "MKL_NUM_THREADS" not in environ and environ["OMP_NUM_THREADS"] == "2"
    assert cores.choose({}, busy=lambda: pytest.fail("auto only")).why == "one a core"


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_count_that_is_not_a_whole_number_is_an_error(value):
    with pytest.raises(SeqgraphError, match="SEQGRAPH_THREADS must be a whole number"):
        cores.choose({"SEQGRAPH_THREADS": value})


@pytest.mark.parametrize("allowed, machine, busy, threads", [
    (8, 8, 0, 8), (8, 8, 3, 5), (2, 2, 1, 1), (2, 2, 5, 1), (4, 16, 2, 4), (4, 16, 14, 2)])
def test_auto_takes_the_free_cores_it_may_run_on(allowed, machine, busy, threads):
    assert cores.auto_threads(allowed, machine, busy) == threads


def test_auto_reads_the_busy_cores_when_asked(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    monkeypatch.setattr(cores, "allowed_cores", lambda: 4)
    environ = {"SEQGRAPH_THREADS": " Auto ", "OMP_NUM_THREADS": "4"}
    assert cores.choose(environ, busy=lambda: 1) == cores.Choice(3, "auto: 1 of 4 cores busy")
    assert cores.choose(environ, busy=lambda: 9).threads == 1


def test_busy_tasks_is_the_least_reading_less_this_process(monkeypatch):
    readings = iter([4, 2, 5])
    monkeypatch.setattr(cores, "_running_tasks", lambda: next(readings))
    assert cores.busy_tasks(readings=3, pause=0) == 1
    monkeypatch.setattr(cores, "_running_tasks", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (2.7, 1.0, 0.5))
    assert cores.busy_tasks(readings=3, pause=0) == 2


def test_busy_tasks_reads_this_machine():
    assert 0 <= cores.busy_tasks() < 10_000


@pytest.mark.skipif(mkl.library() is None, reason="MKL is not installed")
def test_mkl_loads_with_the_policy_applied():
    script = ("import os; from seqgraph.backends.numpy_backend import NumpyBackend; xp = NumpyBackend().xp; "
              "print(os.environ['KMP_BLOCKTIME'], os.environ['OMP_WAIT_POLICY'], xp.threads())")
    environ = {k: v for k, v in os.environ.items() if k not in ("KMP_BLOCKTIME", "OMP_WAIT_POLICY")}
    environ.update(SEQGRAPH_THREADS="1", SEQGRAPH_MKL="1")
    done = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "passive", "1"]
