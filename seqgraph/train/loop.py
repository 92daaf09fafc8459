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
from ..backends import get_backend
from ..backends.capture import TrainingStep
from ..errors import SeqgraphError
from ..runtime import Network
from ..weights import atomic_write, remove_temporaries
from . import data as datasets
from . import generation, optim, report, scheduled
from .checkpoint import BEST, FINAL, LAST, read_checkpoint, restore, save_checkpoint
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
    """The loss node and the prediction and target it compares."""
    loss = model.require_loss()
    graph = model.graph
    prediction, target_node = graph.nodes[loss]["args"][:2]
    names = {node: name for name, node in model.inputs.items()}
    target = names.get(target_node)
    inputs = [n for n in model.checked.inputs]
    return Roles(loss, prediction, target, inputs[0] if len(inputs) == 1 else None)


class Interrupted(Exception):
    """Training stopped by Ctrl-C after a checkpoint was saved."""

    def __init__(self, path: Path):
        super().__init__(str(path))
        self.path = path


def load_dataset(config: TrainConfig, model, base_dir: Optional[Path] = None) -> datasets.Dataset:
    """The dataset the config names (a built-in task, a text file, or .npz arrays)."""
    call = config.data
    if call is None:
        raise SeqgraphError(f"model {model.name} says no data to train on",
                            model.train.span if model.train else model.ast.span,
                            'add  data = builtin("...")  to its train block, or pass --data FILE')
    if call.name not in ("builtin", "text", "npz") or len(call.args) != 1:
        raise SeqgraphError(f"unknown data source {call.name}(...)", call.span,
                            'use builtin("name", sizes...), text("file.txt") or npz("arrays.npz")')
    spec = call.args[0]
    if call.name == "builtin" or (call.name == "text" and str(spec).startswith("builtin:")):
        name = str(spec).split(":", 1)[-1]
        return datasets.builtin(name, n=config.examples, seed=config.seed, span=call.span, **call.kwargs)
    path = _find_file(str(spec), base_dir)
    if call.name == "text":
        return datasets.load_text(path)
    axes = {name: model.graph.nodes[node]["time"] for name, node in model.inputs.items()
            if model.graph.nodes[node]["type"].is_seq}
    return datasets.load_npz(path, time_axes=axes)


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
                       if model.graph.nodes[node]["type"].is_seq and model.graph.nodes[node]["dtype"] == "int"]
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
        _check_array(dataset.name, name, dataset.arrays[name], model.graph.nodes[node])
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
        size = len(next(iter(lengths.values()))) if lengths else _batch_size(model, inputs)
        tokens = int(sum(l.sum() for l in lengths.values())) if lengths else size
        yield inputs, lengths or None, size, tokens


class Trainer:
    """Trains one network on one dataset; ``run()`` returns the history, a dict per epoch."""

    def __init__(self, model, config: TrainConfig, out_dir, dataset: datasets.Dataset,
                 backend: str = "numpy", dtype: str = "float32", echo=print, show_progress: bool = True,
                 model_file: Optional[str] = None):
        self.config, self.out_dir, self.echo = config, Path(out_dir), echo
        self.show_progress = show_progress
        self.model_file = model_file
        self.dataset = dataset
        if dataset.kind == "text":
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
        self.captured = TrainingStep(self.net, self.optimizer, config.clip or None) \
            if self.net.backend.name == "cupy" else None
        self.history: list = []
        self.best = math.inf
        self.epoch, self.batch_index = 0, 0
        self.carried: dict = {}
        self.samples: list = []
        self.sampling = scheduled.make_sampling_schedule(config.scheduled_sampling, model)
        self._own_tokens = None  # scheduled sampling: [generated, fed] tokens this epoch

    # set-up
    def _fit_vocabulary(self, model, dataset):
        """A text model's ``vocab`` size follows its corpus."""
        size = dataset.vocab_size
        if "vocab" in model.sizes and model.sizes["vocab"] != size:
            self.echo(f"note: vocab = {size} (the corpus has {size} distinct characters; "
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

    def resume(self, location) -> None:
        """Continue from the checkpoint in a run folder (or a checkpoint file)."""
        arrays, header = read_checkpoint(location)
        self.carried = restore(self.net, self.optimizer, arrays, header)
        self.epoch, self.batch_index = header["epoch"], header["batch"]
        self.history = header.get("history", [])
        self.best = header.get("best", math.inf)
        self._partial = header.get("partial")
        self.echo(f"resuming from {header['path']} at epoch {self.epoch + 1}, batch {self.batch_index}")

    # the loop
    def run(self) -> list:
        """Train until the epochs are done or early stopping says so; write the run's files."""
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
                score = row["valid_loss"] if row["valid_loss"] is not None else row["train_loss"]
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
        report.plot_losses(self.out_dir / "loss.png", self.history, self.net.model.name)
        return self.history

    def _epochs_without_improvement(self) -> int:
        stale = 0
        for row in self.history:
            score = row["valid_loss"] if row["valid_loss"] is not None else row["train_loss"]
            stale = 0 if score <= self.best else stale + 1
        return stale

    def _unit(self) -> str:
        return "tokens" if self.dataset.kind == "text" or self._has_sequences() else "examples"

    def _has_sequences(self) -> bool:
        return bool(self.dataset.time_axes)

    def _train_epoch(self) -> dict:
        lr = self.schedule.lr_at(self.epoch, self.base_lr)
        self.optimizer.lr = lr
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
            with holding_interrupts():  # a checkpoint never holds half a step's bookkeeping
                loss = self._step(inputs, lengths, index)
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
               "metric": self._metric_name(), "metric_value": metric_value, "lr": lr,
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

    def _step(self, inputs, lengths, index) -> Optional[float]:
        """One forward, backward and update; the loss, or None for a skipped step."""
        net = self.net
        net._rng = numpy.random.default_rng([self.config.seed, self.epoch, index, 7])
        state = self.carried if self.dataset.kind == "text" else None
        if self.sampling is not None:
            inputs = self._with_own_tokens(inputs, lengths, index)
        if self.captured is not None:
            return self._captured_step(inputs, lengths, state)
        loss = float(net.backend.to_host(net.forward(inputs, lengths, state=state or None, training=True)["loss"]))
        if not math.isfinite(loss):
            return self._nonfinite(f"the loss became {loss}")
        grads = net.backward()
        grads = {k: v for k, v in grads.items() if k in net.params}
        if self.config.clip:  # the global norm is finite exactly when every gradient is
            finite = math.isfinite(optim.clip_grad_norm(self.xp, grads, self.config.clip))
        else:
            finite = all(bool(self.xp.isfinite(g).all()) for g in grads.values())
        if not finite:
            return self._nonfinite("a gradient became NaN or infinite")
        if self.dataset.kind == "text":  # a skipped window does not pass its state on
            self.carried = dict(net.final_states)
        self.optimizer.step(net.params, grads)
        self._check_update()
        return loss

    def _with_own_tokens(self, inputs: dict, lengths, index: int) -> dict:
        """Scheduled sampling: the batch with some steps of its fed-back input replaced by
        the decoder's own tokens, at the schedule's rate for this step of the run."""
        decoder = self.net.decoder()
        counts = self._own_tokens = self._own_tokens or [0, 0]
        total = self.config.epochs * self._batches_per_epoch
        rate = self.sampling(self.epoch * self._batches_per_epoch + index, total)
        rng = numpy.random.default_rng([self.config.seed, self.epoch, index, 13])
        fed, generated = scheduled.mixed_inputs(decoder, inputs, lengths, rate, rng)
        node = self.net.model.graph.nodes[decoder.feedback.input]
        steps = numpy.arange(len(fed))[:, None]
        valid = (steps >= 1) & (steps < numpy.asarray(lengths[node["time"]])[None, :]) \
            if lengths and node["time"] in lengths else numpy.broadcast_to(steps >= 1, fed.shape)
        counts[0] += int((generated & valid).sum())
        counts[1] += int(valid.sum())
        return {**inputs, node["name"]: fed}

    def _captured_step(self, inputs, lengths, state) -> Optional[float]:
        """The step as one CUDA graph (:mod:`seqgraph.backends.capture`); a step that was not
        finite has already been undone on the device."""
        loss = self.captured.step(inputs, lengths, state or None)
        if loss is None:
            return self._nonfinite("the loss or a gradient became NaN or infinite")
        if self.dataset.kind == "text":
            self.carried = dict(self.net.final_states)
        self._check_update()
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
        kept = [name for name in (LAST, BEST) if (self.out_dir / name).exists()]
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
            state = self.carried if self.dataset.kind == "text" else None
            loss = float(self.net.backend.to_host(self.net.forward(inputs, lengths, state=state or None)["loss"]))
            if self.dataset.kind == "text":
                self.carried = dict(self.net.final_states)
            total, count = total + loss * weight, count + weight
            if self._metric_name() == "accuracy":
                right, out_of = self._accuracy(inputs, lengths)
                correct, seen = correct + right, seen + out_of
        self.carried = saved
        loss = total / max(count, 1)
        metric = self._metric_name()
        if metric == "perplexity":
            return loss, math.exp(min(loss, 50))
        if metric == "accuracy":
            return loss, correct / max(seen, 1)
        return loss, loss if metric == "mse" else None

    def _accuracy(self, inputs, lengths):
        to_host = self.net.backend.to_host
        predicted = to_host(self.net.value(self.roles.prediction)).argmax(-1)
        target = numpy.asarray(inputs[self.roles.target])
        mask = numpy.ones(target.shape, dtype=bool)
        node = self.net.model.inputs[self.roles.target]
        vtype = self.net.model.graph.nodes[node]["type"]
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
        path = self.out_dir / name
        broken = faults.nonfinite_parameter(self.net)
        if broken is not None:  # never replace a good checkpoint by a poisoned one
            raise self._fault_error(f"refusing to write {name}: a parameter is not finite", broken,
                                    skippable=False)
        header = {"epoch": self.epoch, "batch": self.batch_index, "history": self.history, "best": self.best,
                  "config": self.config.as_dict(), "model_file": self.model_file,
                  "vocab": self.dataset.vocab, "partial": getattr(self, "_partial", None),
                  "roles": vars(self.roles)}
        save_checkpoint(path, self.net, self.optimizer, header, self.carried)
        return path

    def _write_config(self):
        resolved = {"model": self.net.model.name, "model_file": self.model_file, "sizes": self.net.model.sizes,
                    "backend": self.net.backend.name, "dtype": self.net.dtype, **self.config.as_dict()}
        data = json.dumps(resolved, indent=2).encode("utf-8")
        atomic_write(self.out_dir / "config.json", lambda f: f.write(data))


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


def _check_array(origin: str, name: str, array, node: dict) -> None:
    """The array ``name`` of the data at ``origin`` must fit the model's input ``node``: its
    shape, integer ids where the input takes ids, and every id below the input's bound."""
    vtype, span = node["type"], node["span"]
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


def _batch_size(model, inputs) -> int:
    name, array = next(iter(inputs.items()))
    vtype = model.graph.nodes[model.inputs[name]]["type"]
    return array.shape[1] if vtype.is_seq else array.shape[0]
