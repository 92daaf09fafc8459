"""``seqgraph run`` and ``seqgraph sample``: the commands around :class:`~seqgraph.train.loop.Trainer`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Optional

import numpy

from ..backends import DEFAULT_BACKEND
from ..errors import SeqgraphError
from ..ir import node_of
from ..program import load
from ..runtime import Network
from ..weights import load_matching, set_params
from . import data as datasets
from . import distributed
from .checkpoint import BEST, FINAL, checkpoint_file, read_checkpoint, read_params, restore
from .config import TrainConfig, resolve
from .loop import Interrupted, Roles, Trainer, load_dataset
from .generation import as_numpy_rows, decode_dataset, decoder_inputs, pair_lines, render, summary
from .sampling import sample_text


def _overrides(epochs, batch, seed, data, settings) -> dict:
    overrides = {}
    for item in settings or []:
        if "=" not in item:
            raise SeqgraphError(f"--set takes KEY=VALUE, got '{item}'", hint='e.g. --set "clip = 1.0"')
        key, value = item.split("=", 1)
        overrides[key.strip()] = value.strip()
    for key, value in (("epochs", epochs), ("batch", batch), ("seed", seed)):
        if value is not None:
            overrides[key] = str(value)
    if data is not None:
        if data.startswith("builtin:"):
            overrides["data"] = f'builtin("{data.split(":", 1)[1]}")'
        elif data.endswith(".npz"):
            overrides["data"] = f'npz("{data}")'
        elif data.endswith((".csv", ".tsv", ".tab")):
            overrides["data"] = f'csv("{data}")'
        else:
            overrides["data"] = f'text("{data}")'
    return overrides


def run(model_path, model: Optional[str] = None, data: Optional[str] = None, epochs: Optional[int] = None,
        batch: Optional[int] = None, lr: Optional[float] = None, backend: str = DEFAULT_BACKEND,
        dtype: str = "float32", seed: Optional[int] = None, out: Optional[str] = None,
        resume: Optional[str] = None, settings=None, sizes: Optional[dict] = None, progress: bool = True,
        echo=print, init: Optional[str] = None, on_step=()) -> Trainer:
    """Train the model in ``model_path`` as its train block says, with these overrides
    (``sizes`` replaces model sizes, ``settings`` train settings as ``KEY=VALUE`` text).
    ``init`` names weights to start from (a run folder, a checkpoint or saved parameters);
    each of ``on_step`` is called after every step (see :class:`~seqgraph.train.loop.Trainer`).
    Launched by ``mpiexec -n N``, it is one rank of a data-parallel run
    (:mod:`seqgraph.train.distributed`): only rank 0 prints and writes."""
    if init is not None and resume is not None:
        raise SeqgraphError("--init and --resume cannot be used together",
                            hint="--resume continues a run with its own weights; --init starts a new run")
    world = distributed.world()
    if world is not None:
        echo, progress = world.echo(echo), progress and world.rank == 0
    with distributed.stopping_together(world):
        if world is not None:
            echo(world.prepare(backend))
        return _train(world, model_path, model=model, data=data, epochs=epochs, batch=batch, lr=lr,
                      backend=backend, dtype=dtype, seed=seed, out=out, resume=resume, settings=settings,
                      sizes=sizes, progress=progress, echo=echo, init=init, on_step=on_step)


def _train(world, model_path, model, data, epochs, batch, lr, backend, dtype, seed, out, resume, settings,
           sizes, progress, echo, init, on_step) -> Trainer:
    program = load(model_path)
    chosen = program.model(model)
    if sizes:
        chosen = chosen.with_sizes(**sizes)
    config = resolve(chosen.train, _overrides(epochs, batch, seed, data, settings))
    if lr is not None:
        config.optimizer = replace(config.optimizer, kwargs={**config.optimizer.kwargs, "lr": lr})
    out_dir = Path(out) if out else Path("runs") / Path(model_path).stem
    dataset = load_dataset(config, chosen, Path(model_path).parent)
    make = Trainer if world is None else partial(distributed.DataParallelTrainer, world)
    trainer = make(chosen, config, out_dir, dataset, backend=backend, dtype=dtype, echo=echo,
                   show_progress=progress, model_file=str(model_path), on_step=on_step)
    if resume is not None:
        trainer.resume(resume or out_dir)
    elif init is not None:
        trainer.init_from(init)
    elif config.init:  # the train block's init: the layers that match (a distilling model's teacher)
        loaded = load_matching(trainer.net, read_params(config.init)[0], config.init)
        echo(f"starting from {config.init}: {len(loaded)} parameters ({', '.join(loaded[:3])}{', ...' * (len(loaded) > 3)})")
    echo(f"training {chosen.name} on {dataset.name}: {_count(trainer)} parameters, "
         f"{len(trainer.train_data)} training {'examples' if dataset.kind != 'text' else 'words' if dataset.info.get('tokenizer') else 'characters'}; "
         f"writing to {out_dir}")
    try:
        trainer.run()
    except Interrupted as stop:
        echo(f"\ninterrupted: saved {stop.path}\nresume with: seqgraph run {model_path} --out {out_dir} "
             f"--resume {out_dir}")
        raise
    final, best = (checkpoint_file(name, config.checkpoints) for name in (FINAL, BEST))
    echo(f"done: {out_dir}/{final}, {best}, metrics.csv, loss.png, config.json")
    return trainer


def _count(trainer) -> str:
    total = sum(int(v.size) for v in trainer.net.params.values())
    return f"{total:,}"


@dataclass
class TrainedRun:
    """A trained run loaded back (:func:`load_run`): ``net`` with the trained weights, the
    resolved train settings ``config``, the text ``vocab`` (None for arrays), and where the
    checkpoint and the model file are."""
    net: Network
    config: TrainConfig
    vocab: Optional[list]
    path: str
    model_file: str
    roles: Roles
    tokenizer: Optional[dict] = None

    def corpus(self):
        """The text corpus that encodes and decodes with the run's vocabulary (characters or
        words)."""
        return datasets.corpus_from_vocab(self.vocab, self.tokenizer)

    def predict(self, inputs: dict, lengths=None, outputs=None) -> dict:
        """``net.predict``: the outputs that need no target."""
        return self.net.predict(inputs, lengths, outputs)

    def generate(self, inputs: Optional[dict] = None, lengths=None, **options):
        """``net.generate``: decoding with output feedback."""
        return self.net.generate(inputs, lengths, **options)

    def dataset(self) -> datasets.Dataset:
        """The data the run trained on, made again from its settings."""
        model = self.net.model
        return load_dataset(self.config, model, Path(self.model_file).parent)

    def held_out(self) -> datasets.Dataset:
        """The examples the run kept for validation (never trained on)."""
        data = self.dataset()
        if not self.config.valid:
            raise SeqgraphError(f"the run {self.path} held no data out (valid = 0)")
        return datasets.split(data, self.config.valid, seed=self.config.seed)[1]


def load_run(location, backend: str = DEFAULT_BACKEND, dtype: Optional[str] = None) -> TrainedRun:
    """``seqgraph.load_run``: the model, trained weights and settings of a run folder (its
    newest checkpoint) or of one checkpoint file, in one call."""
    arrays, header = read_checkpoint(location)
    model_file = header.get("model_file")
    if not model_file or not Path(model_file).exists():
        raise SeqgraphError(f"the model file of this run ({model_file}) is not there",
                            hint="load the run from the folder you trained in, or name the model "
                                 "file and the weights: MODEL.sg --weights RUN")
    model = load(model_file).model(header["model"]).with_sizes(**header["sizes"])
    network = Network(model, backend=backend, dtype=dtype or header.get("config", {}).get("dtype", "float32"))
    restore(network, None, arrays, header)
    return TrainedRun(network, TrainConfig.from_dict(header.get("config", {})), header.get("vocab"),
                      header["path"], model_file, Roles(**header["roles"]), header.get("tokenizer"))


def sample(location, length: int = 200, prime: str = "", temperature: float = 0.8, seed: int = 0,
           backend: str = DEFAULT_BACKEND) -> str:
    """Text generated by the language model saved in a run folder or checkpoint."""
    trained = load_run(location, backend)
    if not trained.vocab:
        raise SeqgraphError(f"{trained.path} is not a text language model; nothing to sample")
    corpus = trained.corpus()
    unknown = [c for c in prime if c not in corpus.vocab] if not trained.tokenizer else []
    if unknown:
        raise SeqgraphError(f"the prime text has characters the model never saw: {''.join(unknown)!r}")
    return sample_text(trained.net, trained.roles, corpus, length, temperature, prime, seed)


def generate(location, inputs=(), output: Optional[str] = None, show: int = 5, backend: str = DEFAULT_BACKEND,
             **options) -> str:
    """What ``seqgraph generate`` prints: sequences decoded by the fed-back decoder of a run
    (``options`` as for ``net.generate``). Without ``inputs``, the run's held-out examples
    with the exact match and token accuracy of what was generated; else each ``--input``
    (ids, or text for a text model) or the arrays of one ``.npz`` file; for a model that
    reads nothing but its own output, each ``--input`` starts one output. ``output`` saves the
    generated ids (``tokens`` (N, T), ``lengths`` (N,)) to an ``.npz`` file."""
    trained = load_run(location, backend)
    net = trained.net
    names = decoder_inputs(net.model)
    text = _decoder(trained)
    if not inputs and names:
        data = trained.held_out()
        decoded = decode_dataset(net, data, trained.roles.target, **options)
        lines = [f"{len(data)} held-out examples of {data.name}:",
                 *pair_lines(decoded, data, names[0], show), summary(decoded)]
        rows = decoded.generated
    elif not names:  # a language model: each --input is the start of one output (a prime)
        node = node_of(net.model.graph, net.decoder().feedback.input)
        primes = [_ids(text, trained, node.type.bound) for text in inputs]
        if len(primes) > 1:
            options["count"] = len(primes)
        rows = net.generate({}, prefix=primes if len(primes) > 1 else primes[0] if primes else None,
                            **options).sequences()
        lines = [text(row) for row in rows]
    else:
        arrays, lengths, shown = _given_inputs(trained, names, inputs)
        rows = net.generate(arrays, lengths, **options).sequences()
        lines = [f"{given}  ->  {text(row)}" for given, row in zip(shown, rows)]
    if output:
        tokens, lengths = as_numpy_rows(rows)
        try:
            numpy.savez(output, tokens=tokens, lengths=lengths)
        except OSError as error:
            raise SeqgraphError(f"cannot write {output}: {error.strerror}") from None
        lines.append(f"saved {output}: tokens {tokens.shape}, lengths {lengths.shape}")
    return "\n".join(lines)


def _decoder(trained: TrainedRun):
    """What turns a generated row of ids into the text shown: the run's corpus decoding it
    (a word vocabulary's words re-spaced, a character vocabulary's joined), else the ids."""
    if trained.vocab:
        return trained.corpus().decode
    return render


def _given_inputs(trained: TrainedRun, names: list, inputs) -> tuple:
    """``(arrays, lengths, texts)`` for the decoder from ``--input`` values: one ``.npz``
    file of example-major arrays named after the inputs (an int sequence's length runs to its
    last non-zero id), or ids / text, one example each, for a model with one sequence input."""
    model = trained.net.model
    if len(inputs) == 1 and str(inputs[0]).endswith(".npz"):
        return _npz_inputs(model, names, inputs[0])
    node = node_of(model.graph, model.inputs[names[0]])
    if len(names) != 1 or not node.type.is_seq or node.dtype != "int":
        raise SeqgraphError(f"model {model.name} reads {', '.join(names)}: give them as one .npz file",
                            hint="--input arrays.npz, with one example-major array per input")
    rows = [_ids(text, trained, node.type.bound) for text in inputs]
    lengths = numpy.array([len(r) for r in rows])
    array = numpy.zeros((lengths.max(), len(rows)), dtype=numpy.int64)
    for b, row in enumerate(rows):
        array[:len(row), b] = row
    return {names[0]: array}, {node.time: lengths}, list(inputs)


def _ids(text: str, trained: TrainedRun, bound: int) -> list:
    """The ids of one ``--input``: text encoded with the run's vocabulary, or ids as written."""
    if trained.vocab:
        return [int(i) for i in trained.corpus().encode(text)]
    parts = text.replace(",", " ").split()
    if not parts or not all(p.isdigit() and int(p) < bound for p in parts):
        raise SeqgraphError(f"--input '{text}' is not a list of ids in 0..{bound - 1}", hint='e.g. --input "5 3 9"')
    return [int(p) for p in parts]


def _npz_inputs(model, names: list, path) -> tuple:
    """``(arrays, lengths, labels)``: the decoder's inputs from an ``.npz`` file."""
    from ..weights import read_npz
    arrays = read_npz(path, f"input file '{path}'")
    missing = [n for n in names if n not in arrays]
    if missing:
        raise SeqgraphError(f"{path} has no array '{missing[0]}'", hint="arrays: " + ", ".join(arrays))
    fed, lengths = {}, {}
    for name in names:
        node = node_of(model.graph, model.inputs[name])
        array = numpy.asarray(arrays[name])
        if node.type.is_seq:
            if node.dtype == "int":
                filled = array != 0
                lengths[node.time] = numpy.where(
                    filled.any(axis=1), array.shape[1] - numpy.argmax(filled[:, ::-1], axis=1), 1)
            array = numpy.swapaxes(array, 0, 1)
        fed[name] = array
    count = len(numpy.asarray(arrays[names[0]]))
    return fed, lengths or None, [f"example {i}" for i in range(count)]


def network_from(location, model: Optional[str] = None, weights: Optional[str] = None,
                 sizes: Optional[dict] = None, dtype: str = "float32", seed: int = 0) -> Network:
    """A network to hand on: ``location`` is a model file (freshly initialised from ``seed``,
    or with ``weights``: a run folder, a checkpoint or saved parameters), or a run folder or
    checkpoint (:func:`load_run`), whose own model file and sizes are used."""
    if not str(location).endswith(".sg"):
        return load_run(location, dtype=dtype).net
    chosen = load(location).model(model)
    params = None
    if weights is not None:
        params, sizes = read_params(weights)
    if sizes:
        chosen = chosen.with_sizes(**sizes)
    network = Network(chosen, dtype=dtype, seed=seed)
    if params is not None:
        set_params(network, params, weights)
    return network

