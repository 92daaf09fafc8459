"""The training loop behind ``seqgraph run``.

One :class:`Trainer` holds the network, the data, the optimiser and the history of a run.
Each epoch visits the training batches in an order drawn from ``(seed, epoch)``, and each
step draws its dropout masks from ``(seed, epoch, batch)``, so a run resumed from a
checkpoint computes exactly the losses of an uninterrupted one. Text is cut into truncated
BPTT windows; the recurrent state is carried from one window to the next (the gradient stops
at the window's edge).
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy

from .. import faults, resources
from ..backends import DEFAULT_BACKEND, get_backend
from ..errors import SeqgraphError, did_you_mean
from ..ir import Node, node_of
from ..runtime import Network
from ..weights import atomic_write, remove_temporaries, set_params
from . import data as datasets
from . import generation, optim, report, scheduled, tables
from .captured import TrainingStep
from .checkpoint import (BEST, FINAL, LAST, checkpoint_file, initial_params, read_checkpoint, restore,
                         save_checkpoint)
from .config import TrainConfig
from .sampling import sample_text


@dataclass
class Roles:
    """Which nodes play which part: the loss, its prediction and target, the text input."""
    loss: str
    prediction: str
    target: str
    input: Optional[str] = None


def find_roles(model) -> Roles:
    """The loss node and the prediction and target it compares: those of the first op found
    searching back from the loss whose second input is one the model is fed (the loss may be
    a weighted sum of several, or a reduction of a per-element one)."""
    loss = model.require_loss()
    graph = model.graph
    names = {node: name for name, node in model.inputs.items()}
    prediction, target_node = _compared(graph, loss, names)
    target = names.get(target_node)
    inputs = [n for n in model.checked.inputs]
    return Roles(loss, prediction, target, inputs[0] if len(inputs) == 1 else None)


def _compared(graph, loss, fed: dict) -> tuple:
    """(prediction, target) of the comparison nearest the loss (breadth first)."""
    queue, seen = [loss], {loss}
    while queue:
        node = queue.pop(0)
        args = node_of(graph, node).args
        if len(args) >= 2 and args[1] in fed:
            return args[0], args[1]
        queue += [a for a in args if a not in seen]
        seen.update(args)
    args = node_of(graph, loss).args
    return (args[0] if args else loss), None


@dataclass(frozen=True)
class Step:
    """What one training step did; every callback in :attr:`Trainer.on_step` gets one.

    ``epoch`` and ``batch`` count from 1 (``batch`` within its epoch), ``step`` counts the
    run's steps from 1. ``grad_norm`` is the global L2 norm of the parameter gradients before
    clipping (``None`` on CuPy, where the step runs as one CUDA graph and nothing is read
    back); ``clipped`` says whether clipping scaled them (``False`` where the norm is
    ``None``). ``lr`` is the rate the update used.
    """
    epoch: int
    batch: int
    step: int
    loss: float
    grad_norm: Optional[float]
    clipped: bool
    lr: float


class Interrupted(Exception):
    """Training stopped by Ctrl-C after a checkpoint was saved."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path


def load_dataset(config: TrainConfig, model, base_dir: Optional[Path] = None) -> datasets.Dataset:
    """The dataset the config names (a built-in task, a text file, a table, or .npz arrays)."""
    call = config.data
    if call is None:
        raise SeqgraphError(f"model {model.name} says no data to train on",
                            model.train.span if model.train else model.ast.span,
                            'add  data = builtin("...")  to its train block, or pass --data FILE')
    usage = 'use builtin("name", sizes...), text("file.txt"), csv("table.csv") or npz("arrays.npz")'
    if call.name not in datasets.SOURCES:
        raise SeqgraphError(f"unknown data source {call.name}(...)", call.span,
                            did_you_mean(call.name, datasets.SOURCES) or usage)
    if len(call.args) != 1:
        raise SeqgraphError(f"data source {call.name}(...) takes one argument before its keywords, "
                            f"got {len(call.args)}", call.span, usage)
    spec = str(call.args[0])
    datasets.check_source_keywords(call.name, spec, call.kwargs, call.keyword_spans, call.span)
    builtin = spec.split(":", 1)[1] if spec.startswith("builtin:") else None
    if call.name == "builtin":
        return datasets.builtin(spec, n=config.examples, seed=config.seed, span=call.span, **call.kwargs)
    with _reported_at(call.span):
        if call.name == "text":
            data = datasets.builtin(builtin, n=config.examples, seed=config.seed) if builtin \
                else datasets.load_text(_find_file(spec, base_dir))
            return datasets.at_level(data, **call.kwargs)
        axes = {name: node_of(model.graph, node).time for name, node in model.inputs.items()
                if node_of(model.graph, node).type.is_seq}
        if call.name == "csv":
            dtypes = {name: node_of(model.graph, node).dtype for name, node in model.inputs.items()}
            options = dict(call.kwargs, dtypes=dtypes, time_axes=axes)
            if builtin:
                return tables.builtin_table(builtin, config.examples, config.seed, **options)
            return tables.load_table(_find_file(spec, base_dir), **options)
        return datasets.load_npz(_find_file(spec, base_dir), time_axes=axes)


@contextmanager
def _reported_at(span):
    """Re-raise a SeqgraphError that has no place of its own at ``span``."""
    try:
        yield
    except SeqgraphError as error:
        if error.span is not None or span is None:
            raise
        raise SeqgraphError(error.message, span, error.hint) from None


def _find_file(spec: str, base_dir: Optional[Path]) -> Path:
    path = Path(spec)
    if not path.exists() and base_dir is not None and (base_dir / spec).exists():
        return base_dir / spec
    return path


def data_roles(model, dataset: datasets.Dataset, config: TrainConfig) -> Roles:
    """The model's :class:`Roles` for this data, after checking the data fits the model: text
    needs one ``seq[int, vocab]`` input and a target; arrays need one array per input and
    target, of the declared shape, dtype and id range."""
    roles = find_roles(model)
    if dataset.kind == "text":
        text_inputs = [n for n, node in model.checked.inputs.items()
                       if node_of(model.graph, node).type.is_seq and node_of(model.graph, node).dtype == "int"]
        if len(text_inputs) != 1 or roles.target is None:
            raise SeqgraphError(f"text data needs a model with one input seq[int, vocab] and a "
                                f"target seq[int, vocab]; {model.name} has inputs "
                                f"{', '.join(model.inputs)}", model.ast.span)
        roles.input = text_inputs[0]
        return roles
    missing = [n for n in model.inputs if n not in dataset.arrays]
    if missing:
        raise SeqgraphError(
            f"the data ({dataset.name}) has no array for '{missing[0]}'", config.spans.get("data"),
            f"it holds {', '.join(dataset.arrays)}; name the model's inputs and targets after them")
    for name, node in model.inputs.items():
        _check_array(dataset.name, name, dataset.arrays[name], node_of(model.graph, node))
    return roles


def model_batches(model, roles: Roles, data: datasets.Dataset, config: TrainConfig, rng=None):
    """``(inputs, lengths, loss weight, tokens)`` for each batch of ``data``: bptt windows of
    text, else padded batches of the arrays (shuffled by ``rng`` when one is given)."""
    if data.kind == "text":
        ids = data.arrays["ids"]
        batch = min(config.batch, max(1, len(ids) // (config.bptt + 1)))
        for x, y in datasets.bptt_windows(ids, batch, config.bptt):
            yield {roles.input: x, roles.target: y}, None, x.size, x.size
        return
    for arrays, lengths in datasets.batches(data, config.batch, rng, shuffle=rng is not None):
        inputs = {name: arrays[name] for name in model.inputs}
        size = len(next(iter(lengths.values()))) if lengths else model.batch_of(inputs)
        tokens = int(sum(l.sum() for l in lengths.values())) if lengths else size
        yield inputs, lengths or None, size, tokens


class Trainer:
    """Trains one network on one dataset; ``run()`` returns the history, a dict per epoch.

    ``writes`` says whether this trainer writes the run's files (metrics, samples, plots);
    in data-parallel training (:mod:`seqgraph.train.distributed`) only rank 0 does.
    ``on_step`` holds callables that are handed a :class:`Step` after every update (not after
    a skipped step); append to it, or pass ``on_step=[...]``. ``init_from(location)`` starts
    from given weights instead of the seeded initialisation.
    """

    writes = True

    def __init__(self, model, config: TrainConfig, out_dir, dataset: datasets.Dataset,
                 backend: str = DEFAULT_BACKEND, dtype: str = "float32", echo=print, show_progress: bool = True,
                 model_file: Optional[str] = None, on_step=()):
        self.config, self.out_dir, self.echo = config, Path(out_dir), echo
        self.on_step = list(on_step)
        self.steps_taken = 0
        self.show_progress = show_progress
        self.model_file = model_file
        self.dataset = dataset
        if dataset.vocab is not None:
            model = self._fit_vocabulary(model, dataset)
        self.train_data, self.valid_data = datasets.split(dataset, config.valid, seed=config.seed) \
            if config.valid > 0 else (dataset, None)
        # Checked before the parameters exist, so a model too big to train is one clear error.
        self.memory = resources.require_fit(self._memory_estimate(model, dtype), get_backend(backend),
                                            config.memory or None)
        self.net = Network(model, backend=backend, dtype=dtype, seed=config.seed)
        self.xp = self.net.backend.xp
        self.roles = data_roles(model, dataset, config)
        options = dict(config.optimizer.kwargs)
        if config.weight_decay:
            options.setdefault("weight_decay", config.weight_decay)
        self.optimizer = optim.make_optimizer(config.optimizer.name, span=config.optimizer.span,
                                              xp=self.xp, **options)
        self.base_lr = self.optimizer.lr
        self.schedule = optim.make_schedule(config.schedule.name, span=config.schedule.span,
                                            **config.schedule.kwargs)
        # on the GPU a step is recorded once as a CUDA graph and replayed (the same numbers)
        self.captured = TrainingStep(self.net, self.optimizer, config.clip or None, config.clip_value or None) \
            if self.net.backend.capabilities().step_capture and config.accumulate == 1 else None
        self.accumulated: dict = {}  # summed gradients of the batches since the last update
        self.gathered = 0  # how many batches they hold
        self.history: list = []
        self.best = math.inf
        self.epoch, self.batch_index = 0, 0
        self.carried: dict = {}
        self.samples: list = []
        self.sampling = scheduled.make_sampling_schedule(config.scheduled_sampling, model)
        self._own_tokens = None  # scheduled sampling: [generated, fed] tokens this epoch

    # set-up
    def _fit_vocabulary(self, model, dataset):
        """A model's ``vocab`` size follows the vocabulary of its text or table."""
        size = dataset.vocab_size
        unit = "tokens" if dataset.info.get("tokenizer") else "characters"
        if "vocab" in model.sizes and model.sizes["vocab"] != size:
            self.echo(f"note: vocab = {size} (the data has {size} distinct {unit}; "
                      f"the model said {model.sizes['vocab']})")
            model = model.with_sizes(vocab=size)
        return model

    def _memory_estimate(self, model, dtype: str) -> resources.Estimate:
        """What one training step needs at this run's largest batch and longest sequence."""
        data = self.train_data
        if self.dataset.kind == "text":
            batch = min(self.config.batch, max(1, len(data.arrays["ids"]) // (self.config.bptt + 1)))
            steps = self.config.bptt
        else:
            batch = min(self.config.batch, len(next(iter(data.arrays.values()))))
            steps = max((data.arrays[name].shape[1] for name in data.time_axes), default=1)
        return resources.estimate(model, batch, steps, dtype)

    def init_from(self, location) -> None:
        """Start from the parameters in ``location``: a run folder, a training checkpoint, a
        file written by ``save_params``, or a plain ``.npz`` holding one array per parameter
        key. Every key and shape must be the model's (a SeqgraphError says which is not)."""
        set_params(self.net, initial_params(location), str(location))

    def resume(self, location) -> None:
        """Continue from the checkpoint in a run folder (or a checkpoint file)."""
        self._restore(*read_checkpoint(location))

    def _restore(self, arrays: dict, header: dict) -> None:
        """Take the parameters, optimiser state, position and history of a read checkpoint."""
        self.carried = restore(self.net, self.optimizer, arrays, header)
        self.epoch, self.batch_index = header["epoch"], header["batch"]
        self.history = header.get("history", [])
        self.best = header.get("best", math.inf)
        self._partial = header.get("partial")
        self.gathered = header.get("gathered", 0)
        self.accumulated = {key[len("accum/"):]: self.xp.asarray(value) for key, value in arrays.items()
                            if key.startswith("accum/")}
        self.echo(f"resuming from {header['path']} at epoch {self.epoch + 1}, batch {self.batch_index}")

    # the loop
    def run(self) -> list:
        """Train until the epochs are done or early stopping says so; write the run's files."""
        if self.writes:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            remove_temporaries(self.out_dir)  # half-written files of a run that was killed
            self._write_config()
        stale = self._epochs_without_improvement()
        try:
            while self.epoch < self.config.epochs:
                with resources.memory_errors(self.memory):
                    row = self._train_epoch()
                self.history.append(row)
                self.echo(report.epoch_line(row, self.config.epochs, self._unit()))
                if "fed_generated" in row:
                    self.echo(f"  scheduled sampling: {row['fed_generated']:.1%} of the fed-back "
                              "tokens were the model's own")
                improved = row["valid_loss"] is not None and row["valid_loss"] < self.best
                score = _score(row)
                # Both checkpoints hold the state after this epoch, so a run killed between
                # the two writes resumes correctly from whichever is newer.
                self.epoch, self.batch_index = self.epoch + 1, 0
                if score < self.best or improved:
                    self.best = score
                    stale = 0
                    self._save(BEST)
                else:
                    stale += 1
                self._save(LAST)
                if self.writes:
                    report.write_metrics(self.out_dir / "metrics.csv", self.history)
                    if self.config.sample and self.dataset.kind == "text":
                        self._show_sample()
                    if (self.config.show and self.net.model.checked.feedback and self.valid_data is not None
                            and self.dataset.kind != "text"):
                        self._show_generated(row)
                if self.config.patience and stale >= self.config.patience:
                    self.echo(f"early stop: no better validation loss for {stale} epochs")
                    break
        except KeyboardInterrupt:
            path = self._save(LAST)
            raise Interrupted(path) from None
        self._save(FINAL)
        if self.writes:
            report.plot_losses(self.out_dir / "loss.png", self.history, self.net.model.name)
        return self.history

    def _epochs_without_improvement(self) -> int:
        stale = 0
        for row in self.history:
            score = _score(row)
            stale = 0 if score <= self.best else stale + 1
        return stale

    def _unit(self) -> str:
        return "tokens" if self.dataset.kind == "text" or self._has_sequences() else "examples"

    def _has_sequences(self) -> bool:
        return bool(self.dataset.time_axes)

    def _scheduled_lr(self) -> None:
        """Set the optimiser's rate from the schedule: by epochs done, or by updates done."""
        count = self.optimizer.updates if self.schedule.per == "step" else self.epoch
        self.optimizer.lr = self.schedule.lr_at(count, self.base_lr, [_score(row) for row in self.history])

    def _train_epoch(self) -> dict:
        self._scheduled_lr()
        started = time.perf_counter()
        batches = list(self._batches(self.train_data, train=True))
        limit = self.config.steps or len(batches)
        batches = batches[:limit]
        self._batches_per_epoch = len(batches)
        total, count, units = self._partial_sums()
        bar = report.progress(len(batches), f"epoch {self.epoch + 1}", self.show_progress)
        bar.update(self.batch_index)
        for index in range(self.batch_index, len(batches)):
            inputs, lengths, weight, tokens = batches[index]
            with self._holding_interrupts():  # a checkpoint never holds half a step's bookkeeping
                loss = self._step(inputs, lengths, index, index == len(batches) - 1)
                if loss is not None:
                    total, count = total + loss * weight, count + weight
                units += tokens
                self.batch_index = index + 1
                self._partial = (total, count, units)
            bar.update(1)
            bar.set_postfix(loss=f"{total / max(count, 1):.4f}",
                            rate=f"{units / max(time.perf_counter() - started, 1e-9):.0f}/s")
        bar.close()
        seconds = time.perf_counter() - started
        self._partial = None
        valid_loss, metric_value = self._evaluate()
        train_loss = total / count if count else math.nan  # nan, not 0, when every step was skipped
        row = {"epoch": self.epoch + 1, "train_loss": train_loss, "valid_loss": valid_loss,
               "metric": self._metric_name(), "metric_value": metric_value, "lr": self.optimizer.lr,
               "seconds": seconds, "throughput": units / max(seconds, 1e-9)}
        if self._own_tokens is not None:
            generated, fed = self._own_tokens
            row["fed_generated"] = generated / max(fed, 1)
            self._own_tokens = [0, 0]
        return row

    def _partial_sums(self):
        partial = getattr(self, "_partial", None)
        if self.batch_index and partial:
            return tuple(partial)
        if not self.batch_index and self.dataset.kind == "text":
            self.carried = {}
        return 0.0, 0, 0

    def _holding_interrupts(self):
        """The guard around one step's work and bookkeeping (see :func:`holding_interrupts`)."""
        return holding_interrupts()

    def _step(self, inputs, lengths, index, last: bool = False) -> Optional[float]:
        """One forward and backward, and an update when ``accumulate`` batches are gathered
        (or at the epoch's ``last`` batch); the loss, or None for a skipped step."""
        self.net._rng = numpy.random.default_rng([self.config.seed, self.epoch, index, 7])
        if self.sampling is not None:
            inputs = self._with_own_tokens(inputs, lengths, index)
        if self.captured is not None:
            return self._captured_step(inputs, lengths, self.carried if self.dataset.kind == "text" else None)
        loss, grads = self._gradients(inputs, lengths)
        if grads is None:
            return self._nonfinite(f"the loss became {loss}")
        return self._update(loss, grads, last, index)

    def _gradients(self, inputs, lengths) -> tuple:
        """``(loss, gradients of the parameters)`` of one training pass; the gradients are
        None when the loss is not finite (no backward pass is run then)."""
        net = self.net
        state = self.carried if self.dataset.kind == "text" else None
        loss = float(net.backend.to_host(net.forward(inputs, lengths, state=state or None, training=True)["loss"]))
        if not math.isfinite(loss):
            return loss, None
        return loss, {k: v for k, v in net.backward().items() if k in net.params}

    def _update(self, loss: float, grads: dict, last: bool = False, index: int = 0) -> Optional[float]:
        """Check, gather (``accumulate``), clip and apply ``grads``; the loss, or None for a
        skipped step."""
        net = self.net
        norm = optim.grad_norm(self.xp, grads)  # finite exactly when every gradient is
        if not math.isfinite(norm):
            return self._nonfinite("a gradient became NaN or infinite")
        if self.dataset.kind == "text":  # a skipped window does not pass its state on
            self.carried = dict(net.final_states)
        gathered = self._gather(grads, last)
        if gathered is None:
            return loss
        if self.config.clip_value:
            optim.clip_grad_value(self.xp, gathered, self.config.clip_value)
        if gathered is not grads or self.config.clip_value:
            norm = optim.grad_norm(self.xp, gathered)
        if self.config.clip:
            optim.clip_grad_norm(self.xp, gathered, self.config.clip, norm)
        if self.schedule.per == "step":
            self._scheduled_lr()
        self.optimizer.step(net.params, gathered)
        self._check_update()
        self._report_step(index, loss, norm)
        return loss

    def _gather(self, grads: dict, last: bool) -> Optional[dict]:
        """The gradients to update with now: this batch's, or with ``accumulate > 1`` the mean
        over the batches gathered since the last update once there are ``accumulate`` of them
        (or fewer at the end of an epoch); None while still gathering."""
        if self.config.accumulate == 1:
            return grads
        for key, g in grads.items():
            if key in self.accumulated:
                self.accumulated[key] += g
            else:
                self.accumulated[key] = g.copy()
        self.gathered += 1
        if self.gathered < self.config.accumulate and not last:
            return None
        mean = {key: total / self.gathered for key, total in self.accumulated.items()}
        self.accumulated, self.gathered = {}, 0
        return mean

    def _report_step(self, index: int, loss: float, norm: Optional[float]) -> None:
        """Hand the step's :class:`Step` to every ``on_step`` callback."""
        self.steps_taken += 1
        clipped = bool(self.config.clip) and norm is not None and optim.clips(norm, self.config.clip)
        step = Step(self.epoch + 1, index + 1, self.steps_taken, loss, norm, clipped, self.optimizer.lr)
        for callback in self.on_step:
            callback(step)

    def _with_own_tokens(self, inputs: dict, lengths, index: int) -> dict:
        """Scheduled sampling: the batch with some steps of its fed-back input replaced by
        the decoder's own tokens, at the schedule's rate for this step of the run."""
        decoder = self.net.decoder()
        counts = self._own_tokens = self._own_tokens or [0, 0]
        total = self.config.epochs * self._batches_per_epoch
        rate = self.sampling(self.epoch * self._batches_per_epoch + index, total)
        rng = numpy.random.default_rng([self.config.seed, self.epoch, index, 13])
        fed, generated = scheduled.mixed_inputs(decoder, inputs, lengths, rate, rng)
        node = node_of(self.net.model.graph, decoder.feedback.input)
        steps = numpy.arange(len(fed))[:, None]
        valid = (steps >= 1) & (steps < numpy.asarray(lengths[node.time])[None, :]) \
            if lengths and node.time in lengths else numpy.broadcast_to(steps >= 1, fed.shape)
        counts[0] += int((generated & valid).sum())
        counts[1] += int(valid.sum())
        return {**inputs, node.name: fed}

    def _captured_step(self, inputs, lengths, state) -> Optional[float]:
        """The step as one CUDA graph (:mod:`seqgraph.backends.capture`); a step that was not
        finite has already been undone on the device."""
        loss = self.captured.step(inputs, lengths, state or None)
        if loss is None:
            return self._nonfinite("the loss or a gradient became NaN or infinite")
        if self.dataset.kind == "text":
            self.carried = dict(self.net.final_states)
        self._check_update()
        self._report_step(self.batch_index, loss, None)
        return loss

    def _check_update(self) -> None:
        broken = faults.nonfinite_parameter(self.net)
        if broken is not None:  # the update itself overflowed: nothing to skip back to
            raise self._fault_error("an update made a parameter NaN or infinite", broken, skippable=False)

    def _nonfinite(self, what: str) -> None:
        """Skip the step (``skip_nonfinite = 1``) or stop, naming where it went wrong."""
        fault = self.net.first_nonfinite()
        if self.config.skip_nonfinite:
            self.echo(f"warning: skipped epoch {self.epoch + 1}, batch {self.batch_index + 1}: {what}; "
                      f"the first non-finite is {fault or 'not found'}")
            return None
        raise self._fault_error(what, fault)

    def _fault_error(self, what: str, fault, skippable: bool = True) -> SeqgraphError:
        kept = [file for file in (checkpoint_file(name, self.config.checkpoints) for name in (LAST, BEST))
                if (self.out_dir / file).exists()]
        checkpoints = (f"the last good checkpoint is kept: {self.out_dir / kept[0]}" if kept
                       else "no checkpoint was written yet")
        remedies = "lower the learning rate or set clip" + \
            (", or set skip_nonfinite = 1 to skip such steps" if skippable else "")
        return SeqgraphError(
            f"training stopped at epoch {self.epoch + 1}, batch {self.batch_index + 1}: {what}; "
            f"the first non-finite is {fault or 'not found'}", hint=f"{checkpoints}; {remedies}")

    # batches: (inputs, lengths, loss weight, tokens)
    def _batches(self, data, train: bool):
        rng = numpy.random.default_rng([self.config.seed, self.epoch, 11]) if train else None
        return model_batches(self.net.model, self.roles, data, self.config, rng)

    # validation
    def _metric_name(self) -> Optional[str]:
        if self.dataset.kind == "text":
            return "perplexity"
        return self.dataset.metric

    def _evaluate(self):
        if self.valid_data is None:
            return None, None
        total = count = correct = seen = 0.0
        saved, self.carried = self.carried, {}
        for inputs, lengths, weight, _ in self._batches(self.valid_data, train=False):
            loss, right, out_of = self._evaluate_batch(inputs, lengths)
            total, count = total + loss * weight, count + weight
            correct, seen = correct + right, seen + out_of
        self.carried = saved
        loss = total / max(count, 1)
        metric = self._metric_name()
        if metric == "perplexity":
            return loss, math.exp(min(loss, 50))
        if metric == "accuracy":
            return loss, correct / max(seen, 1)
        return loss, loss if metric == "mse" else None

    def _evaluate_batch(self, inputs, lengths) -> tuple:
        """``(loss, right, out of)`` for one validation batch (the counts are 0 unless the
        metric is accuracy)."""
        state = self.carried if self.dataset.kind == "text" else None
        loss = float(self.net.backend.to_host(self.net.forward(inputs, lengths, state=state or None)["loss"]))
        if self.dataset.kind == "text":
            self.carried = dict(self.net.final_states)
        right, out_of = self._accuracy(inputs, lengths) if self._metric_name() == "accuracy" else (0.0, 0.0)
        return loss, right, out_of

    def _accuracy(self, inputs, lengths):
        to_host = self.net.backend.to_host
        predicted = to_host(self.net.value(self.roles.prediction)).argmax(-1)
        target = numpy.asarray(inputs[self.roles.target])
        mask = numpy.ones(target.shape, dtype=bool)
        node = self.net.model.inputs[self.roles.target]
        vtype = node_of(self.net.model.graph, node).type
        if vtype.is_seq:
            steps = numpy.arange(target.shape[0])[:, None]
            if lengths and vtype.time in lengths:
                mask &= steps < numpy.asarray(lengths[vtype.time])[None, :]
            if self.dataset.metric_steps:
                start, stop = self.dataset.metric_steps
                mask &= (steps >= start) & (steps < stop)
        return float(((predicted == target) & mask).sum()), float(mask.sum())

    # output
    def _show_sample(self):
        corpus = self.dataset.corpus()
        text = sample_text(self.net, self.roles, corpus, self.config.sample, self.config.temperature,
                           self.config.prime, seed=self.config.seed + self.epoch)
        self.samples.append(text)
        atomic_write(self.out_dir / "samples.txt", lambda f: f.write("\n\n".join(
            f"--- epoch {i + 1} ---\n{s}" for i, s in enumerate(self.samples)).encode("utf-8")))
        self.echo("  sample: " + text.replace("\n", " ")[: self.config.sample + 40])

    def _show_generated(self, row: dict) -> None:
        """Pairs of held-out source and generated output, and how well what was generated
        (greedy, fed back) matches the targets; the two rates go into the epoch's row."""
        decoded = generation.decode_dataset(self.net, self.valid_data, self.roles.target)
        source = generation.decoder_inputs(self.net.model)
        for line in generation.pair_lines(decoded, self.valid_data, source[0] if source else None,
                                          self.config.show):
            self.echo(line)
        self.echo("  " + generation.summary(decoded))
        row["generated_exact_match"] = decoded.exact_match()
        row["generated_token_accuracy"] = decoded.token_accuracy()

    def _save(self, name: str) -> Path:
        path = self.out_dir / checkpoint_file(name, self.config.checkpoints)
        broken = faults.nonfinite_parameter(self.net)
        if broken is not None:  # never replace a good checkpoint by a poisoned one
            raise self._fault_error(f"refusing to write {path.name}: a parameter is not finite", broken,
                                    skippable=False)
        header = {"epoch": self.epoch, "batch": self.batch_index, "history": self.history, "best": self.best,
                  "config": self.config.as_dict(), "model_file": self.model_file,
                  "vocab": self.dataset.vocab, "tokenizer": self.dataset.info.get("tokenizer"),
                  "partial": getattr(self, "_partial", None), "roles": vars(self.roles), "gathered": self.gathered}
        if self.writes:
            save_checkpoint(path, self.net, self.optimizer, header, self.carried, self.accumulated)
        return path

    def _write_config(self):
        resolved = {"model": self.net.model.name, "model_file": self.model_file, "sizes": self.net.model.sizes,
                    "backend": self.net.backend.name, "dtype": self.net.dtype, **self.config.as_dict()}
        data = json.dumps(resolved, indent=2).encode("utf-8")
        atomic_write(self.out_dir / "config.json", lambda f: f.write(data))


def _score(row: dict) -> float:
    """What an epoch is judged by: its validation loss, else its training loss."""
    return row["valid_loss"] if row["valid_loss"] is not None else row["train_loss"]


@contextmanager
def holding_interrupts():
    """Run the block to its end even if Ctrl-C comes, then raise the KeyboardInterrupt: the
    parameters, the optimiser and the batch count all move on together or not at all.
    (Outside the main thread, where signal handlers cannot be set, the block just runs.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_DFL if previous is None else previous)
    if held:
        raise KeyboardInterrupt


def _check_array(origin: str, name: str, array, node: Node) -> None:
    """The array ``name`` of the data at ``origin`` must fit the model's input ``node``: its
    shape, integer ids where the input takes ids, and every id below the input's bound."""
    vtype, span = node.type, node.span
    lead = ("examples", "steps") if vtype.is_seq else ("examples",)
    where = f"data '{origin}': array '{name}'"
    if array.ndim != len(lead) + len(vtype.shape) or tuple(array.shape[len(lead):]) != tuple(vtype.shape):
        layout = ", ".join(list(lead) + [str(d) for d in vtype.shape])
        raise SeqgraphError(f"{where} has shape {tuple(array.shape)}, but the model's '{name}' is "
                            f"{vtype}: it needs ({layout})", span)
    if vtype.dtype != "int":
        return
    if array.dtype.kind not in "iu":
        raise SeqgraphError(f"{where} holds {array.dtype} values, but the model's '{name}' is {vtype}: "
                            "integer ids", span, f"save it with {name}.astype(np.int64)")
    if vtype.bound is not None and array.size and array.max() >= vtype.bound:
        index = numpy.unravel_index(int(numpy.argmax(array)), array.shape)
        raise SeqgraphError(f"{where} holds id {array[index]} (at index {tuple(int(i) for i in index)}), "
                            f"but the model's '{name}' is {vtype}: ids 0..{vtype.bound - 1}", span,
                            "raise the model's size (--size NAME=...) or re-encode the data")
