"""Check a parsed program: names, sizes, types and shapes; expand calls into primitive ops.

``check_model(program, name, sizes)`` turns one model of the AST into a
:class:`~seqgraph.ir.CheckedModel`. Cells (the user's and the prelude's) are checked once on
their own, with symbolic sizes, and then instantiated at every call with concrete sizes, so a
mistake inside a cell is reported once, in the cell's own terms (``[X + H]`` against ``[2*H]``).

Every user mistake is a :class:`SeqgraphError`; independent mistakes in different statements
are all reported together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from . import library
from .errors import Collector, Diagnostic, SeqgraphError, Span, did_you_mean
from .ir import PREV, Builder, CheckedModel, Feedback, Value, VType
from .ops import REGISTRY, ShapeError
from .sizes import Size, SizeError, format_shape
from .syntax import ast

DEFAULT_TIME = "time"  # the time axis sequences share unless a type names another
CELL_OPTIONS = ("init", "direction", "layers", "dropout", "name", "bias", "proj_size", "recurrent_dropout",
                "merge")
DIRECTIONS = ("forward", "backward", "both")
MERGES = ("concat", "sum", "mean")  # how direction = both joins its two output sequences
LEARNED = "learned"  # init = learned: trainable initial states
# cells with a projected variant: lstm(x, H, proj_size = P) runs lstm_proj with sizes H and P
PROJECTED = {"lstm": ("lstm_proj", "P")}


@dataclass(frozen=True)
class CellOptions:
    """What a call asks of every copy of a cell it instantiates: ``bias = false`` (parameters
    named ``bias...`` become zeros), ``init = learned`` (each state starts from a trainable
    vector) and ``recurrent_dropout`` (the first output's state is read at t-1 through a
    dropout mask drawn once per sequence)."""
    bias: bool = True
    learned_init: bool = False
    recurrent_dropout: float = 0.0


class _Poisoned(Exception):
    """Evaluation touched a name whose definition already failed: stay quiet, it was reported."""


POISON = object()


def _err(message: str, span, hint: Optional[str] = None) -> SeqgraphError:
    return SeqgraphError(message, span, hint)


# --- sizes --------------------------------------------------------------------------------

# No array axis can be longer than an int64 index; a larger size is a typo, and refusing it
# here keeps every later message (and str() of the number) cheap.
MAX_SIZE = 2 ** 63 - 1


def bounded_size(value, span, what: str = "size"):
    """``value`` unchanged, unless it is a concrete integer beyond :data:`MAX_SIZE`."""
    if isinstance(value, int) and abs(value) > MAX_SIZE:
        raise _err(f"{what} is too large: more than {MAX_SIZE:,}", span,
                   "no array axis can be that long; check the sizes this uses")
    return value


def eval_size(expr, env: dict, what: str = "size"):
    """The size an expression denotes: integer arithmetic over the size names in ``env``."""
    return bounded_size(_eval_size(expr, env, what), expr.span, f"a {what}")


def _eval_size(expr, env: dict, what: str):
    if isinstance(expr, ast.Number):
        if isinstance(expr.value, float):
            raise _err(f"a {what} must be a whole number, got {expr.value}", expr.span)
        return expr.value
    if isinstance(expr, ast.Name):
        if expr.id in env:
            return env[expr.id]
        raise _err(f"unknown size '{expr.id}'", expr.span, did_you_mean(expr.id, env))
    if isinstance(expr, ast.Neg):
        return -eval_size(expr.operand, env, what)
    if isinstance(expr, ast.BinOp) and expr.op in "+-*/":
        left, right = eval_size(expr.left, env, what), eval_size(expr.right, env, what)
        if expr.op == "+":
            return left + right
        if expr.op == "-":
            return left - right
        if expr.op == "*":
            return left * right
        return _divide(left, right, expr.span)
    raise _err(f"expected a {what} (an integer expression of sizes), got this", expr.span)


def _divide(left, right, span):
    if not isinstance(right, int) or right == 0:
        raise _err(f"cannot divide a size by {right}", span)
    try:
        if isinstance(left, int) and left % right:
            raise SizeError(f"{left} is not divisible by {right}")
        return left // right
    except SizeError as error:
        raise _err(f"size division is not exact: {error}", span) from None


def positive_size(expr, env: dict, what: str = "size"):
    """A size that must be a positive integer (or a symbol, inside a cell)."""
    size = eval_size(expr, env, what)
    if isinstance(size, int) and size <= 0:
        raise _err(f"a {what} must be a positive integer, got {size}", expr.span,
                   "check the size parameters this expression uses")
    return size


# --- the context a block is checked in --------------------------------------------------------

class LayerNames:
    """The names of the layers called in one scope: a model, or one copy of a cell's body."""

    def __init__(self):
        self.counts: dict = {}
        self.taken: set = set()

    def name(self, function: str, given: Optional[str], span) -> str:
        """``<function>_<n>`` counted per function in order of appearance, or the given ``name=``."""
        if given is None:
            count = self.counts.get(function, 0)
            self.counts[function] = count + 1
            given = f"{function}_{count}"
        if given in self.taken:
            raise _err(f"layer name '{given}' is used twice", span, "give each layer its own name=")
        self.taken.add(given)
        return given


@dataclass
class Block:
    """Names visible while checking one model or one cell instance."""
    sizes: dict
    names: dict = field(default_factory=dict)
    states: dict = field(default_factory=dict)
    assigned: set = field(default_factory=set)
    id_scope: Optional[str] = None
    in_cell: bool = False
    param_prefix: str = ""
    param_suffix: str = ""
    default_init: tuple = ("glorot",)
    layer: Optional[str] = None  # inside a cell instance: the layer every op belongs to
    layer_names: LayerNames = field(default_factory=LayerNames)  # of the layers called in a cell


class Context:
    """What built-in expansions see: ops, parameters and lengths, with errors at the right place."""

    def __init__(self, checker: "Checker", builder: Builder, block: Block):
        self.checker = checker
        self.builder = builder
        self.block = block
        self.layer: Optional[str] = None
        self.inner_layer: Optional[str] = None  # a layer called inside a cell: its parameters' owner
        self.call_span: Optional[Span] = None
        self.arg_spans: dict = {}
        self.use_spans: dict = {}

    # called by built-in expansions
    def span_of(self, param_name: str):
        """Where the argument for ``param_name`` was written (the call itself if defaulted)."""
        return self.arg_spans.get(param_name, self.call_span)

    def exact_division(self, size, parts: int, param_name: str):
        """``size / parts``, which must come out whole."""
        try:
            if isinstance(size, int) and size % parts:
                raise SizeError(f"{size} is not divisible by {parts}")
            return size // parts
        except SizeError as error:
            raise _err(f"cannot split {size} features into {parts} equal parts: {error}",
                       self.span_of(param_name)) from None

    def float_value(self, value: Value, param_name: str) -> Value:
        """``value``, which must hold floats."""
        if value.type.dtype != "float":
            raise _err(f"expected float values, got {value.type}", self.span_of(param_name),
                       "integer ids become vectors with embedding(x, vocab, size)")
        return value

    def seq_value(self, value: Value, param_name: str) -> Value:
        """``value``, which must be a whole sequence."""
        if not value.type.is_seq:
            where = "one step of a sequence (inside a cell)" if value.type.timed else str(value.type)
            raise _err(f"expected a sequence, got {where}", self.span_of(param_name),
                       "sequence functions apply to seq[...] values outside cells")
        return value

    def param(self, local_name: str, shape, init: tuple, span=None) -> Value:
        """A trainable parameter of the current layer, keyed ``<layer>.<name>``."""
        shape = tuple(shape)
        if self.block.param_prefix:  # in a cell: <cell layer>.<layer called in it>.<name>
            prefix = self.block.param_prefix + (f"{self.inner_layer}." if self.inner_layer else "")
        else:
            prefix = f"{self.layer}." if self.layer else ""
        key = f"{prefix}{local_name}{self.block.param_suffix}"
        return self.checker.make_param(self.builder, key, shape, init, span or self.call_span,
                                       self.layer)

    def lengths(self, time: str) -> Value:
        """The lengths of time axis ``time``."""
        return self.checker.lengths_value(self.builder, time)

    def constant(self, number: float) -> Value:
        """The number ``number`` as a value, as if written at the call."""
        return self.builder.add("const", [], VType("float", (), batched=False), self.call_span,
                                scope=self.block.id_scope, attrs={"value": float(number)},
                                layer=self.block.layer)

    def apply(self, op_name: str, inputs, *, lengths: bool = False, lengths_of: Optional[Value] = None,
              drop_time: bool = False, scalar: bool = False, kind_from: Optional[int] = None,
              **attrs) -> Value:
        """Apply registry op ``op_name``: combine the inputs' kinds, run its shape rule.

        ``kind_from`` names the one input whose kind (sequence, time axis, per step) the
        result takes, for ops such as attention that read a sequence of another time axis."""
        op = REGISTRY[op_name]
        inputs = list(inputs)
        vtype = self._combine(op_name, inputs if kind_from is None else [inputs[kind_from]])
        if lengths or lengths_of is not None:
            axis = (lengths_of or inputs[0]).type.time
            inputs.append(self.lengths(axis))
        for index, value in enumerate(inputs):
            if value.type.dtype == "int" and index not in op.nondiff and op_name != "embedding":
                raise _err(f"{op_name} needs float values, got {value.type}", self._span_for(value),
                           "integer ids become vectors with embedding(x, vocab, size)")
        try:
            shape = op.shape(*[v.type.shape for v in inputs], **attrs)
        except ShapeError as error:
            at = inputs[error.arg] if error.arg is not None and error.arg < len(inputs) else None
            raise _err(f"{op_name}: {error.message}", self._span_for(at), error.hint) from None
        except SizeError as error:
            raise _err(f"{op_name}: {error}", self.call_span) from None
        if op.broadcasting:
            inputs = [self._with_rank(v, len(shape)) for v in inputs]
        if scalar:
            vtype = VType("float", (), batched=False)
        elif drop_time:
            vtype = VType("float", tuple(shape), batched=True)
        else:
            vtype = vtype.with_shape(shape)
        return self.builder.add(op_name, inputs, vtype, self.call_span,
                                scope=self.layer or self.block.id_scope, attrs=attrs,
                                layer=self.layer or self.block.layer)

    def _with_rank(self, value: Value, rank: int) -> Value:
        """``value`` with leading 1s on its features up to ``rank`` when it is batched, so its
        runtime array broadcasts as its feature shape does (see :mod:`seqgraph.ops.registry`)."""
        shape = tuple(value.type.shape)
        if not value.type.batched or len(shape) >= rank:
            return value
        widened = (1,) * (rank - len(shape)) + shape
        span = self._span_for(value)
        aligned = self.builder.add("reshape", [value], value.type.with_shape(widened), span,
                                   scope=self.layer or self.block.id_scope, attrs={"shape": widened, "ndim": len(shape)},
                                   layer=self.layer or self.block.layer)
        self.use_spans[aligned.id] = span
        return aligned

    def loss(self, op_name: str, prediction: Value, target: Value) -> Value:
        """A mean loss; over sequences it masks the padded steps."""
        if prediction.type.is_seq != target.type.is_seq:
            raise _err(f"{op_name}: prediction is {prediction.type} but target is {target.type}",
                       self.call_span, "both must be sequences, or neither")
        return self.apply(op_name, [prediction, target], lengths=prediction.type.is_seq, scalar=True)

    def _span_for(self, value: Optional[Value]):
        if value is None:
            return self.call_span
        return self.use_spans.get(value.id, self.call_span)

    def _combine(self, op_name: str, inputs) -> VType:
        """Per-step if any input is; the one time axis of the sequences; batched if any is."""
        timed = any(v.type.timed for v in inputs)
        times = {v.type.time for v in inputs if v.type.time is not None}
        if len(times) > 1:
            first, second = [v for v in inputs if v.type.time is not None][:2]
            raise _err(f"{op_name} mixes sequences of different time axes ('{first.type.time}' and "
                       f"'{second.type.time}')", self._span_for(second),
                       "sequences on different time axes have different lengths; combine them with "
                       "attention(query, memory), or reduce one first with last(...)")
        batched = any(v.type.batched for v in inputs)
        return VType("float", (), time=next(iter(times), None), batched=batched, timed=timed)


# --- the checker ------------------------------------------------------------------------------

class Checker:
    """Checks one model of a program (and the cells it calls)."""

    def __init__(self, program: ast.Program, cells: dict):
        self.program = program
        self.cells = cells
        self.collector = Collector()
        self.params: dict = {}
        self.lengths: dict = {}
        self.layer_names = LayerNames()
        self.states: dict = {}
        self.final_states: dict = {}

    # values shared by a whole model
    def make_param(self, builder: Builder, key: str, shape, init, span, layer) -> Value:
        """A new parameter; each key once per model."""
        if key in self.params:
            raise _err(f"parameter '{key}' is defined twice", span)
        for size in shape:
            if isinstance(size, int) and size <= 0:
                raise _err(f"parameter '{key}' would have shape {format_shape(shape)}: "
                           "sizes must be positive", span)
        vtype = VType("float", shape, batched=False)
        value = builder.add("param", [], vtype, span, stem=key, layer=layer, key=key, init=init)
        self.params[key] = value.id
        return value

    def lengths_value(self, builder: Builder, time: str) -> Value:
        """The one lengths value of time axis ``time``."""
        if time not in self.lengths:
            value = builder.add("lengths", [], VType("int", ()), None, stem=f"{time}.lengths", key=time)
            self.lengths[time] = value
        return self.lengths[time]

    # blocks
    def check_model(self, model: ast.Model, overrides: dict) -> CheckedModel:
        """Check ``model`` with its sizes (defaults, overridden by ``overrides``)."""
        sizes = self._model_sizes(model, overrides)
        builder = Builder()
        block = Block(sizes=sizes)
        inputs, targets, outputs = {}, {}, {}
        feedback = {}
        for stmt in model.body:
            try:
                self._model_statement(stmt, builder, block, inputs, targets, outputs)
            except SeqgraphError as error:
                self.collector.add(error)
                self._poison_targets(stmt, block)
            except _Poisoned:
                self._poison_targets(stmt, block)
        for stmt in model.body:
            if isinstance(stmt, ast.Declaration) and stmt.kind == "input" and stmt.init is not None:
                try:
                    feedback[stmt.name] = self._feedback(stmt, block)
                except SeqgraphError as error:
                    self.collector.add(error)
                except _Poisoned:
                    pass
        loss = block.names.get("loss")
        if loss is not None and loss is not POISON and not loss.type.shape and loss.type.batched:
            # one number per example or per step: averaged over the batch and the valid steps
            ctx = Context(self, builder, block)
            ctx.call_span = loss.span
            loss = library.over_batch(ctx, loss, mean=True)
        if loss is not None and loss is not POISON:
            if loss.type.batched or loss.type.shape or loss.type.timed or loss.type.time:
                self.collector.add(_err(f"'loss' must be a single number, got {loss.type}", loss.span,
                                        "losses such as cross_entropy(...) average over the batch"))
            outputs.setdefault("loss", loss.id)
        self.collector.raise_if_any()
        return CheckedModel(
            name=model.name, sizes=sizes, values=builder.values, inputs=inputs, targets=targets,
            outputs=outputs, params=dict(self.params), states=dict(self.states),
            final_states=dict(self.final_states), loss=outputs.get("loss"),
            time_axes={t: v.id for t, v in self.lengths.items()}, span=model.span, feedback=feedback)

    def _model_sizes(self, model: ast.Model, overrides: dict) -> dict:
        sizes: dict = {}
        declared = {p.name for p in model.sizes}
        for name in overrides:
            if name not in declared:
                raise _err(f"model {model.name} has no size '{name}'", model.span,
                           did_you_mean(name, declared))
        for param in model.sizes:
            if param.name in sizes:
                self.collector.add(_err(f"size '{param.name}' is defined twice", param.span))
                continue
            try:
                if param.name in overrides:
                    value = overrides[param.name]
                    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                        raise _err(f"size '{param.name}' must be a positive integer, got {value!r}",
                                   param.span)
                    bounded_size(value, param.span, f"size '{param.name}'")
                elif param.default is None:
                    raise _err(f"size '{param.name}' has no default", param.span,
                               f"give it one ({param.name} = 64) or pass {param.name}=... when compiling")
                else:
                    value = eval_size(param.default, sizes)
                    if isinstance(value, int) and value <= 0:
                        raise _err(f"size '{param.name}' must be a positive integer, got {value}",
                                   param.default.span,
                                   "a size counts features, classes or channels: 1 or more")
                sizes[param.name] = value
            except SeqgraphError as error:
                self.collector.add(error)
                sizes[param.name] = 1
        return sizes

    def _model_statement(self, stmt, builder, block, inputs, targets, outputs):
        if isinstance(stmt, ast.Declaration):
            if stmt.kind in ("input", "target"):
                self._declare_name(stmt.name, stmt.span, block)
                value = self._input(stmt, builder, block)
                (inputs if stmt.kind == "input" else targets)[stmt.name] = value.id
                block.names[stmt.name] = value
            elif stmt.kind == "param":
                self._declare_name(stmt.name, stmt.span, block)
                shape = tuple(positive_size(d, block.sizes) for d in stmt.type.dims)
                init = self._init_spec(stmt.init, block) if stmt.init is not None else ("glorot",)
                block.names[stmt.name] = self.make_param(builder, stmt.name, shape, init, stmt.span, None)
            else:
                raise _err("a state belongs in a cell", stmt.span,
                           "write the recurrence as a cell and call it on a sequence")
        elif isinstance(stmt, ast.Output):
            if stmt.name in outputs:
                raise _err(f"output '{stmt.name}' is declared twice", stmt.span)
            if stmt.value is not None:
                value = self._expression_statement(stmt.value, builder, block)
                value = self._single(value, stmt.value.span)
                self._bind(stmt.name, value, block)
            elif stmt.name not in block.names:
                raise _err(f"unknown name '{stmt.name}'", stmt.span, did_you_mean(stmt.name, block.names))
            value = block.names[stmt.name]
            if value is POISON:
                raise _Poisoned()
            outputs[stmt.name] = value.id
        else:
            self._assign(stmt, builder, block)

    FEEDBACK_OPTIONS = ("start", "end", "max_length")

    def _feedback(self, stmt: ast.Declaration, block: Block) -> Feedback:
        """``input x : seq[int, V] = feedback(source, start = s, end = e, max_length = n)``,
        checked once the whole model is read (``source`` is usually defined after ``x``)."""
        call, usage = stmt.init, "feedback(logits, start = 1, end = 2, max_length = 20)"
        if not isinstance(call, ast.Call) or call.func != "feedback":
            raise _err("an input's '= ...' says where it comes from when generating", stmt.init.span,
                       f"write = {usage}")
        if len(call.args) != 1 or not isinstance(call.args[0], ast.Name):
            raise _err("feedback(...) takes the name of the output it reads", call.span, f"write {usage}")
        options = {}
        for keyword in call.keywords:
            if keyword.name not in self.FEEDBACK_OPTIONS:
                raise _err(f"feedback(...) has no option '{keyword.name}'", keyword.span,
                           did_you_mean(keyword.name, self.FEEDBACK_OPTIONS))
            options[keyword.name] = eval_size(keyword.value, block.sizes, keyword.name)
        if "max_length" not in options:
            raise _err("feedback(...) needs max_length", call.span, f"write {usage}")
        target, source_name = block.names[stmt.name], call.args[0]
        if source_name.id not in block.names:
            raise _err(f"unknown name '{source_name.id}'", source_name.span,
                       did_you_mean(source_name.id, block.names))
        source = block.names[source_name.id]
        if source is POISON or target is POISON:
            raise _Poisoned()
        vocab = target.type.bound
        if not target.type.is_seq or target.type.dtype != "int":
            raise _err(f"only a seq[int, V] input can be fed back, '{stmt.name}' is {target.type}", stmt.span)
        if (not source.type.is_seq or source.type.time != target.type.time
                or tuple(source.type.shape) != (vocab,)):
            raise _err(f"'{source_name.id}' is {source.type}, but '{stmt.name}' is fed from scores over "
                       f"its {vocab} ids at each step of time axis '{target.type.time}'",
                       source_name.span, f"feed it from the logits (or probabilities): seq[float, {vocab}]")
        for name in ("start", "end"):
            if name in options and not 0 <= options[name] < vocab:
                raise _err(f"feedback {name} token {options[name]} is not an id of '{stmt.name}' "
                           f"(0..{vocab - 1})", call.span)
        if options["max_length"] < 1:
            raise _err("feedback max_length must be at least 1", call.span)
        return Feedback(target.id, source.id, options.get("start"), options.get("end"),
                        options["max_length"], call.span)

    def _declare_name(self, name, span, block):
        if name in block.names:
            raise _err(f"'{name}' is already defined", span, "declarations cannot be shadowed; rename one")

    def _input(self, stmt: ast.Declaration, builder: Builder, block: Block) -> Value:
        vtype = self._type(stmt.type, block.sizes, time=stmt.type.time or DEFAULT_TIME)
        if vtype.time is not None:
            self.lengths_value(builder, vtype.time)
        return builder.add("input", [], vtype, stmt.span, stem=stmt.name, key=stmt.name, name=stmt.name)

    def _type(self, type_: ast.TypeExpr, sizes: dict, time: Optional[str] = None) -> VType:
        dims = [positive_size(d, sizes) for d in type_.dims]
        if type_.kind != "seq" and type_.time is not None:
            raise _err("only a sequence has a time axis", type_.span)
        if type_.kind == "seq":
            if type_.dtype == "int":
                if len(dims) != 1:
                    raise _err("seq[int, V] takes one size: the number of ids", type_.span)
                return VType("int", (), time=time, bound=dims[0])
            return VType("float", tuple(dims), time=time)
        if type_.kind == "tensor":
            if type_.dtype == "int":
                raise _err("tensor[...] holds floats", type_.span, "write tensor[float, ...]")
            return VType("float", tuple(dims))
        if type_.kind == "class":
            return VType("int", (), bound=dims[0])
        return VType("float", tuple(dims))

    def _init_spec(self, expr, block: Block) -> tuple:
        """``= 0``, ``= 1.5``, ``= uniform(0.1)``, ``= normal(0.01)``, ``= glorot``, ``= he``."""
        if isinstance(expr, ast.Number):
            return ("constant", float(expr.value))
        if isinstance(expr, ast.Neg) and isinstance(expr.operand, ast.Number):
            return ("constant", -float(expr.operand.value))
        if isinstance(expr, ast.Name) and expr.id in ("glorot", "he", "zeros", "ones"):
            return {"zeros": ("constant", 0.0), "ones": ("constant", 1.0)}.get(expr.id, (expr.id,))
        if isinstance(expr, ast.Call) and expr.func in ("uniform", "normal") and \
                len(expr.args) == 1 and isinstance(expr.args[0], ast.Number) and not expr.keywords:
            return (expr.func, float(expr.args[0].value))
        raise _err("unknown initialiser", expr.span,
                   "use a number, uniform(bound), normal(std), glorot or he")

    # statements shared by models and cells
    def _assign(self, stmt: ast.Assign, builder: Builder, block: Block):
        result = self._expression_statement(stmt.value, builder, block)
        if len(stmt.targets) == 1:
            self._bind(stmt.targets[0], self._single(result, stmt.value.span), block, stmt.target_spans[0])
            return
        what = f"{stmt.value.func}(...)" if isinstance(stmt.value, ast.Call) else "this expression"
        if not isinstance(result, tuple):
            raise _err(f"{what} gives one value, which cannot be unpacked into "
                       f"{len(stmt.targets)} names", stmt.value.span,
                       f"assign it to one name: {stmt.targets[0]} = ...")
        if len(result) < len(stmt.targets) or (len(result) > len(stmt.targets) and not
                                                 getattr(result, "optional_tail", False)):
            raise _err(f"{what} gives {len(result)} values but {len(stmt.targets)} names receive them",
                       stmt.value.span,
                       f"unpack exactly {len(result)}: {', '.join('abcdefgh'[:len(result)])} = ...")
        for name, value, span in zip(stmt.targets, result, stmt.target_spans):
            self._bind(name, value, block, span)

    def _single(self, result, span):
        if isinstance(result, tuple):
            if getattr(result, "optional_tail", False):
                return result[0]
            raise _err(f"this makes {len(result)} values", span,
                       f"unpack them: {', '.join('abcdefgh'[:len(result)])} = ...")
        return result

    def _bind(self, name: str, value: Value, block: Block, span=None):
        if name in block.states:
            declared = block.states[name]["type"]
            if value.type.shape != declared.shape:
                raise _err(f"state '{name}' is declared {format_shape(declared.shape)} but assigned "
                           f"{format_shape(value.type.shape)}", span or value.span)
            _require_per_example(f"state '{name}'", value, span or value.span)
            block.assigned.add(name)
        elif block.names.get(name) is not None and block.names[name] is not POISON and \
                block.names[name].op in ("input", "param") and not block.in_cell:
            raise _err(f"'{name}' is an {block.names[name].op} and cannot be reassigned", span)
        if value.name is None:
            value.name = name
        block.names[name] = value

    def _poison_targets(self, stmt, block: Block):
        names = stmt.targets if isinstance(stmt, ast.Assign) else [getattr(stmt, "name", None)]
        for name in names:
            if name is not None:
                block.names[name] = POISON
                block.assigned.add(name)

    def _expression_statement(self, expr, builder, block):
        return Evaluator(self, builder, block).value(expr)

    # cells
    def check_cell_alone(self, cell: ast.Cell) -> None:
        """Check a cell's body once with symbolic sizes; report its own mistakes."""
        sizes = {}
        builder = Builder()
        inputs = []
        try:
            for port in cell.inputs:
                dims = tuple(_port_dims(port, sizes, bind_symbols=True))
                inputs.append(builder.add("input", [], VType("float", dims, time="t"), port.span,
                                          stem=port.name))
            for name in _free_sizes(cell, sizes):
                sizes[name] = Size.symbol(name)
        except SeqgraphError as error:
            self.collector.add(error)
            return
        self.instantiate(cell, builder, inputs, sizes, init=None, layer=cell.name, suffix="",
                         span=cell.span)

    def instantiate(self, cell: ast.Cell, builder: Builder, inputs, sizes: dict, init, layer: str,
                    suffix: str, span, options: CellOptions = CellOptions()) -> tuple:
        """One copy of the cell's body scanned over ``inputs`` (sequences); returns its output
        sequences. States start from ``init`` (values) or their declared constant (or a
        trainable vector, with ``options.learned_init``)."""
        scope = f"{layer}{suffix}"
        block = Block(sizes=dict(sizes), id_scope=scope, in_cell=True, param_prefix=f"{layer}.",
                      param_suffix=suffix, layer=layer)
        # PyTorch's recurrent layers draw every parameter from U(-1/sqrt(H), 1/sqrt(H)),
        # H the hidden size: here, the size of the cell's last output (an LSTM's cell state,
        # which a projection leaves at H while h shrinks to proj_size).
        last_output = cell.outputs[-1].type.dims
        hidden = eval_size(last_output[-1], block.sizes) if last_output else 1
        block.default_init = ("uniform_fan", hidden)
        for port, value in zip(cell.inputs, inputs):
            step = builder.add("step", [value], VType("float", value.type.shape, time=value.type.time,
                                                      timed=True), port.span, scope=scope, stem=port.name,
                               layer=layer, name=port.name)
            block.names[port.name] = step
        time = inputs[0].type.time if inputs else None
        state_order = []
        errors = Collector()
        for stmt in cell.body:
            try:
                self._cell_statement(stmt, builder, block, layer, time, state_order, init, span,
                                     options, cell.outputs[0].name)
            except SeqgraphError as error:
                errors.add(error)
                self._poison_targets(stmt, block)
            except _Poisoned:
                self._poison_targets(stmt, block)
        for name in state_order:
            if name not in block.assigned:
                errors.add(_err(f"state '{name}' is never assigned", block.states[name]["span"],
                                f"give it a new value each step: {name} = ..."))
        held = set()
        for name in state_order:
            value = block.names.get(name)
            if value is None or value is POISON:
                continue
            if value.op == PREV or value.id in held:
                # the scan carries each state's value from a node of its own: a delay line
                # (hp = h[t-1]) or a second name for a state's value (c = h) gets a copy
                value = block.names[name] = builder.add("copy", [value], value.type, value.span,
                                                        scope=block.id_scope, stem=name, layer=layer, name=name)
            held.add(value.id)
        outputs = []
        for port in cell.outputs:
            value = block.names.get(port.name)
            if value is None:
                errors.add(_err(f"output '{port.name}' is never assigned", port.span))
                continue
            if value is POISON:
                continue
            try:
                want = tuple(_port_dims(port, block.sizes, bind_symbols=False))
            except SeqgraphError as error:
                errors.add(error)
                continue
            if tuple(value.type.shape) != want:
                errors.add(_err(f"output '{port.name}' is declared {format_shape(want)} but its value "
                                f"is {format_shape(value.type.shape)}", value.span or port.span,
                                f"the cell's header declares {port.name} : {format_shape(want)} "
                                f"(line {port.span.line})"))
                continue
            try:
                _require_per_example(f"output '{port.name}'", value, value.span or port.span)
            except SeqgraphError as error:
                errors.add(error)
                continue
            outputs.append(value)
        if span != cell.span and any(d.span is None or d.span.source is not span.source
                                     or d.span.line != span.line for d in errors.diagnostics):
            # An error inside the cell's body: say which call gave it these sizes.
            sizes_text = ", ".join(f"{k} = {v}" for k, v in block.sizes.items())
            errors.diagnostics.append(Diagnostic(f"in this call of {cell.name} ({sizes_text})", span,
                                                 severity="note"))
        self.collector.diagnostics.extend(errors.diagnostics)
        if errors.diagnostics:
            raise _Poisoned()
        for name in state_order:
            prev = block.states[name]["prev"]
            prev.args = (block.names[name].id,) + prev.args[1:]
        sequences: dict = {}

        def stack(value: Value, stem: str) -> Value:
            if value.id not in sequences:
                sequences[value.id] = builder.add(
                    "stack", [value], VType("float", value.type.shape, time=time), value.span,
                    scope=scope, stem=stem, layer=layer)
            return sequences[value.id]

        stacked = [stack(value, f"{port.name}_seq") for port, value in zip(cell.outputs, outputs)]
        for name in state_order:
            key = block.states[name]["key"]
            self.states[key] = block.states[name]["prev"].id
            sequence = stack(block.names[name], f"{name}_seq")
            lengths = self.lengths_value(builder, time)
            final = builder.add("last", [sequence, lengths], VType("float", sequence.type.shape), None,
                                scope=scope, stem=f"{name}_final", layer=layer, key=key)
            self.final_states[key] = final.id
        return tuple(stacked)

    def _cell_statement(self, stmt, builder, block, layer, time, state_order, init, span,
                        options: CellOptions = CellOptions(), first_output: Optional[str] = None):
        if isinstance(stmt, ast.Declaration):
            if stmt.kind in ("input", "target"):
                raise _err(f"{stmt.kind} declarations belong in a model", stmt.span,
                           "a cell's inputs are listed in its header: cell C(x : [X]) -> ...")
            self._declare_name(stmt.name, stmt.span, block)
            shape = tuple(positive_size(d, block.sizes) for d in stmt.type.dims)
            ctx = Context(self, builder, block)
            ctx.call_span = stmt.span
            if stmt.kind == "param" and not options.bias and stmt.name.startswith("bias"):
                block.names[stmt.name] = constant(builder, block, 0.0, stmt.span)
                return
            if stmt.kind == "param":
                init_spec = self._init_spec(stmt.init, block) if stmt.init is not None else block.default_init
                ctx.layer = layer
                block.names[stmt.name] = ctx.param(stmt.name, shape, init_spec, stmt.span)
                return
            key = f"{layer}.{stmt.name}{block.param_suffix}"
            index = len(state_order)
            if init is not None and index < len(init):
                start = init[index]
                if tuple(start.type.shape) != shape or not start.type.batched or start.type.time:
                    raise _initial_state_mismatch(stmt.name, start, shape, span)
            else:
                fill = self._init_spec(stmt.init, block) if stmt.init is not None else ("constant", 0.0)
                if fill[0] != "constant":
                    raise _err("a state starts from a number", stmt.init.span, "write state h : [H] = 0")
                start = builder.add("state_init", [], VType("float", shape), stmt.span, scope=block.id_scope,
                                    stem=f"{stmt.name}_init", layer=layer, key=key,
                                    attrs={"value": fill[1]})
                if options.learned_init:
                    start = self._learned_start(ctx, builder, block, stmt, shape, start, key)
            prev = builder.add(PREV, [None, start], VType("float", shape, time=time, timed=True), stmt.span,
                               scope=block.id_scope, stem=f"{stmt.name}_prev", layer=layer,
                               name=f"{stmt.name}[t-1]")
            read = prev
            if options.recurrent_dropout and stmt.name == first_output:
                mask = ctx.apply("dropout_mask", [prev], p=options.recurrent_dropout, per_sequence=True)
                read = ctx.apply("mul", [prev, mask])
            block.states[stmt.name] = {"type": VType("float", shape), "prev": prev, "read": read,
                                       "span": stmt.span, "key": key}
            state_order.append(stmt.name)
            return
        if isinstance(stmt, ast.Output):
            raise _err("a cell's outputs are listed in its header", stmt.span,
                       "cell C(x : [X]) -> h : [H] { ... }")
        self._assign(stmt, builder, block)

    def _learned_start(self, ctx, builder, block, stmt, shape, zeros: Value, key: str) -> Value:
        """``zeros + fresh * <layer>.<state>0``: a trainable initial state (zeros at first),
        where ``fresh`` is 1, or 0 when the run carries the state in (text windows), so a
        carried state is used as it is."""
        ctx.layer = block.layer
        start = ctx.param(f"{stmt.name}0", shape, ("constant", 0.0), stmt.span)
        ctx.layer = None
        fresh = builder.add("state_init", [], VType("float", (1,)), stmt.span, scope=block.id_scope,
                            stem=f"{stmt.name}_fresh", layer=block.layer, key=key,
                            attrs={"value": 1.0, "fresh": True})
        return ctx.apply("add", [zeros, ctx.apply("mul", [fresh, start])])


def constant(builder: Builder, block: Block, value: float, span) -> Value:
    """A number as a value (a literal, the 0 a parameter left out by ``bias = false`` reads as)."""
    return builder.add("const", [], VType("float", (), batched=False), span, scope=block.id_scope,
                       attrs={"value": value}, layer=block.layer)


def _require_per_example(what: str, value: Value, span) -> None:
    """A cell's state or output holds one value per example: it must depend on an input or
    a state, not only on parameters and numbers (one value for the whole batch)."""
    if not value.type.batched:
        raise _err(f"{what} is {value.type}, one value for the whole batch: it depends on none of the "
                   "cell's inputs and states", span,
                   "compute it from an input or a state (h[t-1]), as in h = tanh(W @ x + U @ h[t-1])")


def _initial_state_mismatch(state: str, start: Value, shape: tuple, span) -> SeqgraphError:
    """``init = start`` for a state of ``shape`` per example, where ``start`` is not one."""
    wanted = format_shape(shape)
    written = start.name or "h0"
    if start.type.time is not None:
        return _err(f"initial value for state '{state}' is {start.type}, a value at every step, but the state "
                    f"needs one {wanted} value per example", span,
                    f"start from one step of it, e.g. init = last({written})")
    if not start.type.batched:
        return _err(f"initial value for state '{state}' is {start.type}, one value for the whole batch, but the "
                    f"state needs one {wanted} value per example", span,
                    f"start from a value per example: an input (input {written} : {wanted}) or one computed "
                    f"from the data, e.g. init = tanh(dense(last(x), {', '.join(str(d) for d in shape)}))")
    return _err(f"initial value for state '{state}' is {start.type}, but the state is {wanted} per example", span)


# --- expressions ------------------------------------------------------------------------------

class _Values(tuple):
    """Several results of one call; ``optional_tail`` lets ``h = lstm(...)`` take the first."""
    optional_tail = False


class Evaluator:
    """Evaluates expressions of one statement into values."""

    def __init__(self, checker: Checker, builder: Builder, block: Block):
        self.checker = checker
        self.builder = builder
        self.block = block
        self.ctx = Context(checker, builder, block)
        self.init_span = None

    def value(self, expr):
        """The value (or tuple of values) an expression denotes."""
        method = getattr(self, "_" + type(expr).__name__.lower())
        return method(expr)

    def single(self, expr) -> Value:
        """An expression that must denote one value."""
        result = self.value(expr)
        if isinstance(result, tuple):
            if getattr(result, "optional_tail", False):
                return result[0]
            raise _err(f"this makes {len(result)} values where one is needed", expr.span)
        self.ctx.use_spans.setdefault(result.id, expr.span)
        return result

    def _number(self, expr: ast.Number) -> Value:
        return constant(self.builder, self.block, float(expr.value), expr.span)

    def _string(self, expr: ast.String):
        raise _err("a string is not a value here", expr.span, "strings are for train settings")

    def _name(self, expr: ast.Name) -> Value:
        block = self.block
        if expr.id in block.states and expr.id not in block.assigned:
            raise _err(f"state '{expr.id}' is read before it is assigned in this step "
                       "(an algebraic loop)", expr.span,
                       f"read the previous step's value with {expr.id}[t-1]")
        if expr.id in block.names:
            value = block.names[expr.id]
            if value is POISON:
                raise _Poisoned()
            return value
        if expr.id in block.sizes:
            raise _err(f"'{expr.id}' is a size, not a value", expr.span,
                       "sizes go where a size is expected, e.g. dense(x, size)")
        raise _err(f"unknown name '{expr.id}'", expr.span,
                   did_you_mean(expr.id, list(block.names) + list(block.states)))

    def _delayed(self, expr: ast.Delayed) -> Value:
        block = self.block
        if expr.id in block.states:
            return block.states[expr.id]["read"]
        if block.names.get(expr.id) is POISON:
            raise _Poisoned()  # e.g. its state declaration failed, and that was reported
        if not block.in_cell:
            raise _err(f"'{expr.id}[t-1]' reads a previous step, which only a cell can do", expr.span,
                       "write the recurrence as a cell with a state")
        what = "is not defined" if expr.id not in block.names else "is not a state"
        raise _err(f"'{expr.id}' {what}; only states can be read at t-1", expr.span,
                   f"declare it: state {expr.id} : [...] = 0")

    def _neg(self, expr: ast.Neg) -> Value:
        operand = self.single(expr.operand)
        self.ctx.call_span = expr.span
        return self.ctx.apply("neg", [operand])

    _BINARY = {"+": "add", "-": "sub", "*": "mul", "/": "div", "@": "matmul", ">": "greater", "<": "less",
               ">=": "greater_equal", "<=": "less_equal", "==": "equal", "!=": "not_equal"}

    def _binop(self, expr: ast.BinOp) -> Value:
        left, right = self.single(expr.left), self.single(expr.right)
        self.ctx.use_spans[left.id] = expr.left.span
        self.ctx.use_spans[right.id] = expr.right.span
        self.ctx.call_span = expr.span
        if expr.op == "@" and left.type.batched:
            raise _err(f"the left side of @ must be a parameter matrix, got {left.type}", expr.left.span,
                       "W @ x multiplies each example's vector x by the matrix W")
        op_name = self._BINARY[expr.op]
        try:
            REGISTRY[op_name].shape(left.type.shape, right.type.shape)
        except ShapeError as error:
            raise _operand_mismatch(expr, left, right, error) from None
        return self.ctx.apply(op_name, [left, right])

    def _tuple(self, expr: ast.Tuple):
        raise _err("a tuple is only allowed as init = (h0, c0)", expr.span)

    def _call(self, expr: ast.Call):
        if expr.func in library.FUNCTIONS:
            function = library.FUNCTIONS[expr.func]
            args, spans = self._bind_args(expr, function.params, function.usage())
            ctx = self.ctx
            ctx.call_span, ctx.arg_spans = expr.span, spans
            if function.layer and self.block.in_cell:  # its ops are the cell's, its parameters its own
                ctx.inner_layer = self.block.layer_names.name(expr.func, args.pop("name", None), expr.span)
            elif function.layer:
                ctx.layer = self.checker.layer_names.name(expr.func, args.pop("name", None), expr.span)
            result = function.expand(ctx, args)
            ctx.layer = ctx.inner_layer = None
            return _Values(result) if isinstance(result, tuple) else result
        if expr.func in self.checker.cells:
            return self._call_cell(expr, self.checker.cells[expr.func])
        if self.block.in_cell is False and expr.func in ("uniform", "normal"):
            raise _err(f"{expr.func}(...) is an initialiser, only used in param declarations", expr.span)
        known = list(library.FUNCTIONS) + list(self.checker.cells)
        raise _err(f"unknown function '{expr.func}'", expr.span, did_you_mean(expr.func, known))

    # arguments
    def _bind_args(self, call: ast.Call, params, usage: str) -> dict:
        bound: dict = {}
        spans: dict = {}
        variadic = next((p for p in params if p.kind == "values"), None)
        positional = [p for p in params if p.kind != "label" and p.name not in CELL_OPTIONS]
        if variadic is not None:
            bound[variadic.name] = [self._arg(variadic, a) for a in call.args]
            spans[variadic.name] = call.args[0].span if call.args else call.span
        else:
            sizes_param = next((p for p in params if p.kind == "sizes"), None)
            fixed = [p for p in positional if p.kind != "sizes"]
            if len(call.args) > len(fixed) and sizes_param is None:
                extra = call.args[len(fixed)]
                raise _err(f"{call.func} takes {len(fixed)} positional argument"
                           f"{'s' if len(fixed) != 1 else ''}, got {len(call.args)}", extra.span,
                           f"usage: {usage}")
            for param, arg in zip(fixed, call.args):
                bound[param.name] = self._arg(param, arg)
                spans[param.name] = arg.span
            if sizes_param is not None:
                rest = call.args[len(fixed):]
                bound[sizes_param.name] = [self._arg(sizes_param, a) for a in rest]
                spans[sizes_param.name] = rest[0].span if rest else call.span
        by_name = {p.name: p for p in params}
        for keyword in call.keywords:
            param = by_name.get(keyword.name)
            if param is None or param.kind == "values":
                raise _err(f"{call.func} has no argument '{keyword.name}'", keyword.span,
                           did_you_mean(keyword.name, [p.name for p in params if p.kind != "values"])
                           or f"usage: {usage}")
            if param.name in bound:
                raise _err(f"argument '{keyword.name}' is given twice", keyword.span)
            bound[param.name] = self._arg(param, keyword.value)
            spans[param.name] = keyword.value.span
        for param in params:
            if param.name not in bound:
                if param.default is library.REQUIRED:
                    raise _err(f"{call.func} is missing its argument '{param.name}'", call.span,
                               f"usage: {usage}")
                bound[param.name] = param.default
        return bound, spans

    def _arg(self, param, expr):
        kind = param.kind
        if kind in ("value", "values"):
            value = self.single(expr)
            self.ctx.use_spans[value.id] = expr.span
            return value
        if kind in ("size", "sizes"):
            return positive_size(expr, self.block.sizes, f"size for '{param.name}'")
        if kind == "int":
            return eval_size(expr, self.block.sizes, "whole number")
        if kind == "float":
            number = expr.operand if isinstance(expr, ast.Neg) else expr
            if not isinstance(number, ast.Number):
                raise _err(f"'{param.name}' must be a number", expr.span)
            return -float(number.value) if number is not expr else float(number.value)
        if kind == "option":
            if not isinstance(expr, ast.Name) or expr.id not in param.choices:
                raise _err(f"'{param.name}' must be one of {', '.join(param.choices)}", expr.span)
            return expr.id
        if kind == "label":
            if isinstance(expr, (ast.Name, ast.String)):
                return expr.id if isinstance(expr, ast.Name) else expr.value
            raise _err("a layer name is a bare name or a string", expr.span)
        if kind == "init":
            if isinstance(expr, ast.Name) and expr.id == LEARNED and expr.id not in self.block.names:
                return LEARNED
            items = expr.items if isinstance(expr, ast.Tuple) else [expr]
            return [self.single(item) for item in items]
        raise AssertionError(kind)

    # cells
    def _call_cell(self, call: ast.Call, cell: ast.Cell):
        free = _free_sizes(cell, {})
        projected = PROJECTED.get(cell.name)  # prelude names cannot be redefined
        params = tuple(library.Param(p.name) for p in cell.inputs) + \
            tuple(library.Param(name, "size") for name in free) + (
            library.Param("init", "init", None),
            library.Param("direction", "option", "forward", DIRECTIONS),
            library.Param("layers", "size", 1),
            library.Param("dropout", "float", 0.0),
            library.Param("bias", "option", "true", ("true", "false")),
            library.Param("recurrent_dropout", "float", 0.0),
            library.Param("merge", "option", "concat", MERGES),
            library.Param("name", "label", None)) + \
            ((library.Param("proj_size", "size", None),) if projected else ())
        usage = f"{cell.name}({', '.join([p.name for p in cell.inputs] + free)}, init=...|learned, " \
                "direction=forward|backward|both, layers=1, dropout=0, bias=true, recurrent_dropout=0, " \
                "merge=concat|sum|mean" + (", proj_size=..." if projected else "") + ")"
        args, spans = self._bind_args(call, params, usage)
        inputs = [args[p.name] for p in cell.inputs]
        for port, value in zip(cell.inputs, inputs):
            if not value.type.is_seq or value.type.dtype != "float":
                raise _err(f"{cell.name} runs over a float sequence, but '{port.name}' is {value.type}",
                           spans.get(port.name, call.span),
                           "embed integer ids first" if value.type.dtype == "int" else None)
        times = {v.type.time for v in inputs}
        if len(times) > 1:
            raise _err(f"{cell.name}'s inputs are sequences of different lengths", call.span)
        layers, direction, init = args["layers"], args["direction"], args["init"]
        learned = init == LEARNED
        if init is not None and not learned and (layers > 1 or direction == "both"):
            raise _err("init= works with one layer and one direction", spans["init"],
                       "call the cell once per layer to start each from its own state, or write "
                       "init = learned")
        if layers > 1 and len(cell.inputs) != 1:
            raise _err("layers= needs a cell with one input", spans["layers"])
        if not 0 <= args["recurrent_dropout"] < 1:
            raise _err(f"recurrent_dropout must be in [0, 1), got {args['recurrent_dropout']}",
                       spans["recurrent_dropout"])
        if args["merge"] != "concat" and direction != "both":
            raise _err("merge= joins the two directions of direction = both", spans["merge"])
        layer = self.checker.layer_names.name(cell.name, args["name"], call.span)
        sizes = {}
        for port, value in zip(cell.inputs, inputs):
            _unify_port(port, value, sizes, spans.get(port.name, call.span))
        for name in free:
            sizes[name] = args[name]
        if projected and args["proj_size"] is not None:
            cell, sizes[projected[1]] = self.checker.cells[projected[0]], args["proj_size"]
        options = CellOptions(bias=args["bias"] == "true", learned_init=learned,
                              recurrent_dropout=args["recurrent_dropout"])
        self.ctx.layer = layer  # the reverse/concat/dropout ops around the scans belong to it too
        self.init_span = spans.get("init", call.span)  # where a wrong initial state is reported
        result = self._scan_layers(cell, inputs, sizes, None if learned else init, layer, layers, direction,
                                   args["dropout"], call, options, args["merge"])
        self.ctx.layer = None
        values = _Values(result)
        values.optional_tail = True
        return values

    def _scan_layers(self, cell, inputs, sizes, init, layer, layers, direction, dropout, call, options, merge):
        outputs = None
        for index in range(layers):
            suffix = f"_l{index}" if layers > 1 else ""
            if index > 0:
                sizes = dict(sizes)
                _unify_port(cell.inputs[0], inputs[0], sizes, call.span, rebind=True)
            if direction == "both":
                forward = self._scan(cell, inputs, sizes, init, layer, suffix, call, options)
                backward = self._scan_reversed(cell, inputs, sizes, init, layer, suffix + "_reverse", call,
                                               options)
                self.ctx.call_span = call.span
                outputs = tuple(self._merge(merge, f, b, call.span) for f, b in zip(forward, backward))
            elif direction == "backward":
                outputs = self._scan_reversed(cell, inputs, sizes, init, layer, suffix, call, options)
            else:
                outputs = self._scan(cell, inputs, sizes, init, layer, suffix, call, options)
            inputs = [outputs[0]]
            if dropout and index < layers - 1:
                self.ctx.call_span = call.span
                inputs = [self.ctx.apply("mul", [inputs[0], self.ctx.apply("dropout_mask", [inputs[0]],
                                                                             p=dropout)])]
        return outputs

    def _merge(self, merge: str, forward: Value, backward: Value, span) -> Value:
        """The two directions' outputs at each step, joined as ``merge`` says."""
        if merge == "concat":
            return self.ctx.apply("concat", [forward, backward], axis=-1)
        total = self.ctx.apply("add", [forward, backward])
        if merge == "sum":
            return total
        return self.ctx.apply("mul", [total, constant(self.builder, self.block, 0.5, span)])

    def _scan(self, cell, inputs, sizes, init, layer, suffix, call, options):
        return self.checker.instantiate(cell, self.builder, inputs, sizes, init, layer, suffix,
                                        self.init_span or call.span, options)

    def _scan_reversed(self, cell, inputs, sizes, init, layer, suffix, call, options):
        self.ctx.call_span = call.span
        flipped = [self.ctx.apply("reverse", [x], lengths=True) for x in inputs]
        outputs = self._scan(cell, flipped, sizes, init, layer, suffix, call, options)
        self.ctx.call_span = call.span
        return tuple(self.ctx.apply("reverse", [y], lengths=True) for y in outputs)


def _port_dims(port: ast.Port, sizes: dict, bind_symbols: bool):
    """A port's feature sizes; with ``bind_symbols`` a bare unknown name becomes a symbol."""
    if port.type.kind != "vector":
        raise _err(f"a cell port has a vector type such as [H], got '{port.type.kind}'", port.type.span,
                   "a cell sees one step of a sequence: x : [X]")
    dims = []
    for dim in port.type.dims:
        if bind_symbols and isinstance(dim, ast.Name) and dim.id not in sizes:
            sizes[dim.id] = Size.symbol(dim.id)
        dims.append(positive_size(dim, sizes))
    return dims


def _free_sizes(cell: ast.Cell, known: dict) -> list:
    """Size names a call must give: those in the outputs, params and states that the inputs
    do not determine, in order of first appearance."""
    from_inputs = {d.id for port in cell.inputs for d in port.type.dims if isinstance(d, ast.Name)}
    names: list = []

    def collect(expr):
        if isinstance(expr, ast.Name):
            if expr.id not in from_inputs and expr.id not in known and expr.id not in names:
                names.append(expr.id)
        elif isinstance(expr, ast.BinOp):
            collect(expr.left)
            collect(expr.right)
        elif isinstance(expr, ast.Neg):
            collect(expr.operand)

    types = [p.type for p in cell.outputs] + [s.type for s in cell.body if isinstance(s, ast.Declaration)]
    for type_ in types:
        for dim in type_.dims:
            collect(dim)
    return names


def _unify_port(port: ast.Port, value: Value, sizes: dict, span, rebind: bool = False):
    """Bind the port's size names from the actual feature shape of ``value``."""
    dims = port.type.dims
    actual = value.type.shape
    if len(dims) != len(actual):
        raise _err(f"'{port.name}' expects {len(dims)} feature axes, got {value.type}", span)
    for dim, size in zip(dims, actual):
        if isinstance(dim, ast.Name):
            if dim.id in sizes and sizes[dim.id] != size and not rebind:
                raise _err(f"'{port.name}' needs {dim.id} = {sizes[dim.id]}, got {size}", span)
            sizes[dim.id] = size
        elif eval_size(dim, sizes) != size:
            raise _err(f"'{port.name}' expects {format_shape([eval_size(dim, sizes)])}, got {value.type}", span)


def _source_text(expr, limit: int = 40) -> Optional[str]:
    """The text an expression was written as, when it sits on one line and is short."""
    span = getattr(expr, "extent", None) or expr.span
    if span is None or not span.end_col:
        return None
    text = span.source.line(span.line)[span.col - 1:span.end_col - 1].strip()
    return text if text and len(text) <= limit else None


def _operand_mismatch(expr: ast.BinOp, left: Value, right: Value, error: ShapeError) -> SeqgraphError:
    """``a OP b`` whose operands' shapes do not fit, with both shapes and both operands named."""
    left_text = _source_text(expr.left) or "the left side"
    right_text = _source_text(expr.right) or "the right side"
    left_shape, right_shape = format_shape(left.type.shape), format_shape(right.type.shape)
    where = getattr(expr.right, "extent", None) or expr.right.span
    if expr.op == "@" and len(left.type.shape) != 2:
        return _err(f"the left side of @ must be a matrix [m, n], but {left_text} is {left_shape}",
                    getattr(expr.left, "extent", None) or expr.left.span,
                    "declare it as a parameter: param W : [out, in]")
    written = _source_text(expr, limit=60)
    subject = f"in {written}" if written else f"for {expr.op}"
    hint = error.hint
    if expr.op == "@":
        hint = f"{left_text} @ v needs v's last axis to be {left.type.shape[1]}, the second axis of {left_text}"
    return _err(f"shape mismatch {subject}: {left_text} is {left_shape} but {right_text} is {right_shape}",
                where, hint)


# --- entry points -----------------------------------------------------------------------------

def check_cells(program: ast.Program, prelude: dict) -> dict:
    """All cells visible to ``program`` (prelude first), each checked alone."""
    cells = dict(prelude)
    collector = Collector()
    for cell in program.cells:
        if cell.name in library.FUNCTIONS:
            collector.add(_err(f"'{cell.name}' is a built-in function", cell.span, "rename the cell"))
            continue
        if cell.name in cells:
            where = "the prelude" if cell.name in prelude else "this file"
            collector.add(_err(f"cell '{cell.name}' is already defined in {where}", cell.span,
                               "rename the cell"))
            continue
        cells[cell.name] = cell
    for cell in program.cells:
        if cells.get(cell.name) is cell:
            checker = Checker(program, cells)
            try:
                checker.check_cell_alone(cell)
            except _Poisoned:
                pass
            collector.diagnostics.extend(checker.collector.diagnostics)
    collector.raise_if_any()
    return cells


def check_model(program: ast.Program, model: ast.Model, cells: dict, sizes: Optional[dict] = None) -> CheckedModel:
    """Check one model of ``program`` with the given size overrides."""
    checker = Checker(program, cells)
    return checker.check_model(model, sizes or {})
