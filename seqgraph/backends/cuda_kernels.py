"""Fused elementwise chains as CUDA kernels: one forward and one backward kernel per
:class:`~seqgraph.passes.fusion.Chain`, generated from the chain's formulas.

A chain's formulas are written in a small expression language over ``x{k}`` (input ``k``)
and ``g{k}`` (the cotangent of output ``k``)::

    expr := number | name | expr (+ - * /) expr | -expr | expr (> < >= <= == !=) expr
          | exp(expr) | log(expr) | log1p(expr) | tanh(expr) | sqrt(expr) | abs(expr)
          | erf(expr) | max(expr, expr) | min(expr, expr) | pow(expr, expr)
          | where(expr, expr, expr)

``where(c, a, b)`` is ``a`` where ``c`` is not 0, else ``b``.

It is parsed once into a small tree (:func:`parse_formula`), and that one tree is both

- **translated to CUDA C** (:func:`cuda_expression`, :func:`generate_kernel`): every number
  becomes a literal of the kernel's element type ``T`` (``float`` or ``double``), ``max`` and
  ``min`` the NaN-propagating maximum and minimum NumPy computes, ``where`` a conditional
  expression, a comparison ``1`` or ``0`` of type ``T``, and a
  sub-expression used more than once a ``const T`` local computed once (every output is
  computed before any is stored, so an output may share its buffer with an input); and
- **evaluated with an array namespace** (:func:`evaluate`), which is how the formulas are
  tested against the op registry without a GPU, and how a chain runs on NumPy; or
- **written as ufunc calls** (:func:`seqgraph.ops.kernels.formula_call`), which is how an
  op stated by formulas runs in a step loop on NumPy.

Every value is of the element type: on an array namespace a comparison's or a ``where``'s
result is cast to the dtype of the formula's arrays, as in the kernels.

:class:`seqgraph.backends.chains.ChainKernel` runs one chain from these sources.
"""

from __future__ import annotations

import ast
import hashlib
import math
from dataclasses import dataclass

import numpy

from ..errors import SeqgraphError

# each function of the formula language and how many arguments it takes
FUNCTIONS = {"exp": 1, "log": 1, "log1p": 1, "tanh": 1, "sqrt": 1, "abs": 1, "erf": 1,
             "max": 2, "min": 2, "pow": 2, "where": 3}
# the ufunc each function is on an array namespace, where its name differs
UFUNC_NAMES = {"abs": "absolute", "max": "maximum", "min": "minimum", "pow": "power"}
# and in CUDA C
CUDA_NAMES = {"abs": "fabs", "max": "sg_max", "min": "sg_min"}
BINARY = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
COMPARE = {ast.Gt: ">", ast.Lt: "<", ast.GtE: ">=", ast.LtE: "<=", ast.Eq: "==", ast.NotEq: "!="}

# The helpers the generated code calls for ``max`` and ``min``: NaN if either side is NaN,
# as numpy.maximum and numpy.minimum (CUDA's fmax and fmin would return the other side).
PREAMBLE = """
template <typename V> __device__ __forceinline__ V sg_max(V a, V b) {
    return (a > b || a != a) ? a : b;
}
template <typename V> __device__ __forceinline__ V sg_min(V a, V b) {
    return (a < b || a != a) ? a : b;
}
"""


@dataclass(frozen=True)
class Node:
    """One node of a parsed formula: ``kind`` is ``num``, ``var``, ``neg``, ``bin``, ``cmp``
    or ``call``; ``op`` the operator or function name; ``args`` the operands."""
    kind: str
    op: object
    args: tuple = ()


def parse_formula(text: str) -> Node:
    """The tree of one formula; anything outside the formula language is a SeqgraphError."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as error:
        raise SeqgraphError(f"fused formula does not parse: {text!r} ({error.msg})") from None
    return _convert(tree, text)


def _convert(tree, text: str) -> Node:
    if isinstance(tree, ast.Constant) and isinstance(tree.value, (int, float)) \
            and not isinstance(tree.value, bool):
        return Node("num", tree.value)
    if isinstance(tree, ast.Name) and tree.id[:1] in ("x", "g") and tree.id[1:].isdigit():
        return Node("var", tree.id)
    if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.USub):
        return Node("neg", "-", (_convert(tree.operand, text),))
    if isinstance(tree, ast.BinOp) and type(tree.op) in BINARY:
        return Node("bin", BINARY[type(tree.op)], (_convert(tree.left, text), _convert(tree.right, text)))
    if isinstance(tree, ast.Compare) and len(tree.ops) == 1 and type(tree.ops[0]) in COMPARE:
        return Node("cmp", COMPARE[type(tree.ops[0])],
                    (_convert(tree.left, text), _convert(tree.comparators[0], text)))
    if isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name) and tree.func.id in FUNCTIONS \
            and not tree.keywords and len(tree.args) == FUNCTIONS[tree.func.id]:
        return Node("call", tree.func.id, tuple(_convert(a, text) for a in tree.args))
    raise SeqgraphError(f"fused formula {text!r} uses {ast.unparse(tree)!r}, which has no kernel form",
                        hint=f"formulas may use + - * /, comparisons and {', '.join(FUNCTIONS)}")


# -- evaluation with an array namespace -------------------------------------------------------


def evaluate(formula, values: dict, xp):
    """The value of ``formula`` (text or a parsed tree) with ``values`` bound to ``x{k}`` and
    ``g{k}``, computed with ``xp`` (a repeated sub-expression is computed once)."""
    tree = parse_formula(formula) if isinstance(formula, str) else formula
    return _evaluate(tree, values, xp, {}, float_dtype(values))


def float_dtype(values: dict):
    """The dtype of the first float array among ``values`` (None if there is none)."""
    return next((v.dtype for v in values.values() if getattr(getattr(v, "dtype", None), "kind", "") == "f"), None)


def _evaluate(node: Node, values: dict, xp, memo: dict, dtype):
    if node in memo:
        return memo[node]
    if node.kind == "num":
        return node.op
    if node.kind == "var":
        return values[node.op]
    args = [_evaluate(a, values, xp, memo, dtype) for a in node.args]
    if node.kind == "neg":
        result = xp.negative(args[0])
    elif node.kind == "call" and node.op == "where":
        result = xp.where(xp.not_equal(args[0], 0), args[1], args[2])
    elif node.kind == "call":
        result = function(xp, UFUNC_NAMES.get(node.op, node.op))(*args)
    elif node.kind == "cmp":
        result = _COMPARE_UFUNCS[node.op](xp)(*args)
    else:
        result = _BINARY_UFUNCS[node.op](xp)(*args)
    if dtype is not None and getattr(result, "dtype", dtype) != dtype:
        result = result.astype(dtype)
    memo[node] = result
    return result


def function(xp, name: str):
    """Function ``name`` of namespace ``xp``; ``erf``, which NumPy lacks, is SciPy's (CuPy's
    own on CuPy)."""
    if name != "erf":
        return getattr(xp, name)
    if getattr(xp, "__name__", "") == "cupy":
        from cupyx.scipy.special import erf
    else:
        from scipy.special import erf
    return erf


_BINARY_UFUNCS = {"+": lambda xp: xp.add, "-": lambda xp: xp.subtract, "*": lambda xp: xp.multiply,
                  "/": lambda xp: xp.divide}
_COMPARE_UFUNCS = {">": lambda xp: xp.greater, "<": lambda xp: xp.less, ">=": lambda xp: xp.greater_equal,
                   "<=": lambda xp: xp.less_equal, "==": lambda xp: xp.equal, "!=": lambda xp: xp.not_equal}


# -- translation to CUDA C --------------------------------------------------------------------


def cuda_expression(node: Node, names: dict, functions: dict = None) -> str:
    """CUDA C (or C) for ``node`` over element type ``T``; sub-trees in ``names`` are read
    from the locals named there; ``functions`` renames functions (by default ``max`` is
    ``sg_max``, ``abs`` is ``fabs`` (see :data:`CUDA_NAMES`), others keep their names unless
    renamed: C's float ``exp`` is ``expf``)."""
    if node in names:
        return names[node]
    if node.kind == "num":
        return f"((T){_literal(node.op)})"
    if node.kind == "var":
        return node.op
    args = [cuda_expression(a, names, functions) for a in node.args]
    if node.kind == "neg":
        return f"(-{args[0]})"
    if node.kind == "call" and node.op == "where":
        return f"({args[0]} != ((T)0) ? {args[1]} : {args[2]})"
    if node.kind == "call":
        name = (functions or {}).get(node.op, CUDA_NAMES.get(node.op, node.op))
        return f"{name}({', '.join(args)})"
    if node.kind == "cmp":
        return f"((T)({args[0]} {node.op} {args[1]}))"
    return f"({args[0]} {node.op} {args[1]})"


def _literal(number) -> str:
    if isinstance(number, int):
        return str(number)
    if not math.isfinite(number):
        raise SeqgraphError(f"fused formula holds the number {number}, which has no CUDA literal")
    return repr(float(number))


def cuda_statements(assignments: list, functions: dict = None) -> list:
    """Lines of CUDA C computing ``target = formula`` for every ``(target, tree)`` given; a
    sub-expression that occurs more than once becomes a ``const T`` local, computed once.

    With several targets every value is computed before any is stored: CuPy binds inputs
    by reference, and an output may share its buffer with an input."""
    counts: dict = {}
    for _, tree in assignments:
        _count(tree, counts)
    names, lines = {}, []
    for _, tree in assignments:
        _bind_shared(tree, counts, names, lines, functions)
    if len(assignments) == 1:
        (target, tree), = assignments
        return lines + [f"{target} = {cuda_expression(tree, names, functions)};"]
    lines += [f"const T r{k} = {cuda_expression(tree, names, functions)};"
              for k, (_, tree) in enumerate(assignments)]
    return lines + [f"{target} = r{k};" for k, (target, _) in enumerate(assignments)]


def _count(node: Node, counts: dict) -> None:
    counts[node] = counts.get(node, 0) + 1
    if counts[node] == 1:
        for arg in node.args:
            _count(arg, counts)


def _bind_shared(node: Node, counts: dict, names: dict, lines: list, functions: dict = None) -> None:
    if node in names or node.kind in ("num", "var"):
        return
    for arg in node.args:
        _bind_shared(arg, counts, names, lines, functions)
    if counts[node] > 1:
        name = f"s{len(names)}"
        lines.append(f"const T {name} = {cuda_expression(node, names, functions)};")
        names[node] = name


@dataclass(frozen=True)
class KernelSource:
    """What one ``cupy.ElementwiseKernel`` is made of (also compiled alone by the tests)."""
    name: str
    inputs: tuple
    outputs: tuple
    body: str

    @property
    def in_params(self) -> str:
        """CuPy's parameter list of the inputs (all of type ``T``)."""
        return ", ".join(f"T {n}" for n in self.inputs)

    @property
    def out_params(self) -> str:
        """CuPy's parameter list of the outputs (all of type ``T``)."""
        return ", ".join(f"T {n}" for n in self.outputs)

    def standalone(self, dtype: str) -> str:
        """A complete CUDA translation unit running the body once per element of flat arrays
        of ``dtype`` (``float32`` or ``float64``), as an ElementwiseKernel does, for checking
        the generated code with ``nvcc`` where CuPy is absent."""
        ctype = {"float32": "float", "float64": "double"}[dtype]
        params = [f"const T* in_{n}" for n in self.inputs] + [f"T* out_{n}" for n in self.outputs]
        loads = [f"        const T {n} = in_{n}[i];" for n in self.inputs]
        refs = [f"        T& {n} = out_{n}[i];" for n in self.outputs]
        body = ["        " + line for line in self.body.splitlines()]
        return "\n".join([
            f"typedef {ctype} T;", PREAMBLE,
            f'extern "C" __global__ void {self.name}({", ".join(params)}, long long n) {{',
            "    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;",
            "         i += (long long)blockDim.x * gridDim.x) {",
            *loads, *refs, *body, "    }", "}", ""])


def generate_kernel(chain, direction: str, functions: dict = None) -> KernelSource:
    """The kernel source of ``chain`` for ``direction`` (``forward`` or ``backward``);
    ``functions`` renames functions in the body (see :func:`cuda_expression`).

    Forward reads the inputs ``x0..`` and writes one output ``y{k}`` per chain output;
    backward reads the inputs and the outputs' cotangents ``g0..`` and writes ``d{k}``, the
    cotangent of the ``k``-th target of ``chain.backward`` (an input, or a node of the chain)."""
    if direction == "forward":
        inputs = tuple(f"x{k}" for k in range(len(chain.inputs)))
        targets = [(f"y{k}", text) for k, text in enumerate(chain.forward.values())]
    else:
        inputs = tuple(f"x{k}" for k in range(len(chain.inputs))) + \
            tuple(f"g{k}" for k in range(len(chain.outputs)))
        targets = [(f"d{k}", text) for k, text in enumerate(chain.backward.values())]
    assignments = [(target, parse_formula(text)) for target, text in targets]
    body = "\n".join(cuda_statements(assignments, functions))
    digest = hashlib.sha1(f"{inputs}{targets}".encode()).hexdigest()[:12]
    name = f"sg_chain_{direction}_{digest}"
    return KernelSource(name, inputs, tuple(t for t, _ in targets), body)


def broadcast_shape(arrays) -> tuple:
    """The NumPy broadcast of the arrays' shapes."""
    return numpy.broadcast_shapes(*(numpy.shape(a) for a in arrays))
