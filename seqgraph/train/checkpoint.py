"""Training checkpoints: parameters, optimiser state, position and history in one ``.npz``
(or ``.safetensors``: the extension chooses).

Written atomically (see :func:`seqgraph.weights.atomic_write`), read without unpickling, and
checked against the model they are loaded into.
"""

from __future__ import annotations

from pathlib import Path

import numpy

from ..errors import SeqgraphError
from ..weights import SAFETENSORS, load_arrays, save_arrays, set_params

FINAL, BEST, LAST = "final.npz", "best.npz", "last.npz"
FORMATS = {"npz": ".npz", "safetensors": SAFETENSORS}  # the train setting ``checkpoints``: suffixes


def checkpoint_file(name: str, format: str = "npz") -> str:
    """The file name of checkpoint ``name`` (:data:`FINAL`, :data:`BEST`, :data:`LAST`) in
    ``format``, a key of :data:`FORMATS`: ``final.safetensors`` for ``FINAL`` in safetensors."""
    return Path(name).stem + FORMATS[format]


def save_checkpoint(path, network, optimizer, header: dict, carried: dict | None = None,
                    accumulated: dict | None = None) -> None:
    """Save parameters, optimiser state, carried recurrent state, the gradients gathered
    towards the next update (``accum/<param>``) and ``header``."""
    to_host = network.backend.to_host
    arrays = {f"param/{k}": to_host(v) for k, v in network.params.items()}
    scalars = {}
    for key, value in optimizer.state_dict().items():
        if hasattr(value, "shape") and getattr(value, "ndim", 0) > 0:
            arrays[f"optim/{key}"] = to_host(value)
        else:
            scalars[key] = float(value) if not isinstance(value, int) else value
    for key, value in (carried or {}).items():
        arrays[f"state/{key}"] = to_host(value)
    for key, value in (accumulated or {}).items():
        arrays[f"accum/{key}"] = to_host(value)
    header = {**header, "kind": "checkpoint", "model": network.model.name, "sizes": network.model.sizes,
              "optimizer_scalars": scalars}
    save_arrays(path, arrays, header)


REQUIRED = ("model", "sizes", "epoch", "batch", "history")


def read_checkpoint(path) -> tuple:
    """``(arrays, header)`` of a checkpoint file, or of the newest checkpoint in a run folder.

    A file that is corrupt, truncated, pickled, not a checkpoint, or lacks what a checkpoint
    holds is a SeqgraphError naming the file and what is wrong."""
    path = Path(path)
    if path.is_dir():
        names = [checkpoint_file(name, format) for name in (LAST, FINAL, BEST) for format in FORMATS]
        candidates = [path / name for name in names if (path / name).exists()]
        if not candidates:
            raise SeqgraphError(f"{path} holds no checkpoint ({LAST}, {FINAL} or {BEST})")
        path = max(candidates, key=lambda p: p.stat().st_mtime)
    arrays, header = load_arrays(path)
    if header.get("kind") != "checkpoint":
        raise SeqgraphError(f"{path} is not a seqgraph training checkpoint",
                            hint="weights saved with save_params load with seqgraph.weights.load_params")
    missing = [key for key in REQUIRED if key not in header]
    if missing or not isinstance(header.get("sizes"), dict):
        raise SeqgraphError(f"{path} is a damaged checkpoint: its header lacks "
                            f"{', '.join(missing) or 'the model sizes'}")
    header["path"] = str(path)
    return arrays, header


def read_params(location) -> tuple:
    """``(params, sizes)`` from a run folder, a training checkpoint, or a file written by
    :func:`seqgraph.weights.save_params`: host arrays by key, and the model sizes they fit."""
    if Path(location).is_file():
        arrays, header = load_arrays(location)
        if header.get("kind") == "params":
            return arrays, header.get("sizes", {})
    arrays, header = read_checkpoint(location)
    return _section(arrays, "param/"), header["sizes"]


def initial_params(location) -> dict:
    """The parameters to start a run from, as host arrays by key: those of a run folder's
    newest checkpoint or of a checkpoint file, or every array of any other ``.npz`` file (one
    written by :func:`seqgraph.weights.save_params`, or plain ``np.savez(path, **params)``)."""
    if Path(location).is_file():
        arrays, header = load_arrays(location)
        if header.get("kind") != "checkpoint":
            return arrays
    return read_params(location)[0]


def restore(network, optimizer, arrays: dict, header: dict) -> dict:
    """Load a checkpoint into ``network`` and ``optimizer``; returns the carried states.

    The checkpoint must come from the same model with the same sizes, hold every parameter
    with its shape, finite, and optimiser state for the parameters only."""
    origin = header.get("path", "checkpoint")
    if header.get("model") != network.model.name or header.get("sizes") != network.model.sizes:
        raise SeqgraphError(f"{origin} was saved from model {header.get('model')} with sizes "
                            f"{header.get('sizes')}, not {network.model.name} with {network.model.sizes}",
                            hint="resume with the model file and --size flags the run was started with")
    params = _section(arrays, "param/")
    set_params(network, params, origin)
    for key, value in params.items():
        if not numpy.isfinite(value).all():
            raise SeqgraphError(f"{origin}: parameter '{key}' holds NaN or infinite values",
                                hint="this checkpoint was saved after training diverged; use an "
                                     "earlier one")
    if optimizer is not None:
        buffers = _section(arrays, "optim/")
        _check_buffers(origin, buffers, network.params)
        state = {**header.get("optimizer_scalars", {}),
                 **{k: network.backend.asarray(v) for k, v in buffers.items()}}
        try:
            optimizer.load_state_dict(state)
        except SeqgraphError as error:
            raise SeqgraphError(f"{origin}: {error.message}", hint=error.hint) from None
    return {k: network.backend.asarray(v) for k, v in _section(arrays, "state/").items()}


def _check_buffers(origin: str, buffers: dict, params: dict) -> None:
    """Each optimiser buffer ``<name>/<param key>`` must match its parameter's shape."""
    for entry, value in buffers.items():
        key = entry.partition("/")[2]
        if key not in params:
            raise SeqgraphError(f"{origin}: optimiser state '{entry}' is for a parameter the model "
                                "does not have")
        if tuple(value.shape) != tuple(params[key].shape):
            raise SeqgraphError(f"{origin}: optimiser state '{entry}' has shape {tuple(value.shape)}, "
                                f"the parameter has {tuple(params[key].shape)}")


def _section(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: numpy.asarray(v) for k, v in arrays.items() if k.startswith(prefix)}
