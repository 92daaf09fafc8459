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
from pathlib import Path

import numpy

from .errors import SeqgraphError

HEADER = "__seqgraph__"
TEMPORARY = ".tmp"  # the suffix of atomic_write's temporary files


def atomic_write(path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, flush it to disk, then
    rename it into place: a reader (or a crash, or a kill) sees the old file or the new one,
    never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY)
    try:
        with os.fdopen(handle, "wb") as file:
            os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's file is private; use the usual mode
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _sync_directory(path.parent)


def remove_temporaries(folder) -> list:
    """Delete the temporary files a killed :func:`atomic_write` left in ``folder``; returns
    their names. Only call it while nothing else writes there."""
    removed = []
    for leftover in Path(folder).glob(f".*{TEMPORARY}"):
        leftover.unlink(missing_ok=True)
        removed.append(leftover.name)
    return removed


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def _sync_directory(folder: Path) -> None:
    """Flush the rename itself to disk, so a power cut cannot undo it (POSIX; elsewhere the
    rename is as durable as the file system makes it)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def save_arrays(path, arrays: dict, header: dict) -> None:
    """Write host arrays and a JSON header to ``path`` (an .npz file), atomically."""
    payload = {key: numpy.asarray(value) for key, value in arrays.items()}
    payload[HEADER] = numpy.frombuffer(json.dumps(header).encode("utf-8"), dtype=numpy.uint8)
    atomic_write(path, lambda file: numpy.savez(file, **payload))


_NPZ_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_HINT = "only plain numeric arrays are read, so a file cannot run code"


def read_npz(path, label: str) -> dict:
    """Every array of the ``.npz`` file at ``path``, read with ``allow_pickle=False``.

    Anything else is a SeqgraphError starting with ``label`` (e.g. ``data file 'x.npz'``):
    a missing, empty or truncated file, an ``.npy`` or a pickle, an array of Python objects
    (refused without unpickling it: unpickling can run arbitrary code).
    """
    try:
        with open(path, "rb") as file:
            head = file.read(6)
    except FileNotFoundError:
        raise SeqgraphError(f"{label} does not exist") from None
    except OSError as error:
        raise SeqgraphError(f"cannot read {label}: {error.strerror or error}") from None
    if not head:
        raise SeqgraphError(f"{label} is empty")
    if head.startswith(_NPY_MAGIC):
        raise SeqgraphError(f"{label} is an .npy file holding one unnamed array; seqgraph needs "
                            "named arrays", hint="save them with np.savez(path, x=x, y=y)")
    if head[:1] == b"\x80":
        raise SeqgraphError(f"{label} is a Python pickle; seqgraph refuses pickled data, since "
                            "loading it can run arbitrary code", hint=_PICKLE_HINT)
    if not head.startswith(_NPZ_MAGIC):
        raise SeqgraphError(f"{label} is not an .npz file (it is not a zip archive)",
                            hint="save arrays with np.savez(path, x=x, y=y)")
    arrays = {}
    try:
        with numpy.load(path, allow_pickle=False) as archive:
            for name in archive.files:
                try:
                    arrays[name] = archive[name]
                except ValueError as error:
                    if "allow_pickle" not in str(error):
                        raise
                    raise SeqgraphError(
                        f"{label}: array '{name}' holds Python objects, which would have to be "
                        "unpickled; seqgraph refuses pickled objects, since loading them can run "
                        "arbitrary code", hint=_PICKLE_HINT) from None
    except SeqgraphError:
        raise
    except Exception as error:  # a damaged archive: zipfile, zlib, OSError, ValueError, EOFError
        raise SeqgraphError(f"{label} is corrupt or truncated and cannot be read ({error})") from None
    return arrays


def load_arrays(path) -> tuple:
    """``(arrays, header)`` from a file written by :func:`save_arrays`; objects are refused."""
    path = Path(path)
    if not path.exists():
        raise SeqgraphError(f"no such file: {path}")
    arrays = read_npz(path, str(path))
    raw = arrays.pop(HEADER, None)
    try:
        header = json.loads(bytes(raw).decode("utf-8")) if raw is not None else {}
    except (UnicodeDecodeError, ValueError):
        raise SeqgraphError(f"{path} is corrupt: its header is not readable JSON") from None
    if not isinstance(header, dict):
        raise SeqgraphError(f"{path} is corrupt: its header is not a JSON object")
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
                            hint="was it saved from another model or with other sizes? the keys "
                                 "are <layer>.<param> as `seqgraph check` lists them, e.g. "
                                 f"{next(iter(expected), 'lstm_0.weight_ih')}")
    for key, value in arrays.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise SeqgraphError(f"{origin}: parameter '{key}' has shape {tuple(value.shape)}, "
                                f"the model expects {tuple(expected[key].shape)}",
                                hint="the weights were saved at other model sizes; pass the sizes "
                                     "they were saved with (--size NAME=N)")
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
