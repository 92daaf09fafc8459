"""Lark parse tree → AST. One method per grammar rule or alias; it only builds dataclasses."""

from __future__ import annotations

from lark import Token, Transformer, v_args

from ..errors import Source, Span
from . import ast


class ToAst(Transformer):
    """Builds :mod:`seqgraph.syntax.ast` nodes, attaching a span to each."""

    def __init__(self, source: Source):
        super().__init__()
        self.source = source

    def _span(self, meta) -> Span:
        end = meta.end_column if getattr(meta, "end_line", None) == meta.line else None
        return Span(self.source, meta.line, meta.column, end)

    def _token_span(self, token: Token) -> Span:
        return Span(self.source, token.line, token.column, token.end_column)

    # expressions
    @v_args(meta=True)
    def number(self, meta, children):
        text = str(children[0])
        value = float(text) if any(c in text for c in ".eE") else int(text)
        return ast.Number(value, self._span(meta))

    @v_args(meta=True)
    def string(self, meta, children):
        return ast.String(str(children[0])[1:-1], self._span(meta))

    @v_args(meta=True)
    def name(self, meta, children):
        return ast.Name(str(children[0]), self._span(meta))

    @v_args(meta=True)
    def delayed(self, meta, children):
        name, time, delay = children
        return ast.Delayed(str(name), int(delay), self._span(meta)) if str(time) == "t" else \
            ast.Delayed(str(name), -1, self._token_span(time))

    @v_args(meta=True)
    def call(self, meta, children):
        func, *args = children
        args = [a for a in args if a is not None]
        positional = [a for a in args if not isinstance(a, ast.Keyword)]
        keywords = [a for a in args if isinstance(a, ast.Keyword)]
        return ast.Call(str(func), positional, keywords, self._token_span(func), self._span(meta))

    def positional(self, children):
        return children[0]

    @v_args(meta=True)
    def keyword(self, meta, children):
        name, value = children
        return ast.Keyword(str(name), value, self._token_span(name))

    @v_args(meta=True)
    def tuple(self, meta, children):
        return ast.Tuple(list(children), self._span(meta))

    @v_args(meta=True)
    def neg(self, meta, children):
        return ast.Neg(children[0], self._span(meta))

    def _binop(symbol):
        @v_args(meta=True)
        def build(self, meta, children):
            left, right = children
            return ast.BinOp(symbol, left, right, self._span(meta))
        return build

    add, sub, mul, div, matmul = _binop("+"), _binop("-"), _binop("*"), _binop("/"), _binop("@")
    greater, less, greater_equal, less_equal = _binop(">"), _binop("<"), _binop(">="), _binop("<=")
    equal, not_equal = _binop("=="), _binop("!=")

    # types
    def dims(self, children):
        return list(children)

    def seq_dims(self, children):
        *dims, time = children
        return dims, time

    @v_args(meta=True)
    def seq_type(self, meta, children):
        dtype, (dims, time) = children
        return ast.TypeExpr("seq", str(dtype), dims, self._span(meta),
                            str(time) if time is not None else None)

    @v_args(meta=True)
    def tensor_type(self, meta, children):
        dtype, dims = children
        return ast.TypeExpr("tensor", str(dtype), dims, self._span(meta))

    @v_args(meta=True)
    def class_type(self, meta, children):
        return ast.TypeExpr("class", "int", [children[0]], self._span(meta))

    @v_args(meta=True)
    def vector_type(self, meta, children):
        return ast.TypeExpr("vector", "float", children[0] or [], self._span(meta))

    # statements
    def _declared(kind):
        @v_args(meta=True)
        def build(self, meta, children):
            name, type_, *init = children
            return [ast.Declaration(kind, str(name), type_, init[0] if init else None,
                                    self._token_span(name))]
        return build

    input, target = _declared("input"), _declared("target")

    @v_args(meta=True)
    def declaration(self, meta, children):
        name, type_, init = children
        return ast.Declaration("?", str(name), type_, init, self._token_span(name))

    def _declarations(kind):
        def build(self, children):
            for declaration in children:
                declaration.kind = kind
            return list(children)
        return build

    param, state = _declarations("param"), _declarations("state")

    @v_args(meta=True)
    def output(self, meta, children):
        name, value = children
        return [ast.Output(str(name), value, self._token_span(name))]

    @v_args(meta=True)
    def assign(self, meta, children):
        name, value = children
        return [ast.Assign([str(name)], value, self._span(meta), [self._token_span(name)])]

    @v_args(meta=True)
    def tuple_assign(self, meta, children):
        *names, value = children
        spans = [self._token_span(n) for n in names]
        return [ast.Assign([str(n) for n in names], value, self._span(meta), spans)]

    # blocks
    @v_args(meta=True)
    def size_param(self, meta, children):
        name, default = children
        return ast.SizeParam(str(name), default, self._token_span(name))

    def size_params(self, children):
        return [c for c in children if c is not None]

    @v_args(meta=True)
    def model(self, meta, children):
        name, *rest = children
        sizes = []
        if rest and all(isinstance(item, ast.SizeParam) for item in rest[0]):
            sizes = rest.pop(0)  # statement groups are never empty, so this is size_params
        return ast.Model(str(name), sizes, _flatten(rest), self._token_span(name))

    @v_args(meta=True)
    def port(self, meta, children):
        name, type_ = children
        return ast.Port(str(name), type_, self._token_span(name))

    def cell_outputs(self, children):
        return list(children)

    @v_args(meta=True)
    def cell(self, meta, children):
        name, *rest = children
        rest = [c for c in rest if c is not None]
        inputs = [c for c in rest if isinstance(c, ast.Port)]
        outputs = next(c for c in rest if isinstance(c, list) and c and isinstance(c[0], ast.Port))
        body = _flatten(c for c in rest if isinstance(c, list) and c is not outputs)
        return ast.Cell(str(name), inputs, outputs, body, self._token_span(name))

    @v_args(meta=True)
    def setting(self, meta, children):
        name, value = children
        return ast.Setting(str(name), value, self._token_span(name))

    @v_args(meta=True)
    def train(self, meta, children):
        model, *settings = children
        return ast.Train(str(model) if model is not None else None, settings, self._span(meta))

    def start(self, children):
        return ast.Program(
            self.source,
            [c for c in children if isinstance(c, ast.Model)],
            [c for c in children if isinstance(c, ast.Cell)],
            [c for c in children if isinstance(c, ast.Train)],
        )


def _flatten(groups) -> list:
    return [item for group in groups for item in group]
