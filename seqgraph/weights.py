"""Parameters in and out: ``.npz`` or ``.safetensors`` files (never pickled) and PyTorch
state dicts.

A saved file holds one array per parameter key plus a small JSON header naming the model
and its sizes (in ``.npz`` an array named ``__seqgraph__``; in ``.safetensors`` the metadata
entry of that name). The extension chooses the format wherever a file is written or read.
Files are written atomically: to a temporary file, flushed, then renamed, so a crash leaves
the previous file intact.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import numpy

from .errors import SeqgraphError, did_you_mean

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


SAFETENSORS = ".safetensors"


def is_safetensors(path) -> bool:
    """Whether ``path`` names a safetensors file (by its extension)."""
    return Path(path).suffix.lower() == SAFETENSORS


def _safetensors():
    """The ``safetensors`` package, imported on first use: it is an optional extra."""
    try:
        import safetensors.numpy
    except ImportError:
        raise SeqgraphError("reading and writing .safetensors files needs the safetensors package",
                            hint="pip install 'seqgraph[safetensors]', or use an .npz file") from None
    return safetensors


def save_arrays(path, arrays: dict, header: dict) -> None:
    """Write host arrays and a JSON header to ``path`` (``.npz``, or ``.safetensors`` by its
    extension), atomically."""
    payload = {key: numpy.ascontiguousarray(value) for key, value in arrays.items()}
    text = json.dumps(header)
    if is_safetensors(path):
        encoded = _safetensors().numpy.save(payload, metadata={HEADER: text})
        atomic_write(path, lambda file: file.write(encoded))
        return
    payload[HEADER] = numpy.frombuffer(text.encode("utf-8"), dtype=numpy.uint8)
    atomic_write(path, lambda file: numpy.savez(file, **payload))


def read_safetensors(path, label: str) -> tuple:
    """``(arrays, metadata)`` of the ``.safetensors`` file at ``path``, read with the
    safetensors library (which holds only raw tensors, so reading it runs no code). A missing,
    empty or damaged file is a SeqgraphError starting with ``label``."""
    library = _safetensors()
    try:
        if Path(path).stat().st_size == 0:
            raise SeqgraphError(f"{label} is empty")
        with library.safe_open(str(path), framework="np") as file:
            arrays = {key: file.get_tensor(key) for key in file.keys()}
            metadata = dict(file.metadata() or {})
    except FileNotFoundError:
        raise SeqgraphError(f"{label} does not exist") from None
    except SeqgraphError:
        raise
    except Exception as error:  # SafetensorError, or an OSError from the file system
        raise SeqgraphError(f"{label} is not a readable safetensors file ({error})",
                            hint="is it truncated, or another format under this name?") from None
    return arrays, metadata


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
    if is_safetensors(path):
        arrays, metadata = read_safetensors(path, str(path))
        raw = metadata.get(HEADER, "{}").encode("utf-8")
    else:
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
    """Save ``network.params`` (as host arrays) with the model's name and sizes, to an
    ``.npz`` or a ``.safetensors`` file (by the extension of ``path``)."""
    to_host = network.backend.to_host
    save_arrays(path, {key: to_host(value) for key, value in network.params.items()},
                {"model": network.model.name, "sizes": network.model.sizes, "kind": "params"})


def load_params(network, path) -> None:
    """Load parameters saved by :func:`save_params` (``.npz`` or ``.safetensors``) into
    ``network``; shapes must match."""
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
    _copy_in(network, arrays, f"{origin}: ", "the model")


def _copy_in(network, arrays: dict, origin: str, owner: str) -> None:
    """Copy ``arrays`` (by parameter key) into ``network.params`` once every one is a float
    array of its parameter's shape; ``origin`` and ``owner`` say whose in an error."""
    for key, value in arrays.items():
        want = tuple(network.params[key].shape)
        if tuple(value.shape) != want:
            raise SeqgraphError(f"{origin}parameter '{key}' has shape {tuple(value.shape)}, "
                                f"{owner} expects {want}",
                                hint="the weights were saved at other model sizes; pass the sizes "
                                     "they were saved with (--size NAME=N)")
        if value.dtype.kind != "f":
            raise SeqgraphError(f"{origin}parameter '{key}' is not a float array ({value.dtype})")
    for key, value in arrays.items():
        network.params[key] = network.backend.asarray(value.astype(network.dtype))


def load_matching(network, arrays: dict, origin: str) -> list:
    """Copy into ``network`` the ``arrays`` held under its keys with its shapes (a trained
    teacher's layers in a distilling model); their keys. Sharing none is a SeqgraphError."""
    shared = sorted(key for key, value in arrays.items()
                    if key in network.params and tuple(value.shape) == tuple(network.params[key].shape))
    if not shared:
        raise SeqgraphError(f"{origin} holds no parameter of model {network.model.name}",
                            hint="layers are matched by key and shape: name them alike with name = ...")
    for key in shared:
        network.params[key] = network.backend.asarray(arrays[key].astype(network.dtype))
    return shared


# --- PyTorch state dicts ---------------------------------------------------------------------
#
# Every built-in layer keeps PyTorch's parameter layout, so a state dict maps onto a layer's
# parameters by name alone. nn.Linear, nn.Embedding, nn.Conv1d and nn.Conv2d hold ``weight``
# and ``bias``, as dense, embedding, conv1d and conv2d do. nn.LSTM, nn.GRU and nn.RNN number
# every layer (``weight_ih_l0``, ``bias_hh_l1_reverse``) while a seqgraph recurrence numbers
# its layers only when it has several (``lstm_0.weight_ih``, ``lstm_0.weight_ih_l1``).

_TORCH_NAMES = "weight_ih|weight_hh|bias_ih|bias_hh|weight_hr"
_TORCH_KEY = re.compile(rf"^({_TORCH_NAMES})_l(\d+)(_reverse)?$")
_OUR_RECURRENT_KEY = re.compile(rf"^({_TORCH_NAMES})(?:_l(\d+))?(_reverse)?$")
TORCH_FILES = (".pt", ".pth", ".bin")


def _layer_params(network, layer: str) -> dict:
    """Parameter name within ``layer`` → its array; a layer without any is an error."""
    prefix = f"{layer}."
    found = {key[len(prefix):]: value for key, value in network.params.items() if key.startswith(prefix)}
    if not found:
        layers = sorted({key.partition(".")[0] for key in network.params})
        raise SeqgraphError(f"model {network.model.name} has no layer '{layer}' with parameters",
                            hint=did_you_mean(layer, layers) or "layers: " + ", ".join(layers))
    return found


def _recurrent_layout(names) -> tuple:
    """``(recurrent, stacked)``: whether a layer's parameter names are a recurrence's, and
    whether they number its layers."""
    matches = [_OUR_RECURRENT_KEY.match(name) for name in names]
    return any(matches), any(match and match.group(2) for match in matches)


def _host_array(value):
    """A NumPy array of a state-dict entry: a NumPy array, or a torch tensor on any device."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return numpy.asarray(value)


def load_torch_state_dict(network, layer: str, state_dict: dict, prefix: str = "") -> None:
    """Copy a PyTorch ``state_dict`` into the layer ``layer`` of ``network``.

    It may come from ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` (keys such as ``weight_ih_l0`` and
    ``bias_hh_l1_reverse``) into a built-in recurrence of as many layers and directions, or
    from ``nn.Linear``, ``nn.Embedding``, ``nn.Conv1d`` or ``nn.Conv2d`` (``weight``,
    ``bias``) into dense, embedding, conv1d or conv2d. Values are NumPy arrays or torch
    tensors. With ``prefix`` (``"encoder."``) only the keys starting with it are read, so a
    whole model's state dict loads one module at a time. Every parameter of the layer must
    be given, each with its shape, except those PyTorch has no counterpart for (``init =
    learned``'s ``h0``), which keep their values; ``proj_size``'s ``weight_hr_l0`` loads too,
    and a layer with ``bias = false`` has no biases, as the module has none."""
    ours = _layer_params(network, layer)
    recurrent, stacked = _recurrent_layout(ours)
    arrays = {}
    for key, value in state_dict.items():
        if not key.startswith(prefix):
            continue
        name = _our_name(key[len(prefix):], recurrent, stacked, layer)
        if name not in ours:
            raise SeqgraphError(f"layer {layer} has no parameter '{layer}.{name}' (for '{key}')",
                                hint="its parameters: " + ", ".join(sorted(ours)))
        arrays[name] = _host_array(value)
    wanted = {name for name in ours if not recurrent or _OUR_RECURRENT_KEY.match(name)}
    missing = sorted(wanted - set(arrays))
    if missing:
        raise SeqgraphError(f"the state dict lacks {', '.join(f'{layer}.{m}' for m in missing)} "
                            f"for layer {layer}", hint=f"keys read: those starting with '{prefix}'"
                            if prefix else None)
    _copy_in(network, {f"{layer}.{name}": value for name, value in arrays.items()}, "", f"layer {layer}")


def _our_name(key: str, recurrent: bool, stacked: bool, layer: str) -> str:
    """The name within a seqgraph layer of PyTorch's state-dict key ``key``."""
    if not recurrent:
        return key
    match = _TORCH_KEY.match(key)
    if match is None:
        raise SeqgraphError(f"'{key}' is not a recurrent-layer parameter name",
                            hint="expected names such as weight_ih_l0, bias_hh_l1_reverse")
    name, index, reverse = match.group(1), match.group(2), match.group(3) or ""
    if not stacked and index != "0":
        raise SeqgraphError(f"'{key}' is for layer {index}, but {layer} has one layer")
    return name + (f"_l{index}" if stacked else "") + reverse


def to_torch_state_dict(network, layer: str, prefix: str = "") -> dict:
    """The layer ``layer`` of ``network`` as a PyTorch state dict (NumPy arrays, keys
    prefixed with ``prefix``): the inverse of :func:`load_torch_state_dict`. Turn it into
    tensors with ``{k: torch.from_numpy(v) for k, v in d.items()}`` for ``load_state_dict``."""
    ours = _layer_params(network, layer)
    recurrent = _recurrent_layout(ours)[0]
    to_host = network.backend.to_host
    result = {}
    for name, value in ours.items():
        key = name
        if recurrent:
            match = _OUR_RECURRENT_KEY.match(name)
            if match is None:  # no PyTorch counterpart (init = learned's h0)
                continue
            base, index, reverse = match.groups()
            key = f"{base}_l{index or 0}{reverse or ''}"
        result[prefix + key] = numpy.array(to_host(value))
    return result


def read_torch_state_dict(path) -> dict:
    """A PyTorch state dict saved at ``path``, as NumPy arrays: a ``.safetensors`` file
    (``safetensors.torch.save_file(module.state_dict(), path)``) read with the safetensors
    library, or a ``.pt``/``.pth``/``.bin`` file from ``torch.save`` read with
    ``torch.load(weights_only=True)`` (tensors only: no pickled code runs), which needs torch."""
    path = Path(path)
    if is_safetensors(path):
        return read_safetensors(path, str(path))[0]
    if path.suffix.lower() not in TORCH_FILES:
        raise SeqgraphError(f"{path}: a state dict is read from .safetensors, .pt, .pth or .bin files")
    torch = _torch()
    if not path.exists():
        raise SeqgraphError(f"no such file: {path}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a damaged file, or one holding more than tensors
        raise SeqgraphError(f"{path} is not a state dict torch.load(weights_only=True) can read "
                            f"({str(error).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise SeqgraphError(f"{path} holds a {type(loaded).__name__}, not a state dict",
                            hint="save module.state_dict(), not the module")
    return {key: _host_array(value) for key, value in loaded.items()}


def save_torch_state_dict(network, layer: str, path, prefix: str = "") -> None:
    """Write :func:`to_torch_state_dict` to ``path``: a ``.safetensors`` file (PyTorch reads it
    with ``safetensors.torch.load_file``) or, with torch installed, a ``.pt`` file for
    ``torch.load``. Either loads with ``module.load_state_dict``."""
    arrays = to_torch_state_dict(network, layer, prefix)
    if is_safetensors(path):
        encoded = _safetensors().numpy.save(arrays, metadata={"format": "pt"})
        atomic_write(path, lambda file: file.write(encoded))
        return
    if Path(path).suffix.lower() not in TORCH_FILES:
        raise SeqgraphError(f"{path}: a state dict is written to a .safetensors, .pt or .pth file")
    torch = _torch()
    tensors = {key: torch.from_numpy(value) for key, value in arrays.items()}
    atomic_write(path, lambda file: torch.save(tensors, file))


def _torch():
    """PyTorch, imported on first use (only .pt files need it)."""
    try:
        import torch
    except ImportError:
        raise SeqgraphError("reading or writing .pt files needs PyTorch",
                            hint="install torch, or save the state dict as .safetensors") from None
    return torch
