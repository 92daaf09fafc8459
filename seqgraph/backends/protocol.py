"""What the compiler and the runtime ask of a backend: a name, an array namespace, host
transfers, explicit capabilities, and an override table of faster pieces for some ops.

- **Capabilities** say which of the compiler's fast paths a backend's namespace takes; the
  compiler asks them, never the namespace's attributes.
- **Overrides** are keyed by op name. An :class:`Override` holds a backend's own forward or
  vjp for an op (a native loop on the CPU, say), each free to decline arrays it cannot take
  by returning None; then the op's own rule from the registry runs. The op record itself
  never knows about backends: :class:`OpTable` puts the two together.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping, Optional

from ..errors import SeqgraphError
from ..ops.registry import REGISTRY


@dataclass(frozen=True)
class Capabilities:
    """The fast paths a backend's namespace takes, each off unless the backend says so.

    - ``chain_kernels``: fused elementwise chains run as one generated kernel each (CUDA
      ``ElementwiseKernel`` objects, or native C loops on the CPU);
    - ``native_loops``: a scan's whole step loop runs as one native call;
    - ``packed_products``: ``xp.pack(weight, rows, reuse)`` packs a weight many step
      products share, once per pass;
    - ``row_sharing``: ``xp.shares(rows, least)`` shares native work over rows among the
      product library's threads;
    - ``memory_bounds``: ``xp.may_share_memory`` tells whether two arrays may overlap, and
      arrays expose where their bytes lie (``data.ptr`` or ``__array_interface__``);
    - ``float_errors``: ``xp.errstate`` silences floating-point warnings for a block;
    - ``step_capture``: a training step can be recorded once and replayed
      (:meth:`Backend.recorder`, see :mod:`seqgraph.backends.capture`);
    - ``cuda_arrays``: arrays live in a CUDA device's memory (ranks sum them through NCCL).
    """
    chain_kernels: bool = False
    native_loops: bool = False
    packed_products: bool = False
    row_sharing: bool = False
    memory_bounds: bool = False
    float_errors: bool = False
    step_capture: bool = False
    cuda_arrays: bool = False


@dataclass(frozen=True)
class Override:
    """A backend's own pieces of one op. ``forward(xp, *inputs, **attrs)`` returns the output,
    ``vjp(xp, g, out, *inputs, wanted=None, **attrs)`` one gradient per input; either
    returns None (the vjp: None for an input) where it does not take the arrays, and the
    op's registered rule computes what is missing."""
    forward: Optional[Callable] = None
    vjp: Optional[Callable] = None


def with_override(op, override: Override):
    """``op`` with ``override``'s pieces in front of its own forward and vjp."""
    changes = {}
    if override.forward is not None:
        changes["forward"] = _forward_with(op, override.forward)
    if override.vjp is not None:
        changes["vjp"] = _vjp_with(op, override.vjp)
    return replace(op, **changes)


def _forward_with(op, fast):
    def forward(xp, *inputs, **attrs):
        done = fast(xp, *inputs, **attrs)
        return done if done is not None else op.forward(xp, *inputs, **attrs)
    return forward


def _vjp_with(op, fast):
    def vjp(xp, g, out, *inputs, wanted=None, **attrs):
        done = fast(xp, g, out, *inputs, wanted=wanted, **attrs)
        if done is None:
            return op.partial_vjp(xp, g, out, *inputs, wanted=wanted, **attrs)
        asked = wanted if wanted is not None else (True,) * len(done)
        done = tuple(got if want else None for want, got in zip(asked, done))
        missing = tuple(bool(want) and got is None and port not in op.nondiff
                        for port, (want, got) in enumerate(zip(asked, done)))
        if not any(missing):
            return done
        rest = op.partial_vjp(xp, g, out, *inputs, wanted=missing, **attrs)
        return tuple(got if got is not None else other for got, other in zip(done, rest))
    return vjp


class OpTable(Mapping):
    """The registry's ops as one backend runs them: each op with an entry in ``overrides``
    has that override in front of its own rules (put together once per registry record),
    the rest are the registry's records themselves."""

    def __init__(self, overrides: Mapping[str, Override]):
        self.overrides = overrides
        self._made: dict = {}

    def __getitem__(self, name: str):
        op = REGISTRY[name]
        override = self.overrides.get(name)
        if override is None:
            return op
        made = self._made.get(name)
        if made is None or made[0] is not op:  # made again when the registry's record changes
            made = self._made[name] = (op, with_override(op, override))
        return made[1]

    def __iter__(self):
        return iter(REGISTRY)

    def __len__(self) -> int:
        return len(REGISTRY)


_TABLES: dict = {}


def table_of(overrides: Mapping[str, Override]) -> OpTable:
    """The one :class:`OpTable` of ``overrides`` (an override table is made once, by its
    backend's module, and its ops are put together once)."""
    table = _TABLES.get(id(overrides))
    if table is None:
        table = _TABLES[id(overrides)] = OpTable(overrides)  # the table holds it: the id stays its own
    return table


class Backend:
    """One backend: ``name``, its array namespace ``xp``, host transfers, what it can do
    (:meth:`capabilities`) and its override table (``overrides``, by op name). A new backend
    subclasses this and sets ``name`` and ``xp``; everything else has a plain default."""

    name: str = ""
    xp: object = None
    products: str = ""  # who runs the matrix products, as reports name it (empty: the name)
    overrides: Mapping[str, Override] = {}

    @classmethod
    def over(cls, xp) -> Optional["Backend"]:
        """This kind of backend over a bare namespace ``xp`` (one that no backend object was
        made for, as tests hand NumPy's module to the compiler), or None when ``xp`` is not
        its kind of namespace."""
        return None

    def capabilities(self) -> Capabilities:
        """The compiler's fast paths this backend takes now (none by default)."""
        return Capabilities()

    @property
    def ops(self) -> OpTable:
        """The op registry with this backend's overrides in front (see :class:`OpTable`)."""
        return table_of(self.overrides)

    def recorder(self):
        """What records a training step once for replays (see
        :mod:`seqgraph.backends.capture`), where ``step_capture`` is a capability."""
        raise SeqgraphError(f"the {self.name or type(self).__name__} backend cannot record a training step")

    @classmethod
    def use_device_of_rank(cls, local_rank: int, local_size: int) -> Optional[str]:
        """Before the backend is made: give data-parallel rank ``local_rank`` of the
        ``local_size`` on this machine a device of its own, and say which; None where the
        backend has no devices to choose from."""
        return None

    def free_memory(self) -> Optional[int]:
        """Bytes its device can still allocate; None where arrays live in host memory."""
        return None

    def first_byte(self, array) -> int:
        """The address of ``array``'s first element, where ``memory_bounds`` is a capability."""
        raise NotImplementedError

    def asarray(self, array, dtype=None):
        """A backend array from a host array."""
        return self.xp.asarray(array, dtype=dtype)

    def to_host(self, array):
        """A host (NumPy) array holding the same values."""
        raise NotImplementedError

    def synchronize(self) -> None:
        """Wait for queued work (nothing to wait for by default)."""
