"""The ``train { ... }`` block, resolved: every setting with its default, type and origin.

Settings (all optional):

====================  ===============================  ========================================
setting               example                          meaning
====================  ===============================  ========================================
``data``              ``builtin("adding", length=50)``  a built-in task; ``text("file.txt")``
                      ``text("builtin:grammar_text")``  (characters, or ``level = word``; or a
                      ``csv("t.csv", label = "y")``     built-in corpus); a CSV/TSV table;
                      ``npz("arrays.npz")``             ``.npz`` arrays named after the inputs
``examples``          ``2000``                          how many examples a built-in task makes
``optimizer``         ``adam(lr = 0.003)``              ``sgd(lr, momentum, nesterov)``,
                                                        ``adam(lr, betas)``, ``adamw(lr, ...)``,
                                                        ``adagrad(lr, ...)``, ``rmsprop(lr, ...)``
``schedule``          ``step_decay(every = 5)``         or ``exponential_decay``, ``linear``,
                      ``cosine(t_max = 500)``           ``cosine``, ``reduce_on_plateau``; each
                                                        per epoch or per step, with a warm-up
``weight_decay``      ``0.0001``                        L2 penalty added by the optimiser
                                                        (``adamw``: decoupled decay)
``batch``             ``32``                            sequences per batch
``epochs``            ``10``                            passes over the training data
``steps``             ``100``                           at most this many batches per epoch
``bptt``              ``64``                            truncated-BPTT window for text
``clip``              ``5.0``                           global gradient-norm clipping (0: off)
``clip_value``        ``0.5``                           clamp each gradient element (0: off)
``accumulate``        ``4``                             average the gradients of this many
                                                        batches into one update
``valid``             ``0.1``                           fraction held out for validation
``patience``          ``3``                             stop after this many epochs without a
                                                        better validation loss (0: never)
``sample``            ``200``                           characters (words, for word-level text)
                                                        sampled after each epoch
``temperature``       ``0.8``                           sampling temperature
``prime``             ``"The "``                        text that starts each sample
``show``              ``3``                             a model with a fed-back input: after each
                                                        epoch, this many held-out pairs and the
                                                        exact match and token accuracy of the
                                                        *generated* outputs (0: off)
``scheduled_sampling`` ``linear(end = 0.25)``           feed a fed-back decoder its own tokens
                      ``exponential(k = 0.999)``        with a probability rising over training
                      ``inverse_sigmoid(k = 200)``      (see seqgraph.train.scheduled)
``seed``              ``0``                             seeds data order, init and dropout
``skip_nonfinite``    ``0``                             1: skip steps whose loss or gradient is
                                                        NaN/inf (with a warning) instead of stopping
``memory``            ``"8G"``                          the memory a run may use ("" : what the
                                                        machine has free; "off": no check)
``init``              ``"runs/teacher/best.npz"``        start from the parameters a checkpoint
                                                        holds under the model's keys and shapes
``checkpoints``       ``safetensors``                   the run's checkpoint files: ``npz``
                                                        (``final.npz``, ...) or ``safetensors``
                                                        (``final.safetensors``, ...; needs the
                                                        ``safetensors`` package)
====================  ===============================  ========================================

Command-line overrides use the same syntax: ``--set optimizer="sgd(lr = 0.1)"``.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field, fields
from typing import Optional

from ..errors import SeqgraphError, Span, did_you_mean
from ..resources import parse_memory
from ..syntax import ast, parse_source
from .checkpoint import FORMATS


@dataclass(frozen=True)
class Call:
    """A setting written as a call, e.g. ``adam(lr = 0.003)``: its name and arguments."""
    name: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)
    span: Optional[Span] = None
    keyword_spans: dict = field(default_factory=dict, compare=False, repr=False)  # name -> where written


@dataclass
class TrainConfig:
    """Resolved training settings (see the module docstring for each one)."""
    data: Optional[Call] = None
    examples: Optional[int] = None
    optimizer: Call = Call("adam", (), {"lr": 0.003})
    schedule: Call = Call("constant")
    weight_decay: float = 0.0
    batch: int = 32
    epochs: int = 10
    steps: int = 0
    bptt: int = 64
    clip: float = 5.0
    clip_value: float = 0.0
    accumulate: int = 1
    valid: float = 0.1
    patience: int = 0
    sample: int = 0
    temperature: float = 0.8
    prime: str = ""
    show: int = 3
    scheduled_sampling: Call = Call("off")
    seed: int = 0
    skip_nonfinite: int = 0
    memory: str = ""
    init: str = ""
    checkpoints: str = "npz"
    spans: dict = field(default_factory=dict, repr=False)

    def as_dict(self) -> dict:
        """Plain values for the run's ``config.json``."""
        out = {}
        for item in fields(self):
            if item.name == "spans":
                continue
            value = getattr(self, item.name)
            if isinstance(value, Call):
                value = {"call": value.name, "args": list(value.args), "kwargs": dict(value.kwargs)}
            out[item.name] = value
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """The config :meth:`as_dict` wrote (a run's saved settings)."""
        known = {item.name for item in fields(cls)} - {"spans"}
        return cls(**{name: Call(value["call"], tuple(value["args"]), dict(value["kwargs"]))
                      if isinstance(value, dict) else value
                      for name, value in values.items() if name in known})

_INTS = {"examples", "batch", "epochs", "steps", "bptt", "patience", "sample", "seed", "skip_nonfinite",
         "accumulate", "show"}
_FLOATS = {"weight_decay", "clip", "clip_value", "valid", "temperature"}
_CALLS = {"data", "optimizer", "schedule", "scheduled_sampling"}
_STRINGS = {"prime", "memory", "init", "checkpoints"}
SETTINGS = sorted(_INTS | _FLOATS | _CALLS | _STRINGS)


def _literal(expr):
    if isinstance(expr, ast.Number):
        return expr.value
    if isinstance(expr, ast.Neg) and isinstance(expr.operand, ast.Number):
        return -expr.operand.value
    if isinstance(expr, ast.String):
        return expr.value
    if isinstance(expr, ast.Name) and expr.id in ("true", "false"):
        return expr.id == "true"
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Tuple):
        return tuple(_literal(item) for item in expr.items)
    raise SeqgraphError("expected a number, a string or a name here", expr.span)


def _value(name: str, expr):
    if name in _CALLS:
        if isinstance(expr, ast.Name):
            return Call(expr.id, (), {}, expr.span)
        if not isinstance(expr, ast.Call):
            raise SeqgraphError(f"'{name}' is written as a call, e.g. adam(lr = 0.003)", expr.span)
        return Call(expr.func, tuple(_literal(a) for a in expr.args),
                    {k.name: _literal(k.value) for k in expr.keywords}, expr.span,
                    {k.name: k.span for k in expr.keywords})
    value = _literal(expr)
    if name in _INTS:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SeqgraphError(f"'{name}' must be a whole number of at least 0, got {value!r}", expr.span)
    elif name in _FLOATS:
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise SeqgraphError(f"'{name}' must be a number of at least 0, got {value!r}", expr.span)
        value = float(value)
    elif name in _STRINGS and not isinstance(value, str):
        raise SeqgraphError(f"'{name}' must be a string", expr.span)
    return value


def resolve(block: Optional[ast.Train], overrides: Optional[dict] = None) -> TrainConfig:
    """The config from a model's train block, then ``overrides`` (name → source text or value)."""
    config = TrainConfig()
    settings = list(block.settings) if block is not None else []
    seen = set()
    for setting in settings:
        if setting.name in seen:
            raise SeqgraphError(f"setting '{setting.name}' is given twice", setting.span)
        seen.add(setting.name)
        _apply(config, setting)
    for name, text in (overrides or {}).items():
        if not isinstance(text, str):
            text = repr(text)
        _apply(config, _parse_override(name, text))
    _check(config)
    return config


def _apply(config: TrainConfig, setting: ast.Setting) -> None:
    if setting.name not in SETTINGS:
        raise SeqgraphError(f"unknown train setting '{setting.name}'", setting.span,
                            did_you_mean(setting.name, SETTINGS))
    setattr(config, setting.name, _value(setting.name, setting.value))
    config.spans[setting.name] = setting.value.span


def _parse_override(name: str, text: str) -> ast.Setting:
    program = parse_source(f"train {{ {name} = {text} }}", f"--set {name}")
    return program.trains[0].settings[0]


def _check(config: TrainConfig) -> None:
    for name in ("batch", "epochs", "bptt", "accumulate"):
        if getattr(config, name) < 1:
            raise SeqgraphError(f"'{name}' must be at least 1", config.spans.get(name))
    if not 0 <= config.valid < 1:
        raise SeqgraphError("'valid' is a fraction in [0, 1)", config.spans.get("valid"))
    if config.temperature <= 0:
        raise SeqgraphError("'temperature' must be positive", config.spans.get("temperature"))
    _check_checkpoints(config)
    if config.memory:
        try:
            parse_memory(config.memory)
        except SeqgraphError as error:
            raise SeqgraphError(error.message, config.spans.get("memory"), error.hint) from None


def _check_checkpoints(config: TrainConfig) -> None:
    """``checkpoints`` names a format, and safetensors only where its package is installed."""
    span = config.spans.get("checkpoints")
    if config.checkpoints not in FORMATS:
        raise SeqgraphError(f"'checkpoints' is npz or safetensors, not {config.checkpoints!r}", span,
                            did_you_mean(config.checkpoints, FORMATS))
    if config.checkpoints == "safetensors" and importlib.util.find_spec("safetensors") is None:
        raise SeqgraphError("checkpoints = safetensors needs the safetensors package", span,
                            "pip install 'seqgraph[safetensors]', or keep checkpoints = npz")
