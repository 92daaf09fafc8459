"""Recording a whole training step once as a CUDA graph and replaying it.

This module holds the mechanism: a recorder (:class:`CudaGraphRecorder`, which the CuPy
backend hands out) and the decision per shape signature (:class:`StepCapture`). The step
itself, made capturable, is :class:`seqgraph.train.captured.TrainingStep`; it hands its
work in as functions, so nothing here knows the compiler, the runtime or the optimisers.

A compiled step (forward scan, backward scan, time-parallel ops, clipping, the optimiser
update) is thousands of small kernel launches, each costing microseconds of Python and
driver time. With static shapes the launches are the same every step, so they are recorded
once into a CUDA graph and replayed with one launch. What makes that sound:

- **static buffers**: each step's batch is staged (validated, copied to the device, padded
  with zeros, dropout masks drawn) *outside* the graph, then copied into the same device
  buffers every time; the graph reads them from there;
- **no host syncs inside**: nothing in the step reads a number back (a host read inside a
  capture is an error), and nothing copies from host memory (a replay would read it again
  long after). Losses, the finiteness of the gradients and the norm come back after the
  replay, once per step. Gradient clipping stays on the device
  (:func:`~seqgraph.train.optim.clip_grad_norm_on_device`); the optimiser's step count is a
  device scalar the graph advances itself; a non-finite step restores the parameters and
  optimiser state inside the graph, as the plain loop skips it;
- **one graph per shape signature** (batch, steps per time axis, dtype and the optimiser's
  hyperparameters, so a new learning rate records afresh), each with its own memory pool that
  nothing else allocates from, so a replay's temporaries land where the recording put them.
  The first call of a signature runs the capturable step without recording it (that
  compiles its kernels and fills caches, which a recording must not do); the second records
  and launches; later ones replay.

When recording fails (a driver without capture, an op that synchronises), the signature
falls back to plain execution for good, and :attr:`StepCapture.reasons` says why. Past
:attr:`StepCapture.limit` signatures (data whose lengths vary a lot) steps run plainly.

The recorder is passed in, so the decision logic and the whole training step are tested on
NumPy with a stand-in recorder; :class:`CudaGraphRecorder` is the real one.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field



class CudaGraphRecorder:
    """Records a function into a CUDA graph on a stream of its own (CuPy)."""

    def __init__(self, xp):
        self.xp = xp
        self.stream = xp.cuda.Stream(non_blocking=True)

    def scope(self):
        """The context all of a step's work (staging, plain runs, launches) runs in."""
        return self.stream

    def capture(self, body):
        """``body()`` recorded, not run, into a graph; its memory comes from a private pool."""
        pool = self.xp.cuda.MemoryPool()
        with self.xp.cuda.using_allocator(pool.malloc):
            self.stream.begin_capture()
            try:
                body()
            except BaseException:
                with contextlib.suppress(Exception):
                    self.stream.end_capture()
                raise
            graph = self.stream.end_capture()
        return _Recorded(graph, pool, self.stream)


@dataclass
class _Recorded:
    graph: object
    pool: object  # kept alive with the graph: the replays use its memory
    stream: object

    def launch(self):
        self.graph.launch(self.stream)


@dataclass
class StepCapture:
    """Per shape signature: run the capturable step once unrecorded, then record it, then
    replay it (module docstring)."""
    recorder: object
    limit: int = 8
    graphs: dict = field(default_factory=dict)
    seen: set = field(default_factory=set)
    reasons: dict = field(default_factory=dict)

    def run(self, signature, body, plain) -> str:
        """Do one step: ``body()`` is the capturable form, ``plain()`` the fallback. Returns
        how it ran: ``warm-up`` (body, unrecorded), ``recorded``, ``replayed`` or ``plain``."""
        if signature in self.graphs:
            self.graphs[signature].launch()
            return "replayed"
        if signature in self.reasons:
            plain()
            return "plain"
        if signature not in self.seen:
            self.seen.add(signature)
            body()
            return "warm-up"
        if len(self.graphs) >= self.limit:
            self.reasons[signature] = f"more than {self.limit} shapes already captured"
            plain()
            return "plain"
        try:
            graph = self.recorder.capture(body)
        except Exception as error:  # the driver's or CuPy's reason, kept for the user
            self.reasons[signature] = f"{type(error).__name__}: {error}"
            plain()
            return "plain"
        self.graphs[signature] = graph
        graph.launch()
        return "recorded"
