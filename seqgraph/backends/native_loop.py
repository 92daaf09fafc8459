"""A scan's step loop run as one native call.

The compiler makes each recurrent core's forward and backward step a
:class:`~seqgraph.step_program.Loop` of typed instructions: per step a few calls, a
matrix product, an add or a copy, the fused chains' native loops. Run from Python, at the
sizes recurrent cells run at, the Python and ctypes cost of each call is a good part of the
work itself (about 3 us a call beside a 30 us product and 5 us chains). Where it knows every
instruction of a loop, this module lowers the loop once (:func:`lower`) into a **tape**:
instructions over **blocks**, each block a 2-D ``(rows, columns)`` part of one of the loop's
arrays whose address moves by a fixed number of bytes from step to step (``S[t + 1]``,
``K[t][..., 128:256]``, a scratch buffer that stays put). One C function then
runs every step: products through MKL (packed weights or plain GEMM), adds, copies, zero
fills and the chains' own ``_rows`` loops, the same code the Python loop calls. Where each
row of the loop runs on its own (the batch's sequences), the rows are shared out among MKL's
threads, each running every step on its own rows (see :data:`SHARE_ROWS`).

What it does not know (another ufunc, a generic op's callable, a constant operand, an array
not laid out in rows) leaves the loop to Python: :meth:`NativeLoop.run` says False before it
has run anything, and the caller runs the Python function on the same arrays.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from enum import IntEnum

import numpy

from ..step_program import Instruction, Loop, View
from . import native
from .chains import ChainKernel
from .mkl import PackedWeight, Products, address, matrix_layout


class Code(IntEnum):
    """Instruction codes, the first number of each instruction the C runner below reads."""
    PRODUCT_PACKED = 1
    PRODUCT = 2
    ADD = 3
    SUBTRACT = 4
    MULTIPLY = 5
    COPY = 6
    ZERO = 7
    CHAIN = 8


ELEMENTWISE = {"add": Code.ADD, "subtract": Code.SUBTRACT, "multiply": Code.MULTIPLY}

SPREAD = -1  # the column count of a single value, spread over a row where it is read
# The fewest rows worth a thread of their own. Each row of a recurrent state (a sequence of
# the batch) runs through the loop without reading another, so a loop over 32 rows runs as
# two loops over 16 on two threads, with no waiting between steps: at hidden 128 on two
# cores the loops took 0.55-0.65 of the time of one loop whose products alone use both threads.
SHARE_ROWS = 8

RUNNER = """
typedef struct { char* at; long step; long rows; long cols; long row; } sg_block;
#define SG_AT(b, t) ((b)->at + (t) * (b)->step)
#define SG_ROW(b) ((b)->rows == 1 ? 0 : (b)->row)
#define SG_LEAD(b) ((b)->rows == 1 ? (b)->cols : (b)->row)
typedef int (*sg_rows_loop)(long, long, char* const*, const long*);
typedef int (*sg_set_threads)(int);

/* one run of a loop, its rows shared out in ``parts`` (see sg_share_out) */
typedef struct {
    long steps; int reverse; const long* prelude; long prelude_length; const long* body;
    long body_length; const sg_block* blocks; long block_count; void* const* slots;
    long rows; long parts; void* const* threading;
} sg_run;

"""

RUNNER_TYPED = """
typedef void (*sg_compute_{T})(int, int, int, int, int, int, const {T}*, int, const void*, int, {T}, {T}*, int);
typedef void (*sg_gemm_{T})(int, int, int, int, int, int, {T}, const {T}*, int, const {T}*, int, {T}, {T}*, int);

static void sg_binary_{T}(long op, const sg_block* a, const sg_block* b, const sg_block* o, long t) {{
    const long rows = o->rows, cols = o->cols, ra = SG_ROW(a), rb = SG_ROW(b), ro = o->row;
    const {T}* pa = (const {T}*)SG_AT(a, t);
    const {T}* pb = (const {T}*)SG_AT(b, t);
    {T}* po = ({T}*)SG_AT(o, t);
    for (long r = 0; r < rows; r++) {{
        const {T}* x = pa + r * ra; const {T}* y = pb + r * rb; {T}* z = po + r * ro;
        if (op == {ADD}) {{
            #pragma omp simd
            for (long j = 0; j < cols; j++) z[j] = x[j] + y[j];
        }} else if (op == {SUBTRACT}) {{
            #pragma omp simd
            for (long j = 0; j < cols; j++) z[j] = x[j] - y[j];
        }} else {{
            #pragma omp simd
            for (long j = 0; j < cols; j++) z[j] = x[j] * y[j];
        }}
    }}
}}

static void sg_copy_{T}(const sg_block* d, const sg_block* s, long t) {{
    const long rs = SG_ROW(s);
    const {T}* ps = (const {T}*)SG_AT(s, t);
    {T}* pd = ({T}*)SG_AT(d, t);
    for (long r = 0; r < d->rows; r++)
        for (long j = 0; j < d->cols; j++) pd[r * d->row + j] = ps[r * rs + j];
}}

static void sg_zero_{T}(const sg_block* d, long t) {{
    {T}* pd = ({T}*)SG_AT(d, t);
    for (long r = 0; r < d->rows; r++)
        for (long j = 0; j < d->cols; j++) pd[r * d->row + j] = 0;
}}

static void sg_steps_{T}(const long* code, long length, const sg_block* b, void* const* slot, long t) {{
    for (long pc = 0; pc < length;) {{
        const long* at = code + pc;
        switch (at[0]) {{
        case {PRODUCT_PACKED}: {{
            const sg_block* a = b + at[1]; const sg_block* o = b + at[2];
            ((sg_compute_{T})slot[0])(101, 111, 151, o->rows, o->cols, a->cols, (const {T}*)SG_AT(a, t),
                                      SG_LEAD(a), slot[at[3]], o->cols, ({T})at[4], ({T}*)SG_AT(o, t), SG_LEAD(o));
            pc += 5; break; }}
        case {PRODUCT}: {{
            const sg_block* a = b + at[1]; const sg_block* o = b + at[2];
            ((sg_gemm_{T})slot[1])(101, 111, (int)at[5], o->rows, o->cols, a->cols, 1, (const {T}*)SG_AT(a, t),
                                   SG_LEAD(a), (const {T}*)slot[at[3]], (int)at[6], ({T})at[4],
                                   ({T}*)SG_AT(o, t), SG_LEAD(o));
            pc += 7; break; }}
        case {ADD}: case {SUBTRACT}: case {MULTIPLY}:
            sg_binary_{T}(at[0], b + at[1], b + at[2], b + at[3], t);
            pc += 4; break;
        case {COPY}:
            sg_copy_{T}(b + at[1], b + at[2], t);
            pc += 3; break;
        case {ZERO}:
            sg_zero_{T}(b + at[1], t);
            pc += 2; break;
        case {CHAIN}: {{
            const long count = at[2];
            char* data[count]; long step[count];
            for (long k = 0; k < count; k++) {{
                const sg_block* x = b + at[3 + k];
                data[k] = SG_AT(x, t); step[k] = SG_ROW(x);
            }}
            const sg_block* first = b + at[3 + at[3 + count]];
            ((sg_rows_loop)slot[at[1]])(first->rows, first->cols, data, step);
            pc += 4 + count; break; }}
        default:
            return;
        }}
    }}
}}

/* the prelude once, then the body for t = 0 .. steps - 1 (backwards when reverse) */
static void sg_all_steps_{T}(const sg_run* run, const sg_block* blocks) {{
    sg_steps_{T}(run->prelude, run->prelude_length, blocks, run->slots, 0);
    for (long i = 0; i < run->steps; i++)
        sg_steps_{T}(run->body, run->body_length, blocks, run->slots, run->reverse ? run->steps - 1 - i : i);
}}

/* every step on share ``part`` of the rows: blocks with the run's rows narrowed to it, the
   others (a row read by every row) as they are; MKL on this thread alone */
static void sg_share_{T}(void* job, long part) {{
    const sg_run* run = (const sg_run*)job;
    const long first = sg_share_start(run->rows, run->parts, part);
    const long last = sg_share_start(run->rows, run->parts, part + 1);
    sg_block blocks[run->block_count];
    for (long k = 0; k < run->block_count; k++) {{
        blocks[k] = run->blocks[k];
        if (blocks[k].rows == run->rows) {{
            blocks[k].at += first * blocks[k].row * (long)sizeof({T});
            blocks[k].rows = last - first;
        }}
    }}
    const int before = ((sg_set_threads)run->threading[3])(1);
    sg_all_steps_{T}(run, blocks);
    ((sg_set_threads)run->threading[3])(before);
}}

/* the whole loop; with parts > 1 the rows are shared out among that many threads, each
   running every step on its own rows (a row's recurrence never reads another row) */
void sg_loop_{T}(long steps, int reverse, const long* prelude, long prelude_length, const long* body,
                 long body_length, const sg_block* blocks, long block_count, void* const* slots,
                 long rows, long parts, void* const* threading) {{
    sg_run run = {{steps, reverse, prelude, prelude_length, body, body_length, blocks, block_count, slots,
                  rows, parts, threading}};
    if (parts > 1)
        sg_share_out(sg_share_{T}, &run, parts, threading);
    else
        sg_all_steps_{T}(&run, blocks);
}}
"""


class Untranslatable(Exception):
    """A loop instruction (or an array) the tape has no instruction for."""


@dataclass(frozen=True)
class Block:
    """Columns ``start:stop`` (``stop`` None: to the end) of parameter ``root`` at step
    ``t + shift`` of its leading axis, or of the whole array every step when ``shift`` is None."""
    root: str
    shift: object = None
    start: int = 0
    stop: object = None


@dataclass
class Tape:
    """A loop as instructions: each a tuple ``(kind, ...)`` over :class:`Block` operands."""
    prelude: list
    body: list
    reverse: bool


def lower(loop: Loop) -> Tape:
    """The tape of step ``loop``, or :class:`Untranslatable` for an instruction it has no
    instruction for."""
    names: dict = {}
    prelude = _lowered(loop.prelude, names)
    return Tape(prelude, _accumulated(_lowered(loop.body, names), prelude), loop.reverse)


def _accumulated(body: list, prelude: list) -> list:
    """``body`` with each ``product(a, w, p)`` followed by ``add(p, y, y)`` (p read nowhere
    else) made one product added straight into y (GEMM's beta = 1): the LSTM's recurrent
    product accumulates into its input projection's row, one pass over memory fewer."""
    uses = {}
    for instruction in prelude + body:
        for block in _blocks(instruction):
            uses[block.root] = uses.get(block.root, 0) + 1
    result, k = [], 0
    while k < len(body):
        first, then = body[k], body[k + 1] if k + 1 < len(body) else None
        if (first[0] == "product" and then is not None and then[0] == "add" and then[3] in then[1:3]
                and first[3] in then[1:3] and first[3] != then[3] and uses[first[3].root] == 2):
            result.append(("product", first[1], first[2], then[3], True))
            k += 2
        else:
            result.append(first)
            k += 1
    return result


def _lowered(items, names: dict) -> list:
    """The tape instructions of a loop's ``items``; each view binds its name in ``names``."""
    found = []
    for item in items:
        if isinstance(item, View):
            names[item.name] = _view(item, names)
        else:
            found.append(_instruction(item, names))
    return found


def _instruction(item: Instruction, names: dict) -> tuple:
    if item.kind == "zero":
        (out,) = item.out
        return ("zero", _columns(_block(out, names), item.columns))
    if item.kind == "chain":
        return ("chain", item.function, [_block(a, names) for a in item.inputs], [_block(o, names) for o in item.out])
    if item.kind != "ufunc":
        raise Untranslatable(str(item))
    call = item.call
    if call.ufunc in ELEMENTWISE and len(call.operands) == 2 and not call.keyword:
        return (call.ufunc, *(_block(a, names) for a in call.operands), _block(call.out, names))
    if call.ufunc == "copyto":
        (source,) = call.operands
        return ("copy", _block(call.out, names), _block(source, names))
    if call.ufunc in ("dot", "matmul") and len(call.operands) == 2:
        left, weight = call.operands
        if not isinstance(weight, str) or weight in names:
            raise Untranslatable(str(item))  # the weight must be an array the loop is handed
        return ("product", _block(left, names), weight, _block(call.out, names), False)
    raise Untranslatable(str(item))


def _block(operand, names: dict) -> Block:
    """The block a named operand is (a number or a nested call is none)."""
    if not isinstance(operand, str):
        raise Untranslatable(repr(operand))
    return names.get(operand) or Block(operand)


def _view(view: View, names: dict) -> Block:
    base = _block(view.of, names)
    if view.shift is not None:
        if base.shift is not None or base.start != 0 or base.stop is not None:
            raise Untranslatable(str(view))
        base = Block(base.root, view.shift)
    return _columns(base, view.columns)


def _columns(base: Block, columns) -> Block:
    """Columns ``start:stop`` of ``base`` (None: all of it)."""
    if columns is None:
        return base
    start, stop = columns
    if not 0 <= start < stop or (base.stop is not None and base.start + stop > base.stop):
        raise Untranslatable(f"columns {start}:{stop} of {base.root}")
    return Block(base.root, base.shift, base.start + start, base.start + stop)


class NativeLoop:
    """A step loop's tape and the native runner for it (see the module docstring).

    What a pass's arrays are laid out as (shapes, strides, dtypes, the steps) decides every
    check and every instruction; only their addresses change from pass to pass while their
    buffers are reused. So the tape is encoded once per layout (:class:`_Plan`) and a pass
    only adds each array's address to its blocks' offsets."""

    def __init__(self, tape: Tape, products: Products, runners: dict):
        self.tape = tape
        self.runners = runners
        self.products = products
        self.gemms = {numpy.dtype(dtype): list(products.routine_addresses(dtype)) for dtype in native.C_TYPES}
        instructions = tape.prelude + tape.body
        self.blocks = sorted({b for instruction in instructions for b in _blocks(instruction)},
                             key=lambda b: (b.root, str(b.shift), b.start, str(b.stop)))
        self.written = [b for instruction in instructions for b in _written(instruction)]
        self.roots = sorted({b.root for b in self.blocks} | {i[2] for i in instructions if i[0] == "product"})
        self.root_index = {name: k for k, name in enumerate(self.roots)}
        self._plan = (None, None)

    def run(self, steps: int, arrays: dict) -> bool:
        """Run every step on ``arrays`` (the loop's parameters by name); False, having run
        nothing, where an array is not laid out as the tape reads it."""
        values = [arrays.get(name) for name in self.roots]
        key = (steps, *map(_layout_key, values))
        if self._plan[0] != key:
            try:
                self._plan = (key, _Plan(self, steps, arrays))
            except Untranslatable:
                self._plan = (key, None)
        plan = self._plan[1]
        if plan is None:
            return False
        bases = numpy.array([_base(v) for v in values] + [0], dtype=numpy.int64)
        table = plan.table.copy()
        table[:, 0] += bases[plan.owner]
        if any(_overlap(table[a], table[o], plan.dtype) for a, o in plan.products):
            return False
        for row, name in plan.spread:
            row.fill(arrays[name])
        slots = numpy.array([bases[self.root_index[s]] if isinstance(s, str) else s for s in plan.slots],
                            dtype=numpy.int64)  # addresses, read as pointers
        parts, threading = self.products.shares(plan.shared_rows, SHARE_ROWS)
        self.runners[plan.dtype](steps, int(self.tape.reverse), plan.prelude.ctypes.data, len(plan.prelude),
                                 plan.body.ctypes.data, len(plan.body), table.ctypes.data, len(table),
                                 slots.ctypes.data, plan.shared_rows, parts, threading)
        return True


class _Plan:
    """A tape encoded for one layout of its arrays. ``table`` has a row per block: ``(offset
    from its array's first element in bytes, bytes per step, rows, columns, row step in
    items)``, ``owner`` the index of that array among the loop's roots (one past them for a
    row of the plan's own); ``slots`` the pointers instructions name (MKL's two GEMMs first;
    a root's name stands for its address in the pass); ``spread`` the rows a single value is
    spread over, refilled every pass; ``products`` the (left, out) blocks of each product,
    which must not overlap; ``shared_rows`` the rows the loop may be shared out by (0: none)."""

    def __init__(self, loop: NativeLoop, steps: int, arrays: dict):
        if not all(isinstance(arrays.get(r), numpy.ndarray) and arrays[r].flags.writeable
                   for r in {b.root for b in loop.written}):
            raise Untranslatable("a read-only array is written")
        self.arrays, self.dtype = arrays, None
        rows, owners, self.numbers, self.spread, self.products = [], [], {}, [], []
        for block in loop.blocks:
            array = arrays.get(block.root)
            if not isinstance(array, numpy.ndarray) or array.dtype.kind != "f" or array.dtype != (self.dtype or array.dtype):
                raise Untranslatable(block.root)
            self.dtype = array.dtype
            self.numbers[block] = len(rows)
            rows.append(_describe(block, array, steps))
            owners.append(loop.root_index[block.root])
        if self.dtype not in loop.runners:
            raise Untranslatable("no float arrays")
        self.entries, self.owners, self.own = rows, owners, len(loop.roots)
        self.slots = list(loop.gemms[self.dtype])
        self.prelude = self._code(loop.tape.prelude)
        self.body = self._code(loop.tape.body)
        self.table = numpy.array(rows, dtype=numpy.int64).reshape(-1, 5)
        self.owner = numpy.array(owners, dtype=numpy.intp)
        self.shared_rows = _shared_rows(self.table, [self.numbers[b] for b in loop.written])
        del self.arrays, self.entries, self.owners

    def _code(self, instructions: list) -> numpy.ndarray:
        """The instructions as the runner reads them."""
        code = []
        for kind, *args in instructions:
            if kind == "zero":
                code += [Code.ZERO, self.numbers[args[0]]]
            elif kind == "copy":
                code += [Code.COPY, self.numbers[args[0]], *self._inputs(args[0], args[1:])]
            elif kind in ELEMENTWISE:
                code += [ELEMENTWISE[kind], *self._inputs(args[2], args[:2]), self.numbers[args[2]]]
            elif kind == "product":
                code += self._product(*args)
            else:
                code += self._chain(*args)
        return numpy.array(code, dtype=numpy.int64)

    def _inputs(self, out: Block, inputs: list) -> list:
        """The numbers of ``inputs`` to an elementwise instruction writing ``out``; a single
        value is spread over a row of the plan's own."""
        _, _, rows, cols, _ = self.entries[self.numbers[out]]
        found = []
        for block in inputs:
            number = self.numbers[block]
            if self.entries[number][3] == SPREAD:
                row = numpy.empty(cols, dtype=self.dtype)
                self.spread.append((row, block.root))
                number = len(self.entries)
                self.entries.append((row.ctypes.data, 0, 1, cols, 0))
                self.owners.append(self.own)
            if self.entries[number][3] != cols or self.entries[number][2] not in (rows, 1):
                raise Untranslatable("elementwise shapes")
            found.append(number)
        return found

    def _product(self, left: Block, weight_name: str, out: Block, accumulate: bool) -> list:
        a, o = self.numbers[left], self.numbers[out]
        rows, inner, cols = self.entries[a][2], self.entries[a][3], self.entries[o][3]
        if SPREAD in (inner, cols) or self.entries[o][2] != rows:
            raise Untranslatable("product operands")
        self.products.append((a, o))
        weight = self.arrays.get(weight_name)
        self.slots.append(weight_name)
        if isinstance(weight, PackedWeight):
            if weight.dtype != self.dtype or (weight.rows, weight.inner, weight.cols) != (rows, inner, cols):
                raise Untranslatable("packed shape")
            if weight.routine != self.slots[0]:
                raise Untranslatable("packed for another routine")
            return [Code.PRODUCT_PACKED, a, o, len(self.slots) - 1, int(accumulate)]
        layout = matrix_layout(weight) if isinstance(weight, numpy.ndarray) and weight.ndim == 2 else None
        if layout is None or weight.dtype != self.dtype or weight.shape != (inner, cols):
            raise Untranslatable("weight")
        return [Code.PRODUCT, a, o, len(self.slots) - 1, int(accumulate), layout[0], layout[1]]

    def _chain(self, name: str, inputs: list, outputs: list) -> list:
        function = self.arrays.get(name)
        kernel = getattr(function, "__self__", None)  # a chain's kernel runs as its bound method
        address = kernel.native_rows(function.__name__, self.dtype) if isinstance(kernel, ChainKernel) else None
        if address is None:
            raise Untranslatable(name)
        first = self.entries[self.numbers[outputs[0]]]
        if any(self.entries[self.numbers[o]][2:4] != first[2:4] for o in outputs) or first[3] == SPREAD:
            raise Untranslatable("chain outputs")
        numbers = self._inputs(outputs[0], inputs) + [self.numbers[o] for o in outputs]
        self.slots.append(address)
        return [Code.CHAIN, len(self.slots) - 1, len(numbers), *numbers, len(inputs)]


def _shared_rows(table, written: list) -> int:
    """The rows every written block has, where every block has them or is one row read by
    all (each row then runs on its own: see :data:`SHARE_ROWS`); 0 where not."""
    rows = {int(table[k, 2]) for k in written}
    if len(rows) != 1 or not set(table[:, 2].tolist()) <= rows | {1}:
        return 0
    return rows.pop()


def _layout_key(value):
    """What of a loop's argument its plan depends on: everything but where it is."""
    if isinstance(value, numpy.ndarray):
        return value.dtype.char, value.shape, value.strides, value.flags.writeable
    if isinstance(value, PackedWeight):
        return type(value), value.dtype.char, value.rows, value.inner, value.cols
    return type(value)


def _base(value) -> int:
    """The address ``value`` starts at (a packed weight's buffer; 0 for anything else)."""
    if isinstance(value, numpy.ndarray):
        return address(value)
    return value.address if isinstance(value, PackedWeight) else 0


def _overlap(one, other, dtype) -> bool:
    """Whether two blocks (rows of the table) share memory at step 0."""
    def span(row):
        return row[0], row[0] + ((row[2] - 1) * row[4] + row[3]) * dtype.itemsize
    (a, b), (c, d) = span(one), span(other)
    return a < d and c < b


def _written(instruction) -> list:
    """The blocks an instruction writes."""
    kind, *args = instruction
    if kind in ("zero", "copy"):
        return [args[0]]
    if kind == "product":
        return [args[2]]
    return args[-1] if kind == "chain" else [args[-1]]


def _blocks(instruction) -> list:
    found = []
    for arg in instruction[1:]:
        if isinstance(arg, Block):
            found.append(arg)
        elif isinstance(arg, list):
            found += arg
    return found


def _describe(block: Block, array, steps: int) -> tuple:
    """A block's ``(offset from the array's first element at step 0 in bytes, bytes per
    step, rows, columns, row step in items)``."""
    item = array.itemsize
    start = 0
    step = 0
    if array.ndim == 0 and block.shift is None and block.start == 0 and block.stop is None:
        return (start, 0, 1, SPREAD, 0)  # one value: spread over a row where it is read
    if block.shift is not None:
        if array.ndim != 3 or block.shift < 0 or steps - 1 + block.shift >= array.shape[0]:
            raise Untranslatable(block.root)
        step = array.strides[0]
        start += block.shift * step
        shape, strides = array.shape[1:], array.strides[1:]
    else:
        shape, strides = array.shape, array.strides
    if len(shape) == 1:
        shape, strides = (1,) + shape, (0,) + strides
    if len(shape) != 2:
        raise Untranslatable(block.root)
    stop = shape[1] if block.stop is None else block.stop
    cols = stop - block.start
    if not 0 <= block.start < stop <= shape[1] or (cols > 1 and strides[1] != item) or strides[0] % item:
        raise Untranslatable(block.root)
    return (start + block.start * strides[1], step, shape[0], cols, strides[0] // item)


def compile_loop(loop: Loop, xp):
    """The native loop of step ``loop`` on namespace ``xp``, or None where there is none
    (no MKL products, no native loops, an instruction the tape does not know)."""
    if not isinstance(xp, Products) or not native.usable(xp):
        return None
    runners = _runners()
    if runners is None:
        return None
    try:
        tape = lower(loop)
    except Untranslatable:
        return None
    return NativeLoop(tape, xp, runners)


def _runners():
    """``{dtype: sg_loop_<type>}`` from the runner library (built once), or None."""
    text = RUNNER + "".join(RUNNER_TYPED.format(T=ctype, **{c.name: c.value for c in Code}) for ctype in native.C_TYPES.values())
    library = native.op_loops(text)
    if library is None:
        return None
    found = {}
    for dtype, ctype in native.C_TYPES.items():
        function = getattr(library, f"sg_loop_{ctype}")
        function.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p,
                             ctypes.c_long, ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p, ctypes.c_long,
                             ctypes.c_long, ctypes.c_void_p]
        function.restype = None
        found[numpy.dtype(dtype)] = function
    return found

