"""Training checkpoints: parameters, optimiser state, position and history in one ``.npz``.

Written atomically (see :func:`seqgraph.weights.atomic_write`), read without unpickling, and
checked against the model they are loaded into.
"""

from __future__ import annotations

from pathlib import Path

import numpy

from ..errors import SeqgraphError
from ..weights import load_arrays, save_arrays, set_params

FINAL, BEST, LAST = "final.npz", "best.npz", "last.npz"


def save_checkpoint(path, network, optimizer, header: dict, carried: dict | None = None) -> None:
    """Save parameters, optimiser state, carried recurrent state and ``header``."""
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
    header = {**header, "kind": "checkpoint", "model": network.model.name, "sizes": network.model.sizes,
              "optimizer_scalars": scalars}
    save_arrays(path, arrays, header)


def read_checkpoint(path) -> tuple:
    """``(arrays, header)`` of a checkpoint file, or of the newest checkpoint in a run folder."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / name for name in (LAST, FINAL, BEST) if (path / name).exists()]
        if not candidates:
            raise SeqgraphError(f"{path} holds no checkpoint ({LAST}, {FINAL} or {BEST})")
        path = max(candidates, key=lambda p: p.stat().st_mtime)
    arrays, header = load_arrays(path)
    if header.get("kind") != "checkpoint":
        raise SeqgraphError(f"{path} is not a seqgraph training checkpoint")
    header["path"] = str(path)
    return arrays, header


def restore(network, optimizer, arrays: dict, header: dict) -> dict:
    """Load a checkpoint into ``network`` and ``optimizer``; returns the carried states."""
    origin = header.get("path", "checkpoint")
    if header.get("model") != network.model.name or header.get("sizes") != network.model.sizes:
        raise SeqgraphError(f"{origin} was saved from model {header.get('model')} with sizes "
                            f"{header.get('sizes')}, not {network.model.name} with {network.model.sizes}")
    set_params(network, _section(arrays, "param/"), origin)
    if optimizer is not None:
        state = {**header.get("optimizer_scalars", {}),
                 **{k: network.backend.asarray(v) for k, v in _section(arrays, "optim/").items()}}
        optimizer.load_state_dict(state)
    return {k: network.backend.asarray(v) for k, v in _section(arrays, "state/").items()}


def _section(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: numpy.asarray(v) for k, v in arrays.items() if k.startswith(prefix)}
