"""A training step captured as one CUDA graph where the backend can record one.

:class:`TrainingStep` is a whole step (forward, backward, clipping on the device, the
optimiser update) written so that it reads nothing back and copies nothing from the host
inside, run through :class:`seqgraph.backends.capture.StepCapture`: warmed up, recorded
once per shape signature, then replayed (the module docstring of
:mod:`seqgraph.backends.capture` says what makes that sound).
"""

from __future__ import annotations

from typing import Optional

from ..backends.capture import StepCapture
from ..compiler import Scan
from ..runtime import prepare_feed
from . import optim


class TrainingStep:
    """One training step of ``net`` with ``optimizer`` (and gradient clipping: each element
    into ``[-clip_value, clip_value]``, then the global norm to ``clip``),
    captured as a CUDA graph where it can be: ``step(inputs, lengths, state)`` returns the
    loss as a Python float, or None when the loss or a gradient was not finite (the step is
    then skipped: parameters and optimiser state are left as they were).

    Parameters and optimiser state are updated in place; when one of their arrays is
    replaced (a loaded checkpoint), every recorded graph is dropped and recorded afresh."""

    def __init__(self, net, optimizer, clip: Optional[float] = None, clip_value: Optional[float] = None,
                 recorder=None):
        self.net, self.optimizer, self.clip, self.clip_value = net, optimizer, clip, clip_value
        xp = net.backend.xp
        self.xp = optimizer.xp = xp
        self.capture = StepCapture(recorder if recorder is not None else net.backend.recorder())
        self.feeds: dict = {}
        self.outputs: dict = {}
        self.alive: dict = {}
        self.counts = {key: xp.zeros((), dtype="float64") for key in net.params}
        self.synced: dict = {}  # the step counts self.counts were last set to
        self.held: list = []  # ids of the arrays the graphs update in place
        self.last = None  # how the latest step ran

    def step(self, inputs: dict, lengths=None, state: Optional[dict] = None) -> Optional[float]:
        """Train on one batch; the loss, or None for a skipped (non-finite) step."""
        net = self.net
        with self.capture.recorder.scope():
            return self.step_feed(prepare_feed(net.model, net.backend, net.dtype, inputs, lengths, state,
                                               True, net.rng))

    def step_feed(self, fresh) -> Optional[float]:
        """Train on a batch already staged on the device (a :class:`~seqgraph.runtime.Feed`)."""
        net = self.net
        with self.capture.recorder.scope():
            signature = self._signature(fresh)
            feed = self.feeds.setdefault(signature, fresh)
            if feed is not fresh:
                _copy_feed(self.xp, fresh, feed)
            self._sync_counts()
            self._forget_if_replaced()
            self.last = self.capture.run(signature, lambda: self._captured(signature, feed),
                                         lambda: self._plain(signature, feed))
            loss, finite, net._run, net.final_states = self.outputs[signature]
            loss, finite = float(net.backend.to_host(loss)), bool(net.backend.to_host(finite))
        if finite and self.last != "plain":
            for key in self.counts:
                self.optimizer.steps[key] = self.synced[key] = self.synced[key] + 1
        return loss if finite else None

    def _signature(self, feed) -> tuple:
        shapes = tuple(sorted((str(node), tuple(a.shape)) for node, a in {**feed.arrays, **feed.masks}.items()))
        return shapes, self.net.dtype, tuple(sorted(self.optimizer.hyper.items())), self.clip, self.clip_value

    def _forget_if_replaced(self) -> None:
        """Drop every graph when a parameter or optimiser state array is no longer the one
        the graphs write into (a loaded checkpoint, the optimiser's first buffers)."""
        held = [id(a) for a in list(self.net.params.values()) + _state_arrays(self.optimizer)]
        if held != self.held:
            self.capture.graphs.clear()
            self.alive.clear()
            self.held = held

    def _sync_counts(self) -> None:
        """Set the device step counts to the optimiser's (plain steps advance only those);
        a fill outside any recording, so its number is not frozen into a graph."""
        for key, count in self.counts.items():
            steps = self.optimizer.steps.get(key, 0)
            if self.synced.get(key) != steps:
                count.fill(steps)
                self.synced[key] = steps

    def _gradients(self, feed):
        """Forward and backward from ``feed``: ``(loss, finite, run, final states)`` (finite:
        a 0-d device array saying whether the loss and every gradient are), and the
        parameter gradients."""
        net, xp = self.net, self.xp
        run = net.program.forward(xp, feed, net.params, net.dtype)
        loss = run.env[net.model.outputs["loss"]]
        seeds = {net.model.outputs["loss"]: xp.ones((), dtype=net.dtype)}
        grads = net.collect_grads(net.program.backward(xp, run, seeds), net.model.checked.params)
        grads = {k: g for k, g in grads.items() if k in net.params}
        if self.clip_value:
            optim.clip_grad_value(xp, grads, self.clip_value)
        if self.clip:
            optim.clip_grad_norm_on_device(xp, grads, self.clip)
        finite = xp.isfinite(loss)
        for g in grads.values():
            finite = finite & xp.all(xp.isfinite(g))
        # what the step leaves for the caller (a replay refreshes these same arrays)
        states = {key: run.env[node] for key, node in net.model.checked.final_states.items()}
        return (loss, finite, run, states), grads

    def _plain(self, signature, feed) -> None:
        """The step as the training loop runs it, with the optimiser's own step counts."""
        self.outputs[signature], grads = self._gradients(feed)
        if bool(self.net.backend.to_host(self.outputs[signature][1])):
            self.optimizer.step(self.net.params, grads)

    def _captured(self, signature, feed) -> None:
        """The step with nothing read back: the step counts live on the device and advance
        only on a finite step; a non-finite one puts parameters and optimiser state back."""
        xp, optimizer, params = self.xp, self.optimizer, self.net.params
        self.outputs[signature], grads = self._gradients(feed)
        finite = self.outputs[signature][1]
        kept = [(a, a.copy()) for a in list(params.values()) + _state_arrays(optimizer)]
        for key, g in grads.items():
            self.counts[key] += finite
            optimizer.update(key, params[key], g, self.counts[key])
        skipped = xp.logical_not(finite)
        for array, copy in kept:
            xp.copyto(array, copy, where=skipped)
        # the scans' reusable buffers are replaced when another shape runs; the graph keeps
        # writing into these, so they must outlive that
        self.alive[signature] = [dict(item.cache.buffers) for item in self.net.program.schedule
                                 if isinstance(item, Scan)]


def _state_arrays(optimizer) -> list:
    return [a for per_key in optimizer.state.values() for a in per_key.values()]


def _copy_feed(xp, source, target) -> None:
    """This batch's arrays into the static buffers a recorded graph reads."""
    for node, array in source.arrays.items():
        xp.copyto(target.arrays[node], array)
    for node, array in source.masks.items():
        xp.copyto(target.masks[node], array)
