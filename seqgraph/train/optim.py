"""Optimisers, learning-rate schedules and gradient clipping.

An optimiser updates a ``dict[str, array]`` of parameters **in place** from a dict of
gradients with the same keys, using the same update formulas as ``torch.optim``, so runs
can be compared number for number. Everything is written against an array namespace ``xp``
(NumPy or CuPy): pass ``xp=`` to the constructor, or let the optimiser take the namespace
of the first parameter it sees. Nothing here imports NumPy or CuPy.

Optimiser state is a flat dict of numbers and arrays (``state_dict()``), so a checkpoint
stores it as plain named arrays, never as a pickle::

    {"step/lstm_0.weight_ih": 3, "exp_avg/lstm_0.weight_ih": array, ...}

A model file names an optimiser and a schedule with keyword arguments
(``optimizer = adam(lr = 0.003)``); :func:`make_optimizer` and :func:`make_schedule` turn
those into objects, and unknown names become SeqgraphErrors with a did-you-mean hint.
"""

from __future__ import annotations

import inspect
import math
import sys
from dataclasses import dataclass
from typing import Optional

from ..errors import SeqgraphError, Span, did_you_mean


def array_namespace(array):
    """The module an array belongs to (``numpy`` for a NumPy array, ``cupy`` for a CuPy one),
    found from its type without importing anything."""
    return sys.modules[type(array).__module__.split(".")[0]]


class Optimizer:
    """The shared machinery: per-parameter state buffers, steps, and state dicts.

    A subclass names its hyperparameters in ``hyper`` and its per-parameter buffers in
    ``buffers``, and implements :meth:`update` for one parameter.
    """

    name = "optimizer"
    buffers: tuple = ()

    def __init__(self, xp=None, **hyper):
        self.xp = xp
        self.hyper = hyper
        self.state: dict = {}  # buffer name -> {param key -> array}
        self.steps: dict = {}  # param key -> number of updates it has had

    def __getattr__(self, key):
        hyper = self.__dict__.get("hyper", {})
        if key in hyper:
            return hyper[key]
        raise AttributeError(key)

    @property
    def lr(self) -> float:
        """The learning rate; a schedule sets it at the start of every epoch."""
        return self.hyper["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        self.hyper["lr"] = float(value)

    def step(self, params: dict, grads: dict) -> None:
        """Update every parameter that has a gradient, in place. Parameters whose gradient
        is missing or None are left alone, and their step count does not advance."""
        for key, p in params.items():
            g = grads.get(key)
            if g is None:
                continue
            if self.xp is None:
                self.xp = array_namespace(p)
            self.steps[key] = self.steps.get(key, 0) + 1
            self.update(key, p, g, self.steps[key])

    def update(self, key: str, p, g, t: int) -> None:
        """Update parameter ``p`` in place from gradient ``g`` at step ``t`` (1-based)."""
        raise NotImplementedError

    @property
    def updates(self) -> int:
        """How many updates the most-updated parameter has had (a per-step schedule's count)."""
        return max((int(t) for t in self.steps.values()), default=0)

    def buffer(self, name: str, key: str, p, fill: float = 0.0):
        """The state buffer ``name`` of parameter ``key``, ``fill`` everywhere on first use."""
        buffers = self.state.setdefault(name, {})
        if key not in buffers:
            buffers[key] = self.xp.full_like(p, fill)
        elif buffers[key].shape != p.shape:
            raise SeqgraphError(
                f"{self.name} state '{name}' of parameter '{key}' has shape "
                f"{tuple(buffers[key].shape)} but the parameter has shape {tuple(p.shape)}",
                hint="the optimiser state comes from a checkpoint of a different model")
        return buffers[key]

    def decayed(self, p, g):
        """``g + weight_decay * p``: L2 weight decay folded into the gradient, as in
        torch.optim (a new array; the caller's gradient is left as it was)."""
        wd = self.hyper.get("weight_decay", 0.0)
        return g + wd * p if wd else g

    def state_dict(self) -> dict:
        """A flat dict of numbers and arrays: the hyperparameters (for the record),
        ``step/<param>`` counts and ``<buffer>/<param>`` arrays."""
        out = {k: v for k, v in self.hyper.items()}
        out.update({f"step/{key}": t for key, t in self.steps.items()})
        for name, buffers in self.state.items():
            out.update({f"{name}/{key}": array for key, array in buffers.items()})
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore step counts and buffers from :meth:`state_dict`'s output (arrays may be
        NumPy arrays read from a checkpoint; they are moved to this optimiser's ``xp``).
        Hyperparameters stay as constructed: a resumed run takes them from its model file."""
        steps, buffers = {}, {}
        for entry, value in state.items():
            if entry in self.hyper:
                continue
            kind, _, key = entry.partition("/")
            if kind == "step" and key:
                steps[key] = int(value)
            elif kind in self.buffers and key:
                buffers.setdefault(kind, {})[key] = value
            else:
                known = list(self.hyper) + ["step/<param>"] + [f"{b}/<param>" for b in self.buffers]
                raise SeqgraphError(f"{self.name} state has an unexpected entry '{entry}'",
                                    hint="it was saved by a different optimiser; known entries: "
                                         + ", ".join(known))
        if buffers and self.xp is None:
            self.xp = array_namespace(next(iter(next(iter(buffers.values())).values())))
        self.steps = steps
        self.state = {name: {k: self.xp.asarray(v) for k, v in per_key.items()}
                      for name, per_key in buffers.items()}


class SGD(Optimizer):
    """Stochastic gradient descent with momentum, Nesterov momentum and weight decay.

    As ``torch.optim.SGD`` (dampening 0), at step t::

        g = grad + weight_decay * p
        if momentum:
            b = g                      if t == 1
            b = momentum * b + g       otherwise
            g = g + momentum * b       if nesterov
            g = b                      otherwise
        p = p - lr * g
    """

    name = "sgd"
    buffers = ("momentum_buffer",)

    def __init__(self, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0, *, xp=None):
        check_number(self.name, "lr", lr, low=0.0)
        check_number(self.name, "momentum", momentum, low=0.0)
        check_number(self.name, "weight_decay", weight_decay, low=0.0)
        if nesterov and momentum == 0:
            raise SeqgraphError("sgd: nesterov momentum needs momentum > 0",
                                hint="e.g. sgd(lr = 0.1, momentum = 0.9, nesterov = true)")
        super().__init__(xp, lr=float(lr), momentum=float(momentum), nesterov=bool(nesterov),
                         weight_decay=float(weight_decay))

    def update(self, key, p, g, t):
        lr, momentum = self.hyper["lr"], self.hyper["momentum"]
        g = self.decayed(p, g)
        if momentum:
            b = self.buffer("momentum_buffer", key, p)
            if isinstance(t, int) and t == 1:
                b[...] = g
            else:
                b *= momentum
                b += g
            g = g + momentum * b if self.hyper["nesterov"] else b
        p -= lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with L2 weight decay, as ``torch.optim.Adam``.

    At step t, with ``m`` and ``v`` starting at zero::

        g = grad + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        if amsgrad:  v_max = max(v_max, v);  v = v_max      (in the denominator only)
        p = p - lr * (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps)

    (computed as torch does: ``p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``).
    """

    name = "adam"
    buffers = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    decoupled = False  # AdamW: weight decay shrinks p itself instead of entering the gradient

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, xp=None):
        check_number(self.name, "lr", lr, low=0.0)
        betas = _check_betas(self.name, betas)
        check_number(self.name, "eps", eps, low=0.0)
        check_number(self.name, "weight_decay", weight_decay, low=0.0)
        super().__init__(xp, lr=float(lr), beta1=betas[0], beta2=betas[1], eps=float(eps),
                         weight_decay=float(weight_decay), amsgrad=bool(amsgrad))

    @property
    def betas(self) -> tuple:
        """``(beta1, beta2)``."""
        return self.hyper["beta1"], self.hyper["beta2"]

    def update(self, key, p, g, t):
        lr, eps = self.hyper["lr"], self.hyper["eps"]
        beta1, beta2 = self.betas
        if self.decoupled:
            p *= 1 - lr * self.hyper["weight_decay"]
        else:
            g = self.decayed(p, g)
        m = self.buffer("exp_avg", key, p)
        v = self.buffer("exp_avg_sq", key, p)
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * (g * g)
        if self.hyper["amsgrad"]:
            v_max = self.buffer("max_exp_avg_sq", key, p)
            self.xp.maximum(v_max, v, out=v_max)
            v = v_max
        step_size = _as_scalar(lr / (1 - beta1 ** t), p)
        denom = self.xp.sqrt(v) / _as_scalar(_sqrt(self.xp, 1 - beta2 ** t), p) + eps
        p -= step_size * (m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``:
    each step first shrinks the parameter, ``p = p * (1 - lr * weight_decay)``, then takes
    Adam's step on the plain gradient. PyTorch's defaults, ``weight_decay = 0.01`` among them."""

    name = "adamw"
    decoupled = True

    def __init__(self, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, xp=None):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, xp=xp)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011) as ``torch.optim.Adagrad``. At step t, with the sum
    ``s`` starting at ``initial_accumulator_value``::

        g = grad + weight_decay * p
        s = s + g * g
        p = p - lr / (1 + (t - 1) * lr_decay) * g / (sqrt(s) + eps)
    """

    name = "adagrad"
    buffers = ("sum",)

    def __init__(self, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, xp=None):
        for option, value in (("lr", lr), ("lr_decay", lr_decay), ("weight_decay", weight_decay),
                              ("initial_accumulator_value", initial_accumulator_value), ("eps", eps)):
            check_number(self.name, option, value, low=0.0)
        super().__init__(xp, lr=float(lr), lr_decay=float(lr_decay), weight_decay=float(weight_decay),
                         initial_accumulator_value=float(initial_accumulator_value), eps=float(eps))

    def update(self, key, p, g, t):
        g = self.decayed(p, g)
        s = self.buffer("sum", key, p, fill=self.hyper["initial_accumulator_value"])
        s += g * g
        step_size = _as_scalar(self.hyper["lr"] / (1 + (t - 1) * self.hyper["lr_decay"]), p)
        p -= step_size * (g / (self.xp.sqrt(s) + self.hyper["eps"]))


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012) as ``torch.optim.RMSprop``. At step t, with ``v``, ``b`` and
    ``a`` starting at zero::

        g = grad + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        if centered:  a = alpha * a + (1 - alpha) * g;   d = sqrt(v - a * a) + eps
        else:                                            d = sqrt(v) + eps
        if momentum:  b = momentum * b + g / d;  p = p - lr * b
        else:         p = p - lr * g / d
    """

    name = "rmsprop"
    buffers = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, weight_decay: float = 0.0, centered: bool = False, *,
                 xp=None):
        check_number(self.name, "lr", lr, low=0.0)
        check_number(self.name, "alpha", alpha, low=0.0, high=1.0)
        check_number(self.name, "eps", eps, low=0.0)
        check_number(self.name, "momentum", momentum, low=0.0)
        check_number(self.name, "weight_decay", weight_decay, low=0.0)
        super().__init__(xp, lr=float(lr), alpha=float(alpha), eps=float(eps),
                         momentum=float(momentum), weight_decay=float(weight_decay),
                         centered=bool(centered))

    def update(self, key, p, g, t):
        lr, alpha, eps, momentum = (self.hyper[k] for k in ("lr", "alpha", "eps", "momentum"))
        g = self.decayed(p, g)
        v = self.buffer("square_avg", key, p)
        v *= alpha
        v += (1 - alpha) * (g * g)
        if self.hyper["centered"]:
            a = self.buffer("grad_avg", key, p)
            a *= alpha
            a += (1 - alpha) * g
            denom = self.xp.sqrt(v - a * a) + eps
        else:
            denom = self.xp.sqrt(v) + eps
        if momentum:
            b = self.buffer("momentum_buffer", key, p)
            b *= momentum
            b += g / denom
            p -= lr * b
        else:
            p -= lr * (g / denom)


OPTIMIZERS: dict = {cls.name: cls for cls in (SGD, Adam, AdamW, Adagrad, RMSprop)}


# A step count ``t`` is a Python int, or (in a step captured as a CUDA graph, see
# seqgraph.backends.capture) a 0-d device array the graph itself advances. Numbers computed
# from it then stay on the device, in the parameter's dtype, as the Python float would have
# been rounded to. SGD's first step with such a count takes the general branch, which gives
# the same numbers: the momentum buffer starts at zero.

def _sqrt(xp, x):
    return math.sqrt(x) if isinstance(x, float) else xp.sqrt(x)


def _as_scalar(x, p):
    return x if type(x) is float else x.astype(p.dtype)


def make_optimizer(name: str, span: Optional[Span] = None, xp=None, **kwargs) -> Optimizer:
    """The optimiser called ``name`` (``sgd``, ``adam``, ``adamw``, ``adagrad``, ``rmsprop``) built from keyword
    arguments, as a model file writes it: ``make_optimizer("adam", lr=0.003)``. An unknown
    name, an unknown or missing argument, or a bad value is a SeqgraphError at ``span``."""
    cls = OPTIMIZERS.get(name.lower() if isinstance(name, str) else name)
    if cls is None:
        raise SeqgraphError(f"unknown optimizer '{name}'", span, did_you_mean(str(name), OPTIMIZERS))
    return build_checked(cls, cls.name, f"optimizer '{cls.name}'", span, kwargs, xp=xp)


def build_checked(factory, call: str, what: str, span, kwargs: dict, shared: tuple = (), **fixed):
    """``factory(**kwargs, **fixed)``; every mistake in ``kwargs`` is a SeqgraphError at
    ``span`` that names ``what`` and shows how to ``call`` it (``shared``: the arguments the
    caller took out before, still offered by the did-you-mean)."""
    params = inspect.signature(factory).parameters
    known = [k for k, p in params.items() if k not in fixed and p.kind is not p.VAR_KEYWORD]
    for key in kwargs:
        if key not in known:
            raise SeqgraphError(f"{what} has no argument '{key}'", span,
                                did_you_mean(key, known + list(shared)) or "it takes no arguments")
    missing = [k for k in known if params[k].default is params[k].empty and k not in kwargs]
    if missing:
        raise SeqgraphError(f"{what} needs {', '.join(missing)}", span,
                            f"write {call}(" + ", ".join(f"{k} = ..." for k in missing) + ")")
    try:
        return factory(**kwargs, **fixed)
    except SeqgraphError as error:
        if span is None:
            raise
        raise SeqgraphError(error.message, span, error.hint) from None


def check_number(owner: str, name: str, value, low: Optional[float] = None,
                  high: Optional[float] = None, high_open: bool = False) -> float:
    """``value`` as a float, which must lie in ``[low, high]`` (``[low, high)`` if
    ``high_open``); anything else is a SeqgraphError naming ``owner`` and ``name``."""
    try:
        if isinstance(value, (bool, str)) or value is None:
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise SeqgraphError(f"{owner}: {name} must be a number, not {value!r}") from None
    if math.isnan(number):
        raise SeqgraphError(f"{owner}: {name} must be a number, not NaN")
    if low is not None and number < low:
        raise SeqgraphError(f"{owner}: {name} must be at least {low:g}, not {value!r}")
    if high is not None and (number > high or (high_open and number == high)):
        bound = f"less than {high:g}" if high_open else f"at most {high:g}"
        raise SeqgraphError(f"{owner}: {name} must be {bound}, not {value!r}")
    return number


def _check_betas(owner: str, betas) -> tuple:
    """Two numbers, each in [0, 1)."""
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise SeqgraphError(f"{owner}: betas must be two numbers, like (0.9, 0.999), "
                            f"not {betas!r}") from None
    return (check_number(owner, "betas[0]", beta1, low=0.0, high=1.0, high_open=True),
            check_number(owner, "betas[1]", beta2, low=0.0, high=1.0, high_open=True))


def clip_grad_norm(xp, grads: dict, max_norm: float, norm: Optional[float] = None) -> float:
    """Scale all gradients together so their global L2 norm is at most ``max_norm``.

    As ``torch.nn.utils.clip_grad_norm_``: ``norm = sqrt(sum over arrays of sum(g * g))``;
    when ``norm > max_norm`` every gradient is multiplied in place by
    ``max_norm / (norm + 1e-6)``. Returns the norm before clipping, as a Python float
    (``inf`` or ``nan`` when a gradient is not finite; the caller decides what to do).
    ``norm``, when the caller has it already, saves computing it again.
    """
    check_number("clip", "max_norm", max_norm, low=0.0)
    if max_norm <= 0:
        raise SeqgraphError(f"clip: the largest gradient norm must be positive, not {max_norm!r}")
    arrays = [g for g in grads.values() if g is not None]
    norm = grad_norm(xp, grads) if norm is None else norm
    scale = max_norm / (norm + 1e-6)
    if clips(norm, max_norm):
        for g in arrays:
            g *= g.dtype.type(scale)
    return norm


def clips(norm: float, max_norm: float) -> bool:
    """Whether :func:`clip_grad_norm` scales gradients of global norm ``norm`` (a
    non-finite norm is left for the caller to see)."""
    return math.isfinite(norm) and max_norm / (norm + 1e-6) < 1.0


def grad_norm(xp, grads: dict) -> float:
    """The global L2 norm of the gradients (``None`` entries skipped) as a Python float: 0.0
    for none, ``inf`` or ``nan`` when one is not finite."""
    arrays = [g for g in grads.values() if g is not None]
    return float(_global_norm(xp, arrays)) if arrays else 0.0


def clip_grad_norm_on_device(xp, grads: dict, max_norm: float):
    """:func:`clip_grad_norm` without leaving the device: no number is read back, so a CUDA
    graph can capture it. Every gradient is multiplied by ``min(1, max_norm / (norm + 1e-6))``
    (by exactly 1 when within the bound, so the numbers are those of :func:`clip_grad_norm`).
    Returns the norm as a 0-d array."""
    arrays = [g for g in grads.values() if g is not None]
    norm = _global_norm(xp, arrays)
    scale = xp.minimum(max_norm / (norm + 1e-6), 1.0)
    for g in arrays:
        g *= scale.astype(g.dtype)
    return norm


def clip_grad_value(xp, grads: dict, clip_value: float) -> None:
    """Clamp every gradient element into ``[-clip_value, clip_value]`` in place, as
    ``torch.nn.utils.clip_grad_value_``. Reads nothing back, so a CUDA graph can capture it."""
    check_number("clip_value", "clip_value", clip_value, low=0.0)
    for g in grads.values():
        if g is not None:
            xp.clip(g, -clip_value, clip_value, out=g)


def _global_norm(xp, arrays: list):
    """``sqrt(sum of g * g over every array)``, squared and summed in float64 (a float32
    gradient above about 1e19 would square to inf), as a 0-d array."""
    return xp.sqrt(sum(xp.sum(xp.square(g, dtype=xp.float64)) for g in arrays))


# --------------------------------------------------------------------------------------------
# Learning-rate schedules: lr_at(count, base_lr, scores), counts from 0
# --------------------------------------------------------------------------------------------
#
# A curve gives the learning rate after ``count`` epochs (or updates, for a per-step
# schedule). ``scores`` are the losses of the epochs done so far; only reduce_on_plateau
# reads them, and it replays them from the start, so a resumed run needs no extra state.


@dataclass(frozen=True)
class Constant:
    """The base learning rate at every epoch."""

    def lr_at(self, count: int, base_lr: float, scores=()) -> float:
        return base_lr


@dataclass(frozen=True)
class StepDecay:
    """``base_lr * gamma ** (count // every)``: multiply by ``gamma`` every ``every``
    epochs (``torch.optim.lr_scheduler.StepLR``)."""

    every: int
    gamma: float

    def lr_at(self, count: int, base_lr: float, scores=()) -> float:
        return base_lr * self.gamma ** (count // self.every)


@dataclass(frozen=True)
class ExponentialDecay:
    """``base_lr * gamma ** count`` (``torch.optim.lr_scheduler.ExponentialLR``)."""

    gamma: float

    def lr_at(self, count: int, base_lr: float, scores=()) -> float:
        return base_lr * self.gamma ** count


@dataclass(frozen=True)
class Linear:
    """``base_lr * (start_factor + (end_factor - start_factor) * min(count, total_iters) /
    total_iters)``: a straight line from one factor to another, then flat
    (``torch.optim.lr_scheduler.LinearLR``)."""

    start_factor: float
    end_factor: float
    total_iters: int

    def lr_at(self, count: int, base_lr: float, scores=()) -> float:
        done = min(count, self.total_iters) / self.total_iters
        return base_lr * (self.start_factor + (self.end_factor - self.start_factor) * done)


@dataclass(frozen=True)
class Cosine:
    """``eta_min + (base_lr - eta_min) * (1 + cos(pi * count / t_max)) / 2``: half a cosine
    from the base rate down to ``eta_min`` over ``t_max`` counts, then back up
    (``torch.optim.lr_scheduler.CosineAnnealingLR``)."""

    t_max: int
    eta_min: float

    def lr_at(self, count: int, base_lr: float, scores=()) -> float:
        return self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * count / self.t_max)) / 2


@dataclass(frozen=True)
class ReduceOnPlateau:
    """Multiply the rate by ``factor`` (not below ``min_lr``) once the score has not improved
    for more than ``patience`` epochs, then wait ``cooldown`` epochs before counting again
    (``torch.optim.lr_scheduler.ReduceLROnPlateau``; the score is the validation loss, or the
    training loss without validation). Improving means beating the best score so far by
    ``threshold``: relatively (``best * (1 -+ threshold)``) or absolutely (``best -+
    threshold``) as ``threshold_mode`` says; ``mode = max`` wants the score to rise."""

    mode: str
    factor: float
    patience: int
    threshold: float
    threshold_mode: str
    cooldown: int
    min_lr: float
    eps: float

    def lr_at(self, count: int, base_lr: float, scores=()) -> float:
        lr, best, bad, cooling = base_lr, math.inf if self.mode == "min" else -math.inf, 0, 0
        for score in scores:
            if self._better(score, best):
                best, bad = score, 0
            else:
                bad += 1
            if cooling > 0:
                cooling, bad = cooling - 1, 0
            if bad > self.patience:
                reduced = max(lr * self.factor, self.min_lr)
                if lr - reduced > self.eps:
                    lr = reduced
                cooling, bad = self.cooldown, 0
        return lr

    def _better(self, score: float, best: float) -> bool:
        sign = 1 if self.mode == "min" else -1
        if self.threshold_mode == "rel":
            return sign * score < sign * best * (1 - sign * self.threshold)
        return sign * score < sign * best - self.threshold


@dataclass(frozen=True)
class Schedule:
    """A curve applied per ``epoch`` or per optimiser ``step``, after an optional linear
    warm-up: for the first ``warmup`` counts the rate climbs from ``warmup_start * base_lr``
    to ``base_lr`` (``LinearLR(start_factor = warmup_start, total_iters = warmup)``), then the
    curve starts from its own count 0 (as ``torch.optim.lr_scheduler.SequentialLR`` with that
    milestone)."""

    curve: object
    per: str = "epoch"
    warmup: int = 0
    warmup_start: float = 1 / 3

    def lr_at(self, count: int, base_lr: float, scores=()) -> float:
        """The learning rate after ``count`` epochs or updates, given the epochs' ``scores``."""
        if count < self.warmup:
            return Linear(self.warmup_start, 1.0, self.warmup).lr_at(count, base_lr)
        return self.curve.lr_at(count - self.warmup, base_lr, tuple(scores)[self.warmup:])


def constant() -> Constant:
    """A schedule that keeps the base learning rate."""
    return Constant()


def step_decay(every: int, gamma: float = 0.1) -> StepDecay:
    """A schedule multiplying the learning rate by ``gamma`` every ``every`` epochs."""
    return StepDecay(_check_count("step_decay", "every", every),
                     check_number("step_decay", "gamma", gamma, low=0.0))


def exponential_decay(gamma: float) -> ExponentialDecay:
    """A schedule multiplying the learning rate by ``gamma`` every epoch."""
    return ExponentialDecay(check_number("exponential_decay", "gamma", gamma, low=0.0))


def linear(start_factor: float = 1 / 3, end_factor: float = 1.0, total_iters: int = 5) -> Linear:
    """A schedule moving the rate's factor in a straight line over ``total_iters`` counts."""
    return Linear(check_number("linear", "start_factor", start_factor, low=0.0, high=1.0),
                  check_number("linear", "end_factor", end_factor, low=0.0, high=1.0),
                  _check_count("linear", "total_iters", total_iters))


def cosine(t_max: int, eta_min: float = 0.0) -> Cosine:
    """A schedule annealing the rate to ``eta_min`` along half a cosine over ``t_max`` counts."""
    return Cosine(_check_count("cosine", "t_max", t_max), check_number("cosine", "eta_min", eta_min, low=0.0))


def reduce_on_plateau(mode: str = "min", factor: float = 0.1, patience: int = 10,
                      threshold: float = 1e-4, threshold_mode: str = "rel", cooldown: int = 0,
                      min_lr: float = 0.0, eps: float = 1e-8) -> ReduceOnPlateau:
    """A schedule cutting the rate by ``factor`` when the epochs' loss stops improving."""
    _check_choice("reduce_on_plateau", "mode", mode, ("min", "max"))
    _check_choice("reduce_on_plateau", "threshold_mode", threshold_mode, ("rel", "abs"))
    return ReduceOnPlateau(mode, check_number("reduce_on_plateau", "factor", factor, low=0.0, high=1.0,
                                               high_open=True),
                           _check_count("reduce_on_plateau", "patience", patience, low=0),
                           check_number("reduce_on_plateau", "threshold", threshold, low=0.0),
                           threshold_mode, _check_count("reduce_on_plateau", "cooldown", cooldown, low=0),
                           check_number("reduce_on_plateau", "min_lr", min_lr, low=0.0),
                           check_number("reduce_on_plateau", "eps", eps, low=0.0))


SCHEDULES: dict = {"constant": constant, "step_decay": step_decay, "exponential_decay": exponential_decay,
                   "linear": linear, "cosine": cosine, "reduce_on_plateau": reduce_on_plateau}
SCHEDULE_OPTIONS = ("per", "warmup", "warmup_start")  # taken by every schedule


def make_schedule(name: str, span: Optional[Span] = None, per: str = "epoch", warmup: int = 0,
                  warmup_start: float = 1 / 3, **kwargs) -> Schedule:
    """The schedule called ``name`` from keyword arguments, e.g.
    ``make_schedule("cosine", t_max=1000, per="step", warmup=100)``; mistakes are
    SeqgraphErrors at ``span``."""
    factory = SCHEDULES.get(name)
    if factory is None:
        raise SeqgraphError(f"unknown learning-rate schedule '{name}'", span,
                            did_you_mean(str(name), SCHEDULES))
    curve = build_checked(factory, name, f"schedule '{name}'", span, kwargs, shared=SCHEDULE_OPTIONS)
    try:
        _check_choice(name, "per", per, ("epoch", "step"))
        if per == "step" and isinstance(curve, ReduceOnPlateau):
            raise SeqgraphError("reduce_on_plateau: per must be epoch; it watches each epoch's loss")
        schedule = Schedule(curve, per, _check_count(name, "warmup", warmup, low=0),
                            check_number(name, "warmup_start", warmup_start, low=0.0, high=1.0))
    except SeqgraphError as error:
        raise SeqgraphError(error.message, span or error.span, error.hint) from None
    return schedule


def _check_count(owner: str, name: str, value, low: int = 1) -> int:
    """``value``, which must be a whole number of at least ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise SeqgraphError(f"{owner}: {name} must be a whole number, at least {low}, not {value!r}")
    return value


def _check_choice(owner: str, name: str, value, choices: tuple) -> str:
    """``value``, which must be one of ``choices``."""
    if value not in choices:
        raise SeqgraphError(f"{owner}: {name} must be {' or '.join(choices)}, not {value!r}",
                            hint=did_you_mean(str(value), choices))
    return value
