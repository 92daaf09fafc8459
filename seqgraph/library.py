"""The built-in functions of the language: their signatures and how each expands into ops.

A built-in is a :class:`Function`: named parameters of a few kinds and an ``expand`` that
asks the checker's context for primitive ops and parameters. The primitive ops themselves
(shape rule, forward, gradient) live in :mod:`seqgraph.ops`; recurrent layers are cells in
the prelude (``seqgraph/prelude/*.sg``), not here.

Parameter kinds: ``value`` (a tensor expression), ``values`` (any number of them),
``size`` (a positive integer size such as ``hidden`` or ``4*H``), ``int``, ``float``,
``option`` (one of ``choices``, written as a bare name), ``label`` (a name for the layer).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from .errors import SeqgraphError

REQUIRED = object()


@dataclass(frozen=True)
class Param:
    """One parameter of a built-in function."""
    name: str
    kind: str = "value"
    default: object = REQUIRED
    choices: tuple = ()


@dataclass(frozen=True)
class Function:
    """A built-in: its parameters, whether it is a layer (owns parameters), and its expansion."""
    name: str
    params: tuple
    expand: Callable
    doc: str
    layer: bool = False

    def usage(self) -> str:
        """``dense(x, size)``: how to call it."""
        parts = []
        for p in self.params:
            if p.kind in ("values", "sizes"):
                parts.append(f"{p.name}...")
            elif p.default is REQUIRED:
                parts.append(p.name)
            elif p.default is None:
                parts.append(f"{p.name} = ...")
            else:
                parts.append(f"{p.name} = {p.default}")
        return f"{self.name}({', '.join(parts)})"


FUNCTIONS: dict = {}


def builtin(name: str, *params: Param, layer: bool = False):
    """Register the decorated expansion as the built-in ``name``; its docstring documents it."""
    def register(expand):
        if layer:
            params_ = params + (Param("name", "label", None),)
        else:
            params_ = params
        FUNCTIONS[name] = Function(name, params_, expand, (expand.__doc__ or "").strip(), layer)
        return expand
    return register


X = Param("x")


# --- elementwise and shape ops: one primitive each --------------------------------------------

def _pointwise(name: str, op: str, doc: str):
    def expand(ctx, a):
        return ctx.apply(op, [a["x"]])
    expand.__doc__ = doc
    builtin(name, X)(expand)


for _name, _doc in [("sigmoid", "Logistic sigmoid 1 / (1 + exp(-x)), elementwise."),
                    ("tanh", "Hyperbolic tangent, elementwise."),
                    ("relu", "max(x, 0), elementwise; its gradient at 0 is 0."),
                    ("exp", "e^x, elementwise."),
                    ("log", "Natural logarithm, elementwise.")]:
    _pointwise(_name, _name, _doc)


@builtin("max", Param("a"), Param("b"))
def _max(ctx, a):
    """Elementwise maximum of two values; the gradient goes to the larger one (split evenly on ties)."""
    return ctx.apply("maximum", [a["a"], a["b"]])


@builtin("softmax", X)
def _softmax(ctx, a):
    """exp(x) / sum(exp(x)) over the last axis."""
    return ctx.apply("softmax", [a["x"]], axis=-1)


@builtin("log_softmax", X)
def _log_softmax(ctx, a):
    """x - log(sum(exp(x))) over the last axis."""
    return ctx.apply("log_softmax", [a["x"]], axis=-1)


@builtin("concat", Param("xs", "values"))
def _concat(ctx, a):
    """Join values along their last axis: concat([a], [b]) is [a + b]."""
    return ctx.apply("concat", a["xs"], axis=-1)


@builtin("split", X, Param("parts", "int"))
def _split(ctx, a):
    """Cut the last axis into equal parts: ``i, f, g, o = split(z, 4)``."""
    x, parts = a["x"], a["parts"]
    if parts < 1:
        raise SeqgraphError(f"split needs a positive number of parts, got {parts}", ctx.span_of("parts"))
    width = ctx.exact_division(x.type.shape[-1] if x.type.shape else 1, parts, "parts")
    return tuple(ctx.apply("slice", [x], start=i * width, stop=(i + 1) * width, axis=-1)
                 for i in range(parts))


@builtin("slice", X, Param("start", "int"), Param("stop", "size"))
def _slice(ctx, a):
    """Features start..stop-1 of the last axis."""
    return ctx.apply("slice", [a["x"]], start=a["start"], stop=a["stop"], axis=-1)


def _all_axes(x) -> tuple:
    return tuple(range(-len(x.type.shape), 0))


@builtin("sum", X)
def _sum(ctx, a):
    """Sum over all feature axes (one number per example)."""
    return ctx.apply("sum", [a["x"]], axis=_all_axes(a["x"]))


@builtin("mean", X)
def _mean(ctx, a):
    """Mean over all feature axes (one number per example)."""
    return ctx.apply("mean", [a["x"]], axis=_all_axes(a["x"]))


@builtin("flatten", X)
def _flatten(ctx, a):
    """Merge all feature axes into one: tensor[float, C, H, W] becomes [C*H*W]."""
    return ctx.apply("flatten", [a["x"]], ndim=len(a["x"].type.shape))


@builtin("reshape", X, Param("dims", "sizes"))
def _reshape(ctx, a):
    """Give the features a new shape with the same number of elements: reshape(x, 4, H)."""
    return ctx.apply("reshape", [a["x"]], shape=tuple(a["dims"]), ndim=len(a["x"].type.shape))


@builtin("transpose", X)
def _transpose(ctx, a):
    """Swap the last two feature axes."""
    return ctx.apply("transpose", [a["x"]], axes=(-1, -2))


# --- layers with parameters -------------------------------------------------------------------

@builtin("dense", X, Param("size", "size"), layer=True)
def _dense(ctx, a):
    """weight @ x + bias, with weight [size, F] (Glorot uniform) and bias [size] (zeros).

    Applied at every step of a sequence at once."""
    x = ctx.float_value(a["x"], "x")
    if not x.type.shape:
        raise SeqgraphError(f"dense needs a vector of features, got {x.type}", ctx.span_of("x"))
    weight = ctx.param("weight", (a["size"], x.type.shape[-1]), ("glorot",))
    bias = ctx.param("bias", (a["size"],), ("constant", 0.0))
    return ctx.apply("add", [ctx.apply("matmul", [weight, x]), bias])


@builtin("embedding", X, Param("vocab", "size"), Param("size", "size"), layer=True)
def _embedding(ctx, a):
    """Row x of a table [vocab, size] (standard normal init): token ids to vectors."""
    x = a["x"]
    if x.type.dtype != "int":
        raise SeqgraphError(f"embedding needs integer ids, got {x.type}", ctx.span_of("x"),
                            "declare the input as seq[int, V] or int[K]")
    if x.type.bound is not None and x.type.bound != a["vocab"]:
        raise SeqgraphError(f"embedding vocab {a['vocab']} does not match the ids' range {x.type.bound}",
                            ctx.span_of("vocab"), f"use embedding(x, {x.type.bound}, ...)")
    table = ctx.param("weight", (a["vocab"], a["size"]), ("normal", 1.0))
    return ctx.apply("embedding", [x, table])


def _conv(ctx, a, op: str, spatial: int):
    x = ctx.float_value(a["x"], "x")
    if len(x.type.shape) != spatial + 1:
        want = "tensor[float, C, L]" if spatial == 1 else "tensor[float, C, H, W]"
        raise SeqgraphError(f"{op} needs {want}, got {x.type}", ctx.span_of("x"))
    kernel = (a["kernel"],) * spatial
    weight = ctx.param("weight", (a["channels"], x.type.shape[0]) + kernel, ("he",))
    bias = ctx.param("bias", (a["channels"],), ("constant", 0.0))
    return ctx.apply(op, [x, weight, bias], stride=a["stride"], pad=a["pad"])


_CONV_PARAMS = (X, Param("channels", "size"), Param("kernel", "size"),
                Param("stride", "size", 1), Param("pad", "int", 0))


@builtin("conv1d", *_CONV_PARAMS, layer=True)
def _conv1d(ctx, a):
    """1-d convolution of tensor[float, C, L] with `channels` filters of width `kernel` (He init), plus bias."""
    return _conv(ctx, a, "conv1d", 1)


@builtin("conv2d", *_CONV_PARAMS, layer=True)
def _conv2d(ctx, a):
    """2-d convolution of tensor[float, C, H, W] with `channels` kernel x kernel filters (He init), plus bias."""
    return _conv(ctx, a, "conv2d", 2)


def _pool(op: str, doc: str):
    def expand(ctx, a):
        x = ctx.float_value(a["x"], "x")
        if len(x.type.shape) != 3:
            raise SeqgraphError(f"{op} needs tensor[float, C, H, W], got {x.type}", ctx.span_of("x"))
        stride = a["stride"] if a["stride"] is not None else a["kernel"]
        return ctx.apply(op, [x], kernel=a["kernel"], stride=stride, pad=a["pad"])
    expand.__doc__ = doc
    builtin(op, X, Param("kernel", "size"), Param("stride", "size", None), Param("pad", "int", 0))(expand)


_pool("maxpool2d", "Maximum over each kernel x kernel window (stride defaults to the kernel).")
_pool("avgpool2d", "Average over each kernel x kernel window, zero padding counted.")


@builtin("dropout", X, Param("p", "float"))
def _dropout(ctx, a):
    """While training, zero each element with probability p and scale the rest by 1/(1-p); identity otherwise."""
    p = a["p"]
    if not 0 <= p < 1:
        raise SeqgraphError(f"dropout probability must be in [0, 1), got {p}", ctx.span_of("p"))
    x = ctx.float_value(a["x"], "x")
    if p == 0:
        return x
    return ctx.apply("mul", [x, ctx.apply("dropout_mask", [x], p=p)])


# --- losses -----------------------------------------------------------------------------------

@builtin("cross_entropy", Param("logits"), Param("target"))
def _cross_entropy(ctx, a):
    """Mean of -log softmax(logits)[target] over the batch and the valid steps of a sequence."""
    logits, target = ctx.float_value(a["logits"], "logits"), a["target"]
    if target.type.dtype != "int":
        raise SeqgraphError(f"cross_entropy needs integer class targets, got {target.type}",
                            ctx.span_of("target"), "declare the target as int[K] or seq[int, K]")
    classes = logits.type.shape[-1] if logits.type.shape else None
    if target.type.bound is not None and classes is not None and target.type.bound != classes:
        raise SeqgraphError(
            f"cross_entropy: logits have {classes} classes but the target has {target.type.bound}",
            ctx.span_of("logits"), f"project to {target.type.bound} classes, e.g. dense(h, {target.type.bound})")
    return ctx.loss("cross_entropy", logits, target)


@builtin("mse", Param("prediction"), Param("target"))
def _mse(ctx, a):
    """Mean squared error over every element (and the valid steps of a sequence)."""
    return ctx.loss("mse", ctx.float_value(a["prediction"], "prediction"),
                    ctx.float_value(a["target"], "target"))


# --- sequences --------------------------------------------------------------------------------

def _over_time(op: str, doc: str, needs_lengths: bool = True):
    def expand(ctx, a):
        x = ctx.seq_value(a["x"], "x")
        return ctx.apply(op, [x], lengths=needs_lengths, drop_time=True)
    expand.__doc__ = doc
    builtin(op, X)(expand)


_over_time("last", "The last valid step of each sequence (many-to-one).")
_over_time("first", "The first step of each sequence.", needs_lengths=False)
_over_time("max_over_time", "Elementwise maximum over the valid steps of each sequence.")
_over_time("mean_over_time", "Mean over the valid steps of each sequence.")


@builtin("reverse", X)
def _reverse(ctx, a):
    """Each sequence reversed within its own length; padding stays at the end."""
    return ctx.apply("reverse", [ctx.seq_value(a["x"], "x")], lengths=True)


@builtin("attention", Param("query"), Param("memory"))
def _attention(ctx, a):
    """Dot-product attention: for each query, softmax over the memory's valid steps of
    query . memory_s, then the weighted sum of the memory."""
    memory = ctx.seq_value(a["memory"], "memory")
    query = ctx.float_value(a["query"], "query")
    return ctx.apply("attention", [query, memory], lengths_of=memory, kind_from=0)


# --- one small use of each built-in ---------------------------------------------------------------
# Each entry: the inputs it reads (declarations) and statements that end by assigning `out`. The
# language reference shows them with the shapes, parameters and ops they give, and the tests
# gradient-check every one, so the documented use is also the tested one.

EXAMPLES = {
    "sigmoid": ("x : seq[float, 3]", "out = sigmoid(x)"),
    "tanh": ("x : seq[float, 3]", "out = tanh(x)"),
    "relu": ("x : seq[float, 3]", "out = relu(x)"),
    "exp": ("x : [3]", "out = exp(x)"),
    "log": ("x : [3]", "out = log(sigmoid(x))"),
    "max": ("a : [4]\nb : [4]", "out = max(a, b)"),
    "softmax": ("x : seq[float, 5]", "out = softmax(x)"),
    "log_softmax": ("x : seq[float, 5]", "out = log_softmax(x)"),
    "concat": ("a : [3]\nb : [2]", "out = concat(a, b)"),
    "split": ("x : [6]", "first_half, second_half = split(x, 2)\nout = first_half * second_half"),
    "slice": ("x : [6]", "out = slice(x, 1, 4)"),
    "sum": ("x : [4]", "out = sum(x)"),
    "mean": ("x : [4]", "out = mean(x)"),
    "flatten": ("x : tensor[float, 2, 3, 3]", "out = flatten(x)"),
    "reshape": ("x : [6]", "out = reshape(x, 2, 3)"),
    "transpose": ("x : tensor[float, 2, 3]", "out = transpose(x)"),
    "dense": ("x : seq[float, 6]", "out = dense(x, 4)"),
    "embedding": ("ids : seq[int, 10]", "out = embedding(ids, 10, 4)"),
    "conv1d": ("x : tensor[float, 2, 9]", "out = conv1d(x, 3, 3, stride = 2, pad = 1)"),
    "conv2d": ("x : tensor[float, 2, 6, 6]", "out = conv2d(x, 3, 3, pad = 1)"),
    "maxpool2d": ("x : tensor[float, 2, 6, 6]", "out = maxpool2d(x, 2)"),
    "avgpool2d": ("x : tensor[float, 2, 5, 5]", "out = avgpool2d(x, 3, stride = 2, pad = 1)"),
    "dropout": ("x : [4]", "out = dropout(x, 0.5)"),
    "cross_entropy": ("logits : seq[float, 5]\nids : seq[int, 5]", "out = cross_entropy(logits, ids)"),
    "mse": ("prediction : [3]\nwanted : [3]", "out = mse(prediction, wanted)"),
    "last": ("x : seq[float, 3]", "out = last(x)"),
    "first": ("x : seq[float, 3]", "out = first(x)"),
    "max_over_time": ("x : seq[float, 3]", "out = max_over_time(x)"),
    "mean_over_time": ("x : seq[float, 3]", "out = mean_over_time(x)"),
    "reverse": ("x : seq[float, 3]", "out = reverse(x)"),
    "attention": ("query : seq[float, 4]\nmemory : seq[float, 4, time = src]", "out = attention(query, memory)"),
}


def example_source(name: str, loss: str = "") -> str:
    """A model that uses built-in ``name`` as its example shows; ``loss`` (a statement, e.g.
    ``loss = mse(out, y)`` with its target declaration before it) makes it trainable."""
    declarations, body = EXAMPLES[name]
    lines = [f"input {line}" for line in declarations.splitlines()] + body.splitlines()
    lines += loss.splitlines() if loss else ["output out"]
    return "model Example() {\n" + "".join(f"    {line}\n" for line in lines) + "}\n"
