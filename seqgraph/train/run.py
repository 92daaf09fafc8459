"""``seqgraph run`` and ``seqgraph sample``: the commands around :class:`~seqgraph.train.loop.Trainer`."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Optional

from ..errors import SeqgraphError
from ..program import load
from ..runtime import Network
from ..weights import load_matching, set_params
from . import data as datasets
from . import distributed
from .checkpoint import read_checkpoint, read_params, restore
from .config import resolve
from .loop import Interrupted, Roles, Trainer, load_dataset
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
        batch: Optional[int] = None, lr: Optional[float] = None, backend: str = "numpy",
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
    echo(f"done: {out_dir}/final.npz, best.npz, metrics.csv, loss.png, config.json")
    return trainer


def _count(trainer) -> str:
    total = sum(int(v.size) for v in trainer.net.params.values())
    return f"{total:,}"


def sample(location, length: int = 200, prime: str = "", temperature: float = 0.8, seed: int = 0,
           backend: str = "numpy") -> str:
    """Text generated by the language model saved in a run folder or checkpoint."""
    arrays, header = read_checkpoint(location)
    vocab = header.get("vocab")
    if not vocab:
        raise SeqgraphError(f"{header['path']} is not a text language model; nothing to sample")
    model_file = header.get("model_file")
    if not model_file or not Path(model_file).exists():
        raise SeqgraphError(f"the model file of this run ({model_file}) is not there",
                            hint="run seqgraph sample from the folder you trained in")
    model = load(model_file).model(header["model"]).with_sizes(**header["sizes"])
    network = Network(model, backend=backend, dtype=header.get("config", {}).get("dtype", "float32"))
    restore(network, None, arrays, header)
    corpus = datasets.corpus_from_vocab(vocab, header.get("tokenizer"))
    unknown = [c for c in prime if c not in corpus.vocab] if not header.get("tokenizer") else []
    if unknown:
        raise SeqgraphError(f"the prime text has characters the model never saw: {''.join(unknown)!r}")
    return sample_text(network, Roles(**header["roles"]), corpus, length, temperature, prime, seed)


def network_from(location, model: Optional[str] = None, weights: Optional[str] = None,
                 sizes: Optional[dict] = None, dtype: str = "float32", seed: int = 0) -> Network:
    """A network to hand on: ``location`` is a model file (freshly initialised from ``seed``,
    or with ``weights``: a run folder, a checkpoint or saved parameters), or a run folder or
    checkpoint, whose own model file and sizes are used."""
    params = None
    if str(location).endswith(".sg"):
        chosen = load(location).model(model)
        if weights is not None:
            params, sizes = read_params(weights)
        if sizes:
            chosen = chosen.with_sizes(**sizes)
        origin = weights
    else:
        arrays, header = read_checkpoint(location)
        model_file = header.get("model_file")
        if not model_file or not Path(model_file).exists():
            raise SeqgraphError(f"the model file of this run ({model_file}) is not there",
                                hint="name the model file and the weights: MODEL.sg --weights RUN")
        chosen = load(model_file).model(header["model"]).with_sizes(**header["sizes"])
        params, origin = read_params(header["path"])[0], header["path"]
    network = Network(chosen, dtype=dtype, seed=seed)
    if params is not None:
        set_params(network, params, origin)
    return network
