"""More elementwise ops, stated by formulas like every elementwise op (see
:mod:`seqgraph.ops.elementwise`): sqrt, abs, pow, clamp, hardtanh, minimum, the comparisons,
where, softplus, gelu and leaky_relu.

Kinks follow PyTorch: ``abs``'s gradient at 0 is 0; ``clamp`` passes the gradient where
``min <= x <= max`` (bounds included), ``hardtanh`` where ``min_val < x < max_val``;
``minimum`` splits it evenly at a tie; ``leaky_relu``'s slope at 0 is the negative one.
Comparisons give 1.0 or 0.0 and no gradient; ``where``'s condition gets none either.
"""

from __future__ import annotations

from .elementwise import number, pointwise


# --- elementwise math -------------------------------------------------------------------

pointwise("sqrt", 1, lambda: ("sqrt({0})", {0: "{g} * 0.5 / {out}"}), "g / (2 y)",
          "The square root (NaN below 0; the gradient at 0 is inf, as in PyTorch).")
pointwise("abs", 1, lambda: ("abs({0})", {0: "{g} * where({0} > 0, 1, where({0} < 0, -1, 0))"}),
          "g * sign(x)", "|x|; its gradient is g * sign(x), 0 at x = 0 (as in PyTorch).")


def _pow(exponent=2.0):
    p = number(exponent)
    return f"pow({{0}}, {p})", {0: f"{{g}} * {p} * pow({{0}}, {number(exponent - 1)})"}


pointwise("pow", 1, _pow, "g * p * x^(p-1)",
          "x to the power of the number ``exponent`` (NaN for a negative x and a fractional "
          "exponent, as in PyTorch).", attrs=("exponent",))


def _bounded(low, high, strict: bool):
    """The forward and gradient formulas of x limited to [low, high] (either may be None);
    the gradient passes inside the bounds, at them too unless ``strict``."""
    value, inside = "{0}", []
    if low is not None:
        value = f"max({value}, {number(low)})"
        inside.append(f"({{0}} {'>' if strict else '>='} {number(low)})")
    if high is not None:
        value = f"min({value}, {number(high)})"
        inside.append(f"({{0}} {'<' if strict else '<='} {number(high)})")
    return value, {0: " * ".join(["{g}"] + inside)}


pointwise("clamp", 1, lambda min=None, max=None: _bounded(min, max, strict=False),
          "g * [min <= x <= max]",
          "x limited to [``min``, ``max``] (either may be None, meaning no bound): min(max(x, "
          "min), max), as torch.clamp; the gradient passes where min <= x <= max.",
          attrs=("min", "max"))
pointwise("hardtanh", 1, lambda min_val=-1.0, max_val=1.0: _bounded(min_val, max_val, strict=True),
          "g * [min_val < x < max_val]",
          "x limited to [``min_val``, ``max_val``] (default [-1, 1]), as torch.nn.functional."
          "hardtanh; the gradient passes where min_val < x < max_val.",
          attrs=("min_val", "max_val"))
pointwise("minimum", 2, lambda: ("min({0}, {1})", {0: "{g} * (({0} < {1}) + 0.5 * ({0} == {1}))",
                                                   1: "{g} * (({1} < {0}) + 0.5 * ({0} == {1}))"}),
          "route",
          "The elementwise min of a and b, broadcasting; the gradient goes to the smaller input. "
          "Tie rule: where a == b the upstream gradient is split evenly, half to each input.")

COMPARISONS = {"greater": ">", "less": "<", "greater_equal": ">=", "less_equal": "<=",
               "equal": "==", "not_equal": "!="}
for _name, _symbol in COMPARISONS.items():
    pointwise(_name, 2, lambda symbol=_symbol: (f"{{0}} {symbol} {{1}}", {}), "none",
              f"1.0 where a {_symbol} b, else 0.0, broadcasting; no gradient reaches a or b.",
              nondiff=(0, 1))

pointwise("where", 3, lambda: ("where({0}, {1}, {2})", {1: "where({0}, {g}, 0)", 2: "where({0}, 0, {g})"}),
          "g to a where cond, else to b",
          "a where cond is not 0, else b, broadcasting all three (torch.where); cond gets no gradient.",
          nondiff=(0,))


# --- activations ------------------------------------------------------------------------


def _softplus(beta=1.0, threshold=20.0):
    z, b, t = f"({{0}} * {number(beta)})", number(beta), number(threshold)
    # log(1 + exp(z)) as max(z, 0) + log1p(exp(-|z|)) never overflows; its slope is sigmoid(z)
    e = f"exp(-abs({z}))"
    return (f"where({z} > {t}, {{0}}, (max({z}, 0) + log1p({e})) / {b})",
            {0: f"{{g}} * where({z} > {t}, 1, where({z} >= 0, 1 / (1 + {e}), {e} / (1 + {e})))"})


pointwise("softplus", 1, _softplus, "g * sigmoid(beta x)",
          "log(1 + exp(beta x)) / beta, and x itself where beta x > ``threshold``, as torch.nn."
          "functional.softplus (``beta`` 1, ``threshold`` 20 by default); computed without overflow.",
          attrs=("beta", "threshold"))

SQRT_HALF = 0.7071067811865476       # 1 / sqrt(2)
INV_SQRT_2PI = 0.3989422804014327    # 1 / sqrt(2 pi)
SQRT_2_OVER_PI = 0.7978845608028654  # sqrt(2 / pi)
GELU_CUBIC = 0.044715


def _gelu(approximate="none"):
    if approximate == "tanh":
        inner = f"({SQRT_2_OVER_PI!r} * ({{0}} + {GELU_CUBIC!r} * {{0}} * {{0}} * {{0}}))"
        return (f"0.5 * {{0}} * (1 + tanh({inner}))",
                {0: f"{{g}} * (0.5 * (1 + tanh({inner})) + 0.5 * {{0}} * (1 - tanh({inner}) * tanh({inner}))"
                    f" * {SQRT_2_OVER_PI!r} * (1 + {3 * GELU_CUBIC!r} * {{0}} * {{0}}))"})
    return (f"0.5 * {{0}} * (1 + erf({{0}} * {SQRT_HALF!r}))",
            {0: f"{{g}} * (0.5 * (1 + erf({{0}} * {SQRT_HALF!r}))"
                f" + {{0}} * exp(-0.5 * {{0}} * {{0}}) * {INV_SQRT_2PI!r})"})


pointwise("gelu", 1, _gelu, "g * (Phi(x) + x phi(x))",
          "x Phi(x), Phi the standard normal's distribution function: 0.5 x (1 + erf(x / sqrt 2)), "
          "as torch.nn.functional.gelu; with ``approximate`` = 'tanh' PyTorch's tanh form "
          "0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).", attrs=("approximate",))


def _leaky_relu(negative_slope=0.01):
    s = number(negative_slope)
    return f"where({{0}} > 0, {{0}}, {{0}} * {s})", {0: f"{{g}} * where({{0}} > 0, 1, {s})"}


pointwise("leaky_relu", 1, _leaky_relu, "g * (x > 0 ? 1 : slope)",
          "x where x > 0, else ``negative_slope`` * x (default 0.01), as torch.nn.functional."
          "leaky_relu; the slope at 0 is the negative one.", attrs=("negative_slope",))
