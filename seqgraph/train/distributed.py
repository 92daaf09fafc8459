"""Data-parallel training across processes: MPI through mpi4py, and NCCL through CuPy on GPUs.

Under ``mpiexec -n N seqgraph run MODEL.sg`` each process (a *rank*) builds the same network
from the same seed, takes rank 0's parameters, and trains on its own shard of every batch.
With ``batch = B`` in the train block, a step covers a *global batch* of ``N * B`` examples
(text: columns), the batch one process with ``batch = N * B`` would take, and rank ``r`` of
``N`` takes its part ``[r * G // N, (r + 1) * G // N)`` of a global batch of ``G``. Each step::

    loss_r, g_r = forward and backward on rank r's shard
    w_r         = the entries loss_r averages over (valid tokens, steps or examples)
    loss, g     = sum_r w_r * loss_r / sum_r w_r,  sum_r w_r * g_r / sum_r w_r
    clip g, take the optimiser step                          (the same on every rank)

so ``N`` ranks with ``batch = B`` compute what one process with ``batch = N * B`` computes,
up to the order of floating-point sums. All the weighted gradients and four numbers
(``sum w * loss``, ``sum w``, ranks whose loss was not finite, ranks asked to stop) travel
in one fused buffer through one all-reduce per step: MPI's on the host, NCCL's on the GPU.
Every rank takes part in every step, also with an empty shard (the last, short batch), and
the ranks agree at the start of each epoch how many steps it has: nothing hangs on an
uneven end.

Only rank 0 prints and writes files. A truncated-BPTT state stays with the rank whose
columns it belongs to; checkpoints gather it, so a run resumes on any number of ranks.

mpi4py (and CuPy's NCCL) are imported only when a run is launched by an MPI launcher.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import replace
from functools import lru_cache
from typing import Optional

import numpy

from ..backends import backend_kind
from ..errors import SeqgraphError
from ..ir import node_of
from .loop import Interrupted, Trainer, model_batches

INSTALL_HINT = "pip install 'seqgraph[dist]' (mpi4py and MPICH), or mpi4py built on your cluster's MPI"
# Environment variables MPI launchers give each process: the world size.
LAUNCHER_SIZES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
# How long a failing rank waits for the others to fail alike before it stops them all.
AGREE_SECONDS = 10.0


def launched_ranks() -> int:
    """How many processes an MPI launcher started (1 when none did): from the launcher's
    environment, or from MPI itself when it is already running (``python -m mpi4py``)."""
    if "mpi4py.MPI" in sys.modules:
        return sys.modules["mpi4py.MPI"].COMM_WORLD.Get_size()
    for name in LAUNCHER_SIZES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


@lru_cache(maxsize=None)
def world() -> Optional["World"]:
    """The MPI world of a run launched on more than one rank, else None (made once)."""
    ranks = launched_ranks()
    if ranks <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise SeqgraphError(f"an MPI launcher started {ranks} processes, but mpi4py is not installed, "
                            f"so each would train alone", hint=INSTALL_HINT) from None
    return World(MPI) if MPI.COMM_WORLD.Get_size() > 1 else None


class World:
    """The ranks of one run: this rank, how many there are, and which share its machine."""

    def __init__(self, mpi):
        self.mpi = mpi
        self.comm = mpi.COMM_WORLD
        self.control = self.comm.Dup()  # failures are agreed here, apart from the training's traffic
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(mpi.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = local.Get_rank(), local.Get_size()
        self.nodes = self.comm.allreduce(1 if self.local_rank == 0 else 0)
        local.Free()

    def echo(self, echo):
        """``echo`` on rank 0; elsewhere a function that prints nothing."""
        return echo if self.rank == 0 else (lambda *args, **kwargs: None)

    def prepare(self, backend: str) -> str:
        """Set this rank's threads (and its device, on a backend with devices: see
        :meth:`~seqgraph.backends.protocol.Backend.use_device_of_rank`); a line saying what
        was chosen."""
        cores, allowed = os.cpu_count() or 1, len(_allowed_cores())
        given = next((os.environ[name] for name in THREAD_VARIABLES if os.environ.get(name)), None)
        threads = int(given) if given and given.isdigit() else threads_per_rank(self.local_size, cores, allowed)
        limit_threads(threads)
        where = f"{self.size} ranks on {self.nodes} machine{'s' if self.nodes != 1 else ''}"
        how = "as the environment says" if given else f"{self.local_size} ranks share {cores} cores here"
        line = f"data-parallel: {where}, {threads} thread{'s' if threads != 1 else ''} per rank ({how})"
        device = backend_kind(backend).use_device_of_rank(self.local_rank, self.local_size)
        return line + (f", {device}" if device else "")

    def sum(self, numbers) -> numpy.ndarray:
        """The sum over the ranks of a few host numbers (float64)."""
        total = numpy.array(numbers, dtype=numpy.float64)
        self.comm.Allreduce(self.mpi.IN_PLACE, total, op=self.mpi.SUM)
        return total

    def agree_on_failure(self) -> bool:
        """Whether every rank reaches this point within :data:`AGREE_SECONDS` (each rank
        that failed comes here; the others are still inside a collective of the run)."""
        request = self.control.Ibarrier()
        deadline = time.monotonic() + AGREE_SECONDS
        while not request.Test():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True


def _allowed_cores() -> set:
    try:
        return os.sched_getaffinity(0)
    except AttributeError:  # not on Linux
        return set(range(os.cpu_count() or 1))


def threads_per_rank(local_ranks: int, cores: int, allowed: int) -> int:
    """Threads for each of ``local_ranks`` ranks on a machine of ``cores`` cores, of which this
    rank may run on ``allowed``: all of those when the launcher bound it to fewer than the
    machine's cores (they are its own), else an equal share, so ranks x threads <= cores."""
    if allowed < cores:
        return max(1, allowed)
    return max(1, cores // max(1, local_ranks))


def limit_threads(threads: int) -> None:
    """Run this process's matrix products (MKL's, and the native loops sharing its threads) on
    ``threads`` threads: in the environment for libraries loaded later, and in MKL itself."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, str(threads))
    from ..backends import mkl
    mkl.limit_threads(threads)



def shard(total: int, rank: int, size: int) -> slice:
    """Rank ``rank``'s part of ``total`` examples (or text columns): equal parts, in rank
    order, the first ones a little smaller when ``size`` does not divide ``total``."""
    return slice(total * rank // size, total * (rank + 1) // size)


# --------------------------------------------------------------------------------------------
# Collectives on one flat buffer
# --------------------------------------------------------------------------------------------


class FusedBuffer:
    """Every parameter-shaped array of a network in one flat buffer, ``extra`` numbers after
    them, so a collective moves them all in one call; :meth:`views` are the arrays inside."""

    def __init__(self, xp, params: dict, extra: int = 0):
        self.shapes = {key: tuple(p.shape) for key, p in params.items()}
        sizes = [int(numpy.prod(shape)) for shape in self.shapes.values()]
        self.offsets = dict(zip(self.shapes, numpy.cumsum([0] + sizes[:-1]).tolist()))
        self.length = sum(sizes)
        dtype = next(iter(params.values())).dtype
        self.flat = xp.zeros(self.length + extra, dtype=dtype)
        self.extra = self.flat[self.length:]

    def views(self) -> dict:
        """key -> the part of the buffer shaped as that array (writing one writes the buffer)."""
        return {key: self.flat[start:start + int(numpy.prod(self.shapes[key]))].reshape(self.shapes[key])
                for key, start in self.offsets.items()}

    def pack(self, arrays: Optional[dict], scale: float = 1.0) -> None:
        """Fill the buffer with ``scale * arrays`` (zeros where ``arrays`` is None)."""
        if arrays is None:
            self.flat[:self.length] = 0
            return
        for key, view in self.views().items():
            view[...] = arrays[key]
            if scale != 1.0:
                view *= scale


class MpiReducer:
    """Sums and broadcasts of host (NumPy) buffers through MPI."""

    name = "MPI"

    def __init__(self, world: World):
        self.comm, self.mpi = world.comm, world.mpi

    def sum(self, buffer) -> None:
        """Replace ``buffer`` on every rank by its sum over the ranks."""
        self.comm.Allreduce(self.mpi.IN_PLACE, buffer, op=self.mpi.SUM)

    def broadcast(self, buffer) -> None:
        """Replace ``buffer`` on every rank by rank 0's."""
        self.comm.Bcast(buffer, root=0)


class NcclReducer:
    """Sums and broadcasts of CuPy buffers on the GPUs through NCCL, on the current stream. The
    NCCL communicator is bootstrapped over MPI: rank 0 makes its unique id, MPI hands it on."""

    name = "NCCL"

    def __init__(self, world: World, cupy):
        try:
            from cupy.cuda import nccl
        except ImportError:
            raise SeqgraphError("data-parallel training on the cupy backend needs NCCL, which this "
                                "CuPy cannot load", hint="pip install nvidia-nccl-cu12 (or the "
                                "build for your CUDA), or train on --backend numpy") from None
        self.nccl, self.cupy = nccl, cupy
        unique_id = world.comm.bcast(nccl.get_unique_id() if world.rank == 0 else None, root=0)
        self.comm = nccl.NcclCommunicator(world.size, unique_id, world.rank)

    def _type(self, buffer):
        return {"float32": self.nccl.NCCL_FLOAT32, "float64": self.nccl.NCCL_FLOAT64}[buffer.dtype.name]

    def _stream(self) -> int:
        return self.cupy.cuda.get_current_stream().ptr

    def sum(self, buffer) -> None:
        """Replace ``buffer`` on every rank by its sum over the ranks."""
        pointer = buffer.data.ptr
        self.comm.allReduce(pointer, pointer, buffer.size, self._type(buffer), self.nccl.NCCL_SUM,
                            self._stream())

    def broadcast(self, buffer) -> None:
        """Replace ``buffer`` on every rank by rank 0's."""
        self.comm.bcast(buffer.data.ptr, buffer.size, self._type(buffer), 0, self._stream())


def make_reducer(world: World, backend):
    """NCCL where the arrays live on CUDA devices, else MPI."""
    return NcclReducer(world, backend.xp) if backend.capabilities().cuda_arrays else MpiReducer(world)


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------


class FollowsRank0(Exception):
    """Raised on the other ranks when rank 0 failed at something only rank 0 does."""


class DataParallelTrainer(Trainer):
    """A :class:`~seqgraph.train.loop.Trainer` that is one rank of a data-parallel run (see the
    module docstring). Built like a Trainer, with the :class:`World` first."""

    def __init__(self, world: World, *args, **kwargs):
        self.world = world
        super().__init__(*args, **kwargs)
        self.writes = world.rank == 0
        self.captured = None  # the all-reduce sits between backward and update: no one-graph step
        self.reducer = make_reducer(world, self.net.backend)
        self.fused = FusedBuffer(self.xp, self.net.params, extra=4)  # sum w * loss, sum w, not finite, stop
        self.global_config = replace(self.config, batch=self.config.batch * world.size)
        self._stop_requested = self._stop_agreed = False
        self._broadcast_parameters()
        self.echo(f"each step: {world.size} ranks x batch {self.config.batch} = a global batch of "
                  f"{self.global_config.batch}")

    def _broadcast_parameters(self) -> None:
        """Every rank starts from rank 0's parameters (the same seed gives the same ones;
        this makes sure of it)."""
        self.fused.pack(self.net.params)
        self.reducer.broadcast(self.fused.flat)
        for key, view in self.fused.views().items():
            self.net.params[key][...] = view

    # batches: this rank's shard of each global batch, with the global batch's weight and tokens
    def _batches(self, data, train: bool):
        """As :meth:`Trainer._batches`, of the global batches; the ranks first agree that
        they have the same number of them (else one would wait for a step that never comes)."""
        rng = numpy.random.default_rng([self.config.seed, self.epoch, 11]) if train else None
        batches = list(model_batches(self.net.model, self.roles, data, self.global_config, rng))
        counts = self.world.comm.allgather(len(batches))
        if len(set(counts)) > 1:
            raise SeqgraphError(f"the ranks' {'training' if train else 'validation'} data differ: "
                                f"rank 0 has {counts[0]} batches, rank {counts.index(max(counts))} has "
                                f"{max(counts)}", hint="every rank must read the same data (the same "
                                "file on every machine)")
        for inputs, lengths, weight, tokens in batches:
            yield self._shard(inputs, lengths) + (weight, tokens)

    def _shard(self, inputs: dict, lengths) -> tuple:
        """``(inputs, lengths)`` of this rank's part of a batch; ``(None, None)`` when empty."""
        graph, names = self.net.model.graph, self.net.model.inputs
        batch_axis = {name: 1 if node_of(graph, names[name]).type.is_seq else 0 for name in inputs}
        name = next(iter(inputs))
        part = shard(inputs[name].shape[batch_axis[name]], self.world.rank, self.world.size)
        if part.stop == part.start:
            return None, None
        sliced = {name: numpy.ascontiguousarray(array[(slice(None),) * batch_axis[name] + (part,)])
                  for name, array in inputs.items()}
        return sliced, ({axis: v[part] for axis, v in lengths.items()} if lengths else lengths)

    def _loss_weight(self, inputs: Optional[dict], lengths) -> int:
        """How many entries this rank's loss averages over: the target's valid steps of all
        its examples for a sequence target, else its examples (also when the loss is not one
        cross_entropy or mse, which is then weighted by examples)."""
        if inputs is None:
            return 0
        target = self.roles.target
        if target is None or target not in inputs:
            return self.net.model.batch_of(inputs)
        vtype = node_of(self.net.model.graph, self.net.model.inputs[target]).type
        if not vtype.is_seq:
            return inputs[target].shape[0]
        if lengths and vtype.time in lengths:
            return int(numpy.asarray(lengths[vtype.time]).sum())
        return inputs[target].shape[0] * inputs[target].shape[1]

    # one step: local gradients, one all-reduce, the same update everywhere
    def _step(self, inputs, lengths, index, last: bool = False) -> Optional[float]:
        self.net._rng = numpy.random.default_rng([self.config.seed, self.epoch, index, 7, self.world.rank])
        loss, grads = self._gradients(inputs, lengths) if inputs is not None else (0.0, None)
        weight = self._loss_weight(inputs, lengths)
        finite = grads is not None or inputs is None
        self.fused.pack(grads, weight)
        self.fused.extra[...] = self.xp.asarray([loss * weight if finite else 0.0, weight,
                                                 0.0 if finite else 1.0, float(self._stop_requested)])
        self.reducer.sum(self.fused.flat)
        loss_sum, total, nonfinite, stop = (float(v) for v in self.net.backend.to_host(self.fused.extra))
        self._stop_agreed = stop > 0
        if nonfinite:
            return self._nonfinite(f"the loss became not finite on {int(nonfinite)} of {self.world.size} ranks")
        grads = self.fused.views()
        if total:
            self.fused.flat[:self.fused.length] /= total
        result = self._update(loss_sum / max(total, 1), grads, last, index)
        if inputs is None:
            self.carried = {}
        return result

    def _holding_interrupts(self):
        return self._stopping_together()

    @contextmanager
    def _stopping_together(self):
        """A step runs to its end; if any rank was asked to stop (Ctrl-C) by the time of its
        all-reduce, every rank stops after the same step."""
        yield
        if self._stop_agreed:
            raise KeyboardInterrupt

    def run(self) -> list:
        """As :meth:`Trainer.run`; Ctrl-C is noted, and acted on at the next step by all ranks."""
        if threading.current_thread() is not threading.main_thread():
            return super().run()

        def note(number, frame):
            self._stop_requested = True
        previous = signal.signal(signal.SIGINT, note)
        try:
            return super().run()
        finally:
            signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)

    # validation: the sums over the ranks' shards
    def _evaluate_batch(self, inputs, lengths) -> tuple:
        loss, right, out_of = super()._evaluate_batch(inputs, lengths) if inputs is not None else (0.0, 0.0, 0.0)
        weight = self._loss_weight(inputs, lengths)
        sums = self.world.sum([loss * weight, weight, right, out_of])
        return sums[0] / max(sums[1], 1), sums[2], sums[3]

    # checkpoints: rank 0 writes them, with every rank's carried state in column order
    def _save(self, name: str):
        to_host = self.net.backend.to_host
        parts = self.world.comm.gather({k: to_host(v) for k, v in self.carried.items()}, root=0)
        own = self.carried
        if self.writes:
            parts = [part for part in parts if part]
            self.carried = {key: numpy.concatenate([part[key] for part in parts]) for key in own} if own else {}
        try:
            return super()._save(name)
        finally:
            self.carried = own

    def resume(self, location) -> None:
        """Rank 0 reads the checkpoint and hands it to every rank; each takes its columns
        of the carried state, so the number of ranks may differ from the saving run's."""
        from .checkpoint import read_checkpoint
        read, failure = None, None
        if self.world.rank == 0:
            try:
                read = read_checkpoint(location)
            except SeqgraphError as error:
                failure = error
        read = self.world.comm.bcast(read, root=0)
        if failure is not None:
            raise failure
        if read is None:
            raise FollowsRank0("rank 0 could not read the checkpoint")
        self._restore(*read)
        self.carried = {key: v[shard(len(v), self.world.rank, self.world.size)]
                        for key, v in self.carried.items()}


@contextmanager
def stopping_together(world: Optional[World]):
    """Run a rank's part of a run so that a failure on one rank stops every rank.

    A rank that fails waits (:meth:`World.agree_on_failure`) for the others: when they all
    failed too (the same mistake in a model file, a loss that is not finite), rank 0 reports
    and every rank exits as rank 0 does; when they did not (they wait inside a collective for
    the failed rank), the failed rank says what happened and aborts the whole run."""
    if world is None:
        yield
        return
    try:
        yield
    except BaseException as error:  # Ctrl-C and exits stop the other ranks too
        text = error.render() if isinstance(error, SeqgraphError) else "".join(
            traceback.format_exception(type(error), error, error.__traceback__))
        if not world.agree_on_failure():
            print(f"seqgraph: rank {world.rank} of {world.size} stopped: {text.rstrip()}\n"
                  f"seqgraph: stopping all {world.size} ranks", file=sys.stderr, flush=True)
            time.sleep(0.5)  # the launcher forwards what a rank wrote after a while; Abort cuts it off
            world.comm.Abort(1)
        texts = world.control.allgather(text)
        if world.rank == 0 or isinstance(error, (Interrupted, SystemExit, KeyboardInterrupt)):
            raise
        if text != texts[0] and not isinstance(error, FollowsRank0):
            print(f"seqgraph: rank {world.rank}: {text.rstrip()}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
