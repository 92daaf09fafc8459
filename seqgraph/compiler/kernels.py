"""The elementwise ops a recurrent cell is made of, restated two ways for the step loop.

The *meaning* of every op stays in the registry (:mod:`seqgraph.ops`). Inside a scan every
value has a preallocated buffer, so each op here is also written as

- **in-place ufunc calls** (the NumPy path): ``multiply(a, b, out)`` writes straight into a
  buffer, with no allocation and no Python function of ours in between. Forward emitters
  take ``(out, ins)``, the names of the output buffer and of the inputs, and return source
  lines. Gradient emitters take ``(dst, mode, g, out, ins, tmp)`` and write one input's
  contribution into ``dst``: ``mode`` is ``"set"`` for the first contribution of a step and
  ``"add"`` for the rest; ``tmp`` names a scratch buffer shaped like that input;
- **formulas** over ``{0}``, ``{1}`` (inputs), ``{out}`` and ``{g}``, the data a fused chain
  is described by, from which a GPU backend can write one elementwise kernel per chain.

``needs`` says which values each gradient reads (``"out"`` or an input index), which decides
what the forward loop must keep for the backward one. The tests check every entry against
the registry. The names called are ufuncs NumPy and CuPy share.
"""

from __future__ import annotations

from dataclasses import dataclass

# The functions generated code may call; the scan binds each name to the backend's ufunc.
UFUNCS = ("add", "subtract", "multiply", "divide", "negative", "exp", "log", "tanh", "reciprocal",
          "maximum", "greater", "matmul", "dot", "copyto")


@dataclass(frozen=True)
class Kernel:
    """One elementwise op, in place and as formulas (see the module docstring)."""
    forward: object
    gradients: dict
    formula: str
    gradient_formulas: dict
    needs: dict


def _call(ufunc):
    return lambda out, ins: [f"{ufunc}({', '.join(ins)}, {out})"]


def _sigmoid(out, ins):
    # 1 / (1 + exp(-x)); exp may overflow to inf for very negative x, and 1 / inf is exactly
    # the right 0 (the loop runs with overflow warnings off).
    return [f"negative({ins[0]}, {out})", f"exp({out}, {out})", f"add({out}, 1.0, {out})",
            f"reciprocal({out}, {out})"]


def _into(dst, mode, tmp, compute):
    """Lines writing ``compute(target)`` into ``dst`` (set) or adding it (add)."""
    if mode == "set":
        return compute(dst)
    return compute(tmp) + [f"add({dst}, {tmp}, {dst})"]


def _passed(dst, mode, g, out, ins, tmp):
    return [f"copyto({dst}, {g})"] if mode == "set" else [f"add({dst}, {g}, {dst})"]


def _negated(dst, mode, g, out, ins, tmp):
    return [f"negative({g}, {dst})"] if mode == "set" else [f"subtract({dst}, {g}, {dst})"]


def _times(factor):
    """The gradient ``g * factor(out, ins)``."""
    return lambda dst, mode, g, out, ins, tmp: _into(
        dst, mode, tmp, lambda t: [f"multiply({g}, {factor(out, ins)}, {t})"])


def _over(divisor):
    """The gradient ``g / divisor(out, ins)``."""
    return lambda dst, mode, g, out, ins, tmp: _into(
        dst, mode, tmp, lambda t: [f"divide({g}, {divisor(out, ins)}, {t})"])


def _slope(lines):
    """The gradient ``g * s`` where ``lines(t, out, ins)`` compute the slope ``s`` into ``t``."""
    def emit(dst, mode, g, out, ins, tmp):
        body = lines(tmp, out, ins) + [f"multiply({g}, {tmp}, {tmp})"]
        return body[:-1] + [f"multiply({g}, {tmp}, {dst})"] if mode == "set" else \
            body + [f"add({dst}, {tmp}, {dst})"]
    return emit


def _div_b(dst, mode, g, out, ins, tmp):
    # d(a / b)/db = -out / b
    return _into(dst, mode, tmp, lambda t: [f"multiply({g}, {out}, {t})",
                                            f"divide({t}, {ins[1]}, {t})", f"negative({t}, {t})"])


KERNELS = {
    "add": Kernel(_call("add"), {0: _passed, 1: _passed}, "{0} + {1}",
                  {0: "{g}", 1: "{g}"}, {0: (), 1: ()}),
    "sub": Kernel(_call("subtract"), {0: _passed, 1: _negated}, "{0} - {1}",
                  {0: "{g}", 1: "-{g}"}, {0: (), 1: ()}),
    "mul": Kernel(_call("multiply"), {0: _times(lambda out, ins: ins[1]),
                                      1: _times(lambda out, ins: ins[0])}, "{0} * {1}",
                  {0: "{g} * {1}", 1: "{g} * {0}"}, {0: (1,), 1: (0,)}),
    "div": Kernel(_call("divide"), {0: _over(lambda out, ins: ins[1]), 1: _div_b}, "{0} / {1}",
                  {0: "{g} / {1}", 1: "-{g} * {out} / {1}"}, {0: (1,), 1: (1, "out")}),
    "neg": Kernel(_call("negative"), {0: _negated}, "-{0}", {0: "-{g}"}, {0: ()}),
    "exp": Kernel(_call("exp"), {0: _times(lambda out, ins: out)}, "exp({0})",
                  {0: "{g} * {out}"}, {0: ("out",)}),
    "log": Kernel(_call("log"), {0: _over(lambda out, ins: ins[0])}, "log({0})",
                  {0: "{g} / {0}"}, {0: (0,)}),
    "relu": Kernel(lambda out, ins: [f"maximum({ins[0]}, 0.0, out={out})"],
                   {0: _slope(lambda t, out, ins: [f"greater({ins[0]}, 0.0, {t})"])},
                   "max({0}, 0)", {0: "{g} * ({0} > 0)"}, {0: (0,)}),
    # sigmoid' = y (1 - y) and tanh' = 1 - y^2, both from the kept output y
    "sigmoid": Kernel(_sigmoid, {0: _slope(lambda t, out, ins: [
        f"subtract(1.0, {out}, {t})", f"multiply({t}, {out}, {t})"])},
        "1 / (1 + exp(-{0}))", {0: "{g} * {out} * (1 - {out})"}, {0: ("out",)}),
    "tanh": Kernel(_call("tanh"), {0: _slope(lambda t, out, ins: [
        f"multiply({out}, {out}, {t})", f"subtract(1.0, {t}, {t})"])},
        "tanh({0})", {0: "{g} * (1 - {out} * {out})"}, {0: ("out",)}),
}


def needs(op: str, port: int, arity: int) -> tuple:
    """What the gradient for input ``port`` of ``op`` reads: ``"out"`` and input indices
    (everything, for an op without a kernel here)."""
    if op in KERNELS:
        return KERNELS[op].needs[port]
    if op == "matmul":
        return (1 - port,)
    if op == "slice":
        return ()
    return ("out",) + tuple(range(arity))
