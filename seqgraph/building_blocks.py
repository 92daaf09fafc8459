"""More built-in functions, registered into :data:`seqgraph.library.FUNCTIONS` with their
examples: elementwise math and activations (with PyTorch's names and options).

Each expands into primitive ops of :mod:`seqgraph.ops` as the core built-ins do.
"""

from __future__ import annotations

from .errors import SeqgraphError
from .library import EXAMPLES, Param, X, builtin


# --- elementwise math and activations ------------------------------------------------------

def _pointwise(name: str, doc: str, *params: Param):
    def expand(ctx, a):
        options = {p.name: a[p.name] for p in params}
        return ctx.apply(name, [ctx.float_value(a["x"], "x")], **options)
    expand.__doc__ = doc
    builtin(name, X, *params)(expand)


_pointwise("sqrt", "Square root, elementwise; gradient g / (2 sqrt(x)).")
_pointwise("abs", "|x|, elementwise; gradient g * sign(x), 0 at x = 0 (as in PyTorch).")
_pointwise("leaky_relu", "x where x > 0, else negative_slope * x (torch.nn.functional.leaky_relu).",
           Param("negative_slope", "float", 0.01))
_pointwise("hardtanh", "x limited to [min_val, max_val]; the gradient passes strictly inside "
           "(torch.nn.functional.hardtanh).", Param("min_val", "float", -1.0), Param("max_val", "float", 1.0))
_pointwise("softplus", "log(1 + exp(beta x)) / beta, and x where beta x > threshold "
           "(torch.nn.functional.softplus); gradient g * sigmoid(beta x).",
           Param("beta", "float", 1.0), Param("threshold", "float", 20.0))
_pointwise("gelu", "x Phi(x) with Phi the standard normal's distribution function: 0.5 x (1 + "
           "erf(x / sqrt 2)), or PyTorch's tanh form with approximate = tanh "
           "(torch.nn.functional.gelu).", Param("approximate", "option", "none", ("none", "tanh")))


@builtin("clamp", X, Param("min", "float", None), Param("max", "float", None))
def _clamp(ctx, a):
    """x limited to [min, max] (give either or both, as torch.clamp); the gradient passes where
    min <= x <= max."""
    if a["min"] is None and a["max"] is None:
        raise SeqgraphError("clamp needs a bound: min = ..., max = ... or both", ctx.call_span,
                            "clamp(x, min = 0, max = 6)")
    return ctx.apply("clamp", [ctx.float_value(a["x"], "x")], min=a["min"], max=a["max"])


def _number_value(ctx, value):
    """The number a value is when it was written as one (``2``, ``-0.5``), else None."""
    if value.op == "const":
        return value.attrs["value"]
    if value.op == "neg" and ctx.builder.values[value.args[0]].op == "const":
        return -ctx.builder.values[value.args[0]].attrs["value"]
    return None


@builtin("pow", X, Param("exponent"))
def _pow(ctx, a):
    """x to the power exponent, elementwise (torch.pow). A number exponent is one op, gradient
    g * p * x^(p-1); a tensor exponent is exp(exponent * log(x)), for positive x."""
    x, exponent = ctx.float_value(a["x"], "x"), ctx.float_value(a["exponent"], "exponent")
    p = _number_value(ctx, exponent)
    if p is not None:
        return ctx.apply("pow", [x], exponent=p)
    return ctx.apply("exp", [ctx.apply("mul", [exponent, ctx.apply("log", [x])])])


@builtin("min", Param("a"), Param("b"))
def _min(ctx, a):
    """Elementwise minimum of two values; the gradient goes to the smaller one (split evenly on ties)."""
    return ctx.apply("minimum", [ctx.float_value(a["a"], "a"), ctx.float_value(a["b"], "b")])


@builtin("where", Param("cond"), Param("a"), Param("b"))
def _where(ctx, a):
    """a where cond is not 0, else b, elementwise with broadcasting (torch.where). cond is
    usually a comparison, ``x > 0`` (1.0 or 0.0, with no gradient); cond gets no gradient."""
    return ctx.apply("where", [a["cond"], ctx.float_value(a["a"], "a"), ctx.float_value(a["b"], "b")])


EXAMPLES.update({
    "sqrt": ("x : [3]", "out = sqrt(exp(x))"),
    "abs": ("x : seq[float, 3]", "out = abs(x)"),
    "pow": ("x : [3]\np : [3]", "out = pow(x, 3) + pow(exp(x), p)"),
    "clamp": ("x : seq[float, 3]", "out = clamp(x, min = -0.5, max = 0.5)"),
    "min": ("a : [4]\nb : [4]", "out = min(a, b)"),
    "where": ("a : [4]\nb : [4]", "out = where(a > b, a * b, b - 1)"),
    "softplus": ("x : seq[float, 3]", "out = softplus(x, beta = 2)"),
    "gelu": ("x : seq[float, 3]", "out = gelu(x) + gelu(x, approximate = tanh)"),
    "leaky_relu": ("x : seq[float, 3]", "out = leaky_relu(x, negative_slope = 0.1)"),
    "hardtanh": ("x : seq[float, 3]", "out = hardtanh(x, min_val = -0.5, max_val = 2)"),
})


# --- losses per element: reduce them with mean(...) / sum(...) -------------------------------
# ``loss = mean(huber(p, y))`` averages over the features of each example (or step); a loss
# of one number per example or step is then averaged over the batch and the valid steps.

def _pair_loss(name: str, op: str, first: str, doc: str, *params: Param):
    def expand(ctx, a):
        options = {p.name: a[p.name] for p in params}
        return ctx.apply(op, [ctx.float_value(a[first], first), ctx.float_value(a["target"], "target")],
                         **options)
    expand.__doc__ = doc
    builtin(name, Param(first), Param("target"), *params)(expand)


_pair_loss("huber", "huber", "prediction",
           "Huber loss per element: 0.5 (p - y)^2 where |p - y| < delta, else delta (|p - y| - "
           "delta / 2) (torch.nn.functional.huber_loss with reduction='none'); reduce it with mean(...).",
           Param("delta", "float", 1.0))
_pair_loss("binary_cross_entropy", "binary_cross_entropy", "prediction",
           "-(y log p + (1 - y) log(1 - p)) per element for probabilities p, each log at least -100 "
           "(torch.nn.functional.binary_cross_entropy with reduction='none').")
_pair_loss("binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits", "logits",
           "Binary cross-entropy of sigmoid(logits) against y per element, computed from the logits "
           "without overflow (torch.nn.functional.binary_cross_entropy_with_logits, reduction='none').")
_pair_loss("kl_div", "kl_div", "input",
           "KL divergence per element, target (log target - input), of target probabilities from "
           "log-probabilities `input` (torch.nn.functional.kl_div with reduction='none'; with "
           "log_target = true the target is given as log-probabilities too). sum(kl_div(...)) is "
           "one example's divergence, and a loss of it is PyTorch's reduction='batchmean'. The "
           "target gets no gradient, as a teacher's soft targets should not.",
           Param("log_target", "option", "false", ("false", "true")))


@builtin("l1", Param("prediction"), Param("target"))
def _l1(ctx, a):
    """|prediction - target| per element (torch.nn.functional.l1_loss with reduction='none')."""
    difference = ctx.apply("sub", [ctx.float_value(a["prediction"], "prediction"),
                                   ctx.float_value(a["target"], "target")])
    return ctx.apply("abs", [difference])


EXAMPLES.update({
    "huber": ("prediction : seq[float, 3]\nwanted : seq[float, 3]",
              "out = mean(huber(prediction, wanted, delta = 0.5))"),
    "l1": ("prediction : [3]\nwanted : [3]", "out = sum(l1(prediction, wanted), over = all)"),
    "binary_cross_entropy": ("z : [3]\nwanted : [3]",
                             "out = mean(binary_cross_entropy(sigmoid(z), sigmoid(wanted)))"),
    "binary_cross_entropy_with_logits": ("z : seq[float, 3]\nwanted : seq[float, 3]",
                                         "out = mean(binary_cross_entropy_with_logits(z, sigmoid(wanted)), over = all)"),
    "kl_div": ("student : [5]\nteacher : [5]",
               "out = 4 * sum(kl_div(log_softmax(student / 2), softmax(teacher / 2)))"),
})


# --- normalisation ---------------------------------------------------------------------------

@builtin("layer_norm", X, Param("eps", "float", 1e-5), Param("affine", "option", "true", ("true", "false")),
         layer=True)
def _layer_norm(ctx, a):
    """(x - mean) / sqrt(var + eps) over the last axis, then times weight [F] (ones) plus bias [F]
    (zeros) unless affine = false (torch.nn.LayerNorm(F)). Works inside cells too."""
    x = ctx.float_value(a["x"], "x")
    normalised = ctx.apply("layer_norm", [x], eps=a["eps"])
    if a["affine"] == "false":
        return normalised
    features = x.type.shape[-1:]
    weight = ctx.param("weight", features, ("constant", 1.0))
    return ctx.apply("add", [ctx.apply("mul", [normalised, weight]), ctx.param("bias", features, ("constant", 0.0))])


@builtin("batch_norm", X, Param("momentum", "float", 0.1), Param("eps", "float", 1e-5), layer=True)
def _batch_norm(ctx, a):
    """Batch normalisation per channel of [C] or tensor[float, C, ...] per example (torch.nn.
    BatchNorm1d/2d): while training with the batch's statistics, which also move the running
    ones (running_mean, running_var: state, not trained) by momentum; while evaluating with the
    running statistics. Then times weight [C] (ones) plus bias [C] (zeros)."""
    x = ctx.float_value(a["x"], "x")
    if x.type.is_seq or x.type.timed or not x.type.batched or not x.type.shape:
        raise SeqgraphError(f"batch_norm normalises examples of [C] or tensor[float, C, ...], got {x.type}",
                            ctx.span_of("x"), "for sequences and inside cells use layer_norm(x)")
    channels = x.type.shape[0]
    stats = [ctx.param("running_mean", (channels,), ("constant", 0.0)),
             ctx.param("running_var", (channels,), ("constant", 1.0))]
    flag = ctx.apply("training_flag", [], scalar=True)
    normalised = ctx.apply("batch_norm", [x] + stats + [flag], eps=a["eps"], momentum=a["momentum"])
    per_channel = (channels,) + (1,) * (len(x.type.shape) - 1)

    def shaped(name, init):
        value = ctx.param(name, (channels,), ("constant", init))
        return ctx.apply("reshape", [value], shape=per_channel, ndim=1) if len(per_channel) > 1 else value

    return ctx.apply("add", [ctx.apply("mul", [normalised, shaped("weight", 1.0)]), shaped("bias", 0.0)])


EXAMPLES.update({
    "layer_norm": ("x : seq[float, 5]", "out = layer_norm(x)"),
    "batch_norm": ("x : tensor[float, 3, 4, 4]", "out = batch_norm(x)"),
})


# --- pooling over time windows ---------------------------------------------------------------

@builtin("maxpool_time", X, Param("kernel", "size"), Param("dilation", "size", 1))
def _maxpool_time(ctx, a):
    """The maximum over a window of `kernel` steps around each step of a sequence (stride 1,
    PyTorch's padding='same', the steps `dilation` apart), within each sequence's length."""
    x = ctx.seq_value(ctx.float_value(a["x"], "x"), "x")
    return ctx.apply("time_maxpool", [x], lengths=True, kernel=a["kernel"], dilation=a["dilation"])


@builtin("avgpool_time", X, Param("kernel", "size"), Param("count_include_pad", "option", "false", ("false", "true")))
def _avgpool_time(ctx, a):
    """The mean over a window of `kernel` steps around each step of a sequence (stride 1,
    padding='same'), over the window's steps inside the sequence, or dividing by `kernel`
    with count_include_pad = true."""
    x = ctx.seq_value(ctx.float_value(a["x"], "x"), "x")
    return ctx.apply("time_avgpool", [x], lengths=True, kernel=a["kernel"],
                     count_include_pad=a["count_include_pad"] == "true")


EXAMPLES.update({
    "maxpool_time": ("x : seq[float, 3]", "out = maxpool_time(x, 3, dilation = 2)"),
    "avgpool_time": ("x : seq[float, 3]", "out = avgpool_time(x, 3)"),
})
