"""Parameters in and out: ``.npz`` files (never pickled) and PyTorch-style state dicts.

A saved file holds one array per parameter key plus a small JSON header naming the model
and its sizes. Files are written atomically: to a temporary file, flushed, then renamed, so a
crash leaves the previous file intact.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from pathlib import Path

import numpy

from .errors import SeqgraphError

HEADER = "__seqgraph__"


def atomic_write(path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def save_arrays(path, arrays: dict, header: dict) -> None:
    """Write host arrays and a JSON header to ``path`` (an .npz file), atomically."""
    payload = {key: numpy.asarray(value) for key, value in arrays.items()}
    payload[HEADER] = numpy.frombuffer(json.dumps(header).encode("utf-8"), dtype=numpy.uint8)
    atomic_write(path, lambda file: numpy.savez(file, **payload))


def load_arrays(path) -> tuple:
    """``(arrays, header)`` from a file written by :func:`save_arrays`; objects are refused."""
    path = Path(path)
    if not path.exists():
        raise SeqgraphError(f"no such file: {path}")
    try:
        with numpy.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except ValueError as error:
        if "pickle" in str(error).lower() or "object" in str(error).lower():
            raise SeqgraphError(f"{path} holds pickled Python objects, which seqgraph refuses to load",
                                hint="only plain numeric arrays are read, so a file cannot run code") from None
        raise SeqgraphError(f"{path} is not a readable .npz file: {error}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise SeqgraphError(f"{path} is corrupt or truncated ({error})") from None
    raw = arrays.pop(HEADER, None)
    header = json.loads(bytes(raw).decode("utf-8")) if raw is not None else {}
    return arrays, header


def save_params(network, path) -> None:
    """Save ``network.params`` (as host arrays) with the model's name and sizes."""
    to_host = network.backend.to_host
    save_arrays(path, {key: to_host(value) for key, value in network.params.items()},
                {"model": network.model.name, "sizes": network.model.sizes, "kind": "params"})


def load_params(network, path) -> None:
    """Load parameters saved by :func:`save_params` into ``network``; shapes must match."""
    arrays, header = load_arrays(path)
    set_params(network, arrays, str(path))


def set_params(network, arrays: dict, origin: str) -> None:
    """Copy ``arrays`` into ``network.params``: every key present, every shape right."""
    expected = network.params
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    if missing or extra:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing[:4]) + ("..." if len(missing) > 4 else ""))
        if extra:
            parts.append("unexpected " + ", ".join(extra[:4]) + ("..." if len(extra) > 4 else ""))
        raise SeqgraphError(f"{origin} does not match model {network.model.name}: " + "; ".join(parts),
                            hint="was it saved from another model or with other sizes?")
    for key, value in arrays.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise SeqgraphError(f"{origin}: parameter '{key}' has shape {tuple(value.shape)}, "
                                f"the model expects {tuple(expected[key].shape)}")
        if value.dtype.kind != "f":
            raise SeqgraphError(f"{origin}: parameter '{key}' is not a float array ({value.dtype})")
    for key, value in arrays.items():
        network.params[key] = network.backend.asarray(value.astype(network.dtype))


_TORCH_KEY = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)_l(\d+)(_reverse)?$")


def load_torch_state_dict(network, layer: str, state_dict: dict) -> None:
    """Copy a ``torch.nn.LSTM/GRU/RNN`` state dict (as NumPy arrays, keys such as
    ``weight_ih_l0`` and ``weight_hh_l1_reverse``) into the built-in layer ``layer``."""
    stacked = any(key.startswith(f"{layer}.") and re.search(r"_l\d+(_reverse)?$", key)
                  for key in network.params)
    arrays = {}
    for key, value in state_dict.items():
        match = _TORCH_KEY.match(key)
        if match is None:
            raise SeqgraphError(f"'{key}' is not a recurrent-layer parameter name",
                                hint="expected names such as weight_ih_l0, bias_hh_l1_reverse")
        name, index, reverse = match.group(1), match.group(2), match.group(3) or ""
        ours = f"{layer}.{name}" + (f"_l{index}" if stacked else "") + reverse
        if not stacked and index != "0":
            raise SeqgraphError(f"'{key}' is for layer {index}, but {layer} has one layer")
        arrays[ours] = numpy.asarray(value)
    theirs = {k: v for k, v in network.params.items() if k.startswith(f"{layer}.")}
    missing = sorted(set(theirs) - set(arrays))
    if missing:
        raise SeqgraphError(f"the state dict lacks {', '.join(missing)} for layer {layer}")
    for key, value in arrays.items():
        if key not in theirs:
            raise SeqgraphError(f"layer {layer} has no parameter '{key}'")
        if tuple(value.shape) != tuple(theirs[key].shape):
            raise SeqgraphError(f"'{key}' has shape {tuple(value.shape)}, layer {layer} expects "
                                f"{tuple(theirs[key].shape)}")
    for key, value in arrays.items():
        network.params[key] = network.backend.asarray(value.astype(network.dtype))
