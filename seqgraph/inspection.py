"""Views of a graph for people: one line per node as text, or Graphviz DOT (and svg/png).

Both views work on the folded graph (``model.graph``, where a recurrent read ``h[t-1]`` is a
*delay edge* into a ``prev`` node) and on an unrolled one (``model.unroll(T)``, where each
per-step node has one copy per time step)::

    print(text(model.graph, roles=roles(model)))
    open("g.dot", "w").write(dot(model.unroll(3), roles=roles(model), layer="lstm_0"))

A text line reads::

    lstm_0/mul.2  = mul(lstm_0/sigmoid.2, lstm_0/tanh.1)  [128] per-step  layer lstm_0  rule: switch  (h)

and a delayed read shows where its value comes from: ``prev(lstm_0/mul.2 @ t-1, lstm_0/h_init)``.
In DOT, nodes are coloured by kind (parameter, input, state, op, loss/output), ``add``,
``mul`` and ``max`` nodes carry their gradient rule (``distribute``, ``switch``, ``route``),
delay edges are dashed and labelled ``t-1``, and an unrolled graph groups each time step in
its own box. svg and png come from Graphviz's ``dot`` program.

:func:`with_gradients` joins the reverse-mode graph of the loss to the forward graph; the
views then draw the two side by side (in DOT, a *forward* and a *backward* box), gradient
nodes in their own colours and the gradient handed back to the previous step as ``t+1``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from typing import ClassVar, Optional

import networkx as nx

from . import autodiff
from .errors import SeqgraphError, did_you_mean
from .ir import LEAF_OPS, Attrs, Node, base_of, identifier, node_of, nodes_of, set_node
from .sizes import format_shape

FORMATS = ("text", "dot", "svg", "png")
GATE_RULES = ("distribute", "route", "switch")  # the three "gates" of backprop: add, max, mul
LOSS_OPS = ("cross_entropy", "mse")

# kind -> (fill colour, what the legend calls it)
KIND_STYLE = {
    "param": ("#fde68a", "parameter"),
    "input": ("#bfdbfe", "input"),
    "target": ("#c7d2fe", "target"),
    "lengths": ("#e5e7eb", "sequence lengths"),
    "state": ("#fbcfe8", "recurrent state"),
    "const": ("#f3f4f6", "constant"),
    "op": ("#ffffff", "op"),
    "loss": ("#fca5a5", "loss"),
    "output": ("#bbf7d0", "output"),
    "grad": ("#ede9fe", "gradient: the sum of its contributions"),
    "vjp": ("#ddd6fe", "local gradient rule"),
}
DELAY_COLOUR = "#db2777"
GRADIENT_COLOUR = "#7c3aed"


# --- what a node is --------------------------------------------------------------------------

def roles(model) -> dict:
    """Node id -> ``"target"``, ``"loss"`` or ``"output"`` for the named nodes of ``model``
    (a :class:`seqgraph.Model`); pass it to :func:`text` and :func:`dot`."""
    marks = {node: "target" for node in model.checked.targets.values()}
    for name, node in model.outputs.items():
        marks[node] = "loss" if name == "loss" else "output"
    return marks


def node_kind(data, role: Optional[str] = None) -> str:
    """One of the keys of :data:`KIND_STYLE`: what colour a node (a Node or a GradientNode)
    gets."""
    op = data.op
    if isinstance(data, GradientNode):
        return data.kind
    if role in ("loss", "output", "target"):
        return role
    if op in LOSS_OPS:
        return "loss"
    if op in ("param", "input", "lengths", "const"):
        return op
    if op in ("prev", "state_init"):
        return "state"
    return "op"


def _is_unrolled(graph: nx.DiGraph) -> bool:
    return any(data.step is not None for _, data in nodes_of(graph))


def _is_delay(graph: nx.DiGraph, source, target) -> bool:
    """A value carried to the next step: a delay edge of the folded graph, or in an unrolled
    graph the edge from step t-1 into step t's ``prev`` node."""
    if graph.edges[source, target].get("delay"):
        return True
    data = node_of(graph, target)
    return data.op == "prev" and data.step not in (None, 0) \
        and node_of(graph, source).step is not None


def describe_type(data) -> str:
    """``[128] per-step``, ``seq[float, 32] over time``, ``[512, 32]``, ``scalar``..."""
    op, vtype = data.op, data.type
    if op == "lengths":
        return "int per sequence"
    shape = format_shape(data.shape)
    if vtype.dtype == "int":
        bound = vtype.bound if vtype.bound is not None else "?"
        text = f"seq[int, {bound}] over {vtype.time}" if vtype.is_seq else f"int[{bound}]"
    elif vtype.is_seq:
        dims = ", ".join(str(d) for d in vtype.shape)
        text = f"seq[float, {dims}] over {vtype.time}" if dims else f"seq[float] over {vtype.time}"
    elif not vtype.batched and not vtype.shape:
        text = "scalar"
    else:
        text = shape
    if vtype.timed:
        step = data.step
        text += " per-step" if step is None else f" step {step}"
    return text


# --- choosing and ordering nodes ---------------------------------------------------------------

def layers(graph: nx.DiGraph) -> list:
    """The layer names in a graph, in order of appearance."""
    seen: dict = {}
    for _, data in nodes_of(graph):
        if data.layer is not None:
            seen.setdefault(data.layer, None)
    return list(seen)


def layer_nodes(graph: nx.DiGraph, layer: str) -> set:
    """The nodes of one layer; an unknown layer is a SeqgraphError naming the known ones."""
    chosen = {n for n, data in nodes_of(graph) if data.layer == layer}
    if not chosen:
        known = layers(graph)
        hint = did_you_mean(layer, known) or ("layers: " + ", ".join(known) if known else None)
        raise SeqgraphError(f"no layer '{layer}' in this graph", hint=hint)
    return chosen


def topological_order(graph: nx.DiGraph) -> list:
    """Nodes in an order where every node comes after its inputs, delay edges ignored.

    Ties go to the order the checker made the nodes in; in an unrolled graph to the earlier
    time step first, so each step reads as one block."""
    position = {node: index for index, node in enumerate(graph.nodes)}
    acyclic = nx.DiGraph()
    acyclic.add_nodes_from(graph.nodes)
    acyclic.add_edges_from((u, v) for u, v, d in graph.edges(data=True) if not d.get("delay"))

    def key(node):
        step = node_of(graph, node).step
        return (-1 if step is None else step, position.get(base_of(graph, node), position[node]))

    return list(nx.lexicographical_topological_sort(acyclic, key=key))


# --- the gradient graph beside the forward one ---------------------------------------------------

GRADIENT_LEAVES = tuple(op for op in LEAF_OPS if op != "lengths")  # the leaves a gradient reaches


@dataclass(frozen=True)
class GradientNode:
    """A node of the gradient graph drawn beside the forward one: ``grad`` sums the
    contributions to d loss / d ``of``, ``vjp`` applies the local rule of ``of``'s op.
    It stands where its forward node does (layer, name, type, span); ``args`` are the
    gradient nodes it reads."""

    kind: str  # grad | vjp
    of: str
    forward: Node
    step: Optional[int] = None
    args: tuple = ()
    op: ClassVar = None
    attrs: ClassVar = Attrs()
    init: ClassVar = None
    base: ClassVar = None

    @property
    def layer(self):
        """The forward node's layer."""
        return self.forward.layer

    @property
    def name(self):
        """The forward node's name."""
        return self.forward.name

    @property
    def span(self):
        """The forward node's source span."""
        return self.forward.span

    @property
    def type(self):
        """The forward node's type."""
        return self.forward.type

    @property
    def shape(self) -> tuple:
        """The forward node's feature shape."""
        return self.forward.shape

    @property
    def rule(self) -> str:
        """What the node does with the cotangents it reads."""
        return "sum of contributions" if self.kind == "grad" else self.forward.rule


def _folded_id(node: str) -> str:
    """``grad:lstm_0/add.3@4`` -> ``grad:lstm_0/add.3``."""
    return re.sub(r"@\d+$", "", node)


def with_gradients(model, steps: Optional[int] = None) -> nx.DiGraph:
    """The forward graph of ``model`` and, beside it, the reverse-mode graph of its loss
    (of all its outputs when it has none), as :func:`seqgraph.autodiff.gradient_graph`
    builds it: ``grad:n`` sums the contributions to d loss/d n, ``vjp:n`` applies n's rule.

    Unrolled over ``steps``; or folded when None: the gradient graph is then built on two
    unrolled steps and folded back, and a gradient a ``prev`` node hands to the step before
    is a dashed edge labelled ``t+1`` (where it comes from). Gradient nodes hold a
    :class:`GradientNode`; gradient edges carry ``gradient``."""
    unrolled = model.unroll(steps or 2)
    checked = model.checked
    seeds = [checked.loss] if checked.loss else list(model.outputs.values())
    leaves = [n for n, d in nodes_of(unrolled) if d.op in GRADIENT_LEAVES and d.dtype == "float"]
    backward = autodiff.gradient_graph(unrolled, seeds, leaves)
    fold = (lambda node: node) if steps else _folded_id
    combined = (unrolled if steps else model.graph).copy()
    combined.graph["gradient"] = True
    for gnode, data in nodes_of(backward):
        if data.kind == "grad" and not data.parts:
            continue  # nothing flows back into it (a loss's target)
        forward = node_of(unrolled, data.of)
        set_node(combined, fold(gnode), GradientNode(data.kind, fold(data.of), forward,
                                                     step=forward.step if steps else None))
    for seed in seeds:
        combined.add_edge(seed, f"grad:{seed}", seed=True)
    for source, target in backward.edges():
        before = node_of(unrolled, node_of(backward, source).of).step
        after = node_of(unrolled, node_of(backward, target).of).step
        carry = before is not None and after is not None and after < before
        combined.add_edge(fold(source), fold(target), gradient=True, carry=carry, delay=int(carry and not steps))
    for node, data in list(nodes_of(combined)):
        if isinstance(data, GradientNode):
            set_node(combined, node, replace(data, args=tuple(combined.predecessors(node))))
    return combined


# --- text ----------------------------------------------------------------------------------

def _format_attr(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return "(" + ", ".join(_format_attr(v) for v in value) + ")"
    return str(value)


def _init_text(init: tuple) -> str:
    """``("uniform_fan", 128)`` -> ``uniform_fan(128)``; ``("glorot",)`` -> ``glorot``."""
    name, *args = init
    return f"{name}({', '.join(_format_attr(a) for a in args)})" if args else str(name)


def _call_text(graph: nx.DiGraph, node, data) -> str:
    op = data.kind if isinstance(data, GradientNode) else data.op
    if op in LEAF_OPS and not data.args:
        if op == "state_init":
            return f"state_init({_format_attr(data.attrs.get('value', 0.0))})"
        return op
    parts = []
    for arg in data.args:
        edge = graph.edges[arg, node] if graph.has_edge(arg, node) else {}
        if edge.get("seed"):
            parts.append("1")  # d loss / d loss
            continue
        mark = (" @ t+1" if edge.get("gradient") else " @ t-1") if edge.get("delay") else ""
        parts.append(f"{arg}{mark}")
    for name, value in data.attrs.items():
        parts.append(f"{name}={_format_attr(value)}")
    return f"{op}({', '.join(parts)})"


def text_line(graph: nx.DiGraph, node, width: int = 0, role: Optional[str] = None) -> str:
    """One node as a line of text (see the module docstring)."""
    data = node_of(graph, node)
    fields = [f"{str(node):<{width}}  = {_call_text(graph, node, data)}", describe_type(data)]
    if data.layer:
        fields.append(f"layer {data.layer}")
    op, rule = data.op, data.rule
    if op == "param" and data.init:
        fields.append("init " + _init_text(data.init))
    if rule and not str(rule).startswith("leaf") and op not in ("const", "dropout_mask"):
        fields.append(f"rule: {rule}")
    name = data.name
    if role in ("loss", "output", "target"):
        fields.append(f"[{role} {name}]" if name and name not in (node, role) else f"[{role}]")
    elif name and name != node:
        fields.append(f"({name})")
    return "  ".join(fields)


def _steps_text(steps) -> str:
    """``3``, or ``src=4, tgt=5`` when time axes were unrolled by different counts."""
    if isinstance(steps, dict):
        counts = set(steps.values())
        if len(counts) == 1:
            return str(counts.pop())
        return ", ".join(f"{axis}={count}" for axis, count in steps.items())
    return str(steps)


def _title(graph: nx.DiGraph, shown: int, layer: Optional[str]) -> str:
    name = graph.graph.get("name") or "graph"
    steps = graph.graph.get("steps")
    if steps is None:
        delays = sum(1 for _, _, d in graph.edges(data=True) if d.get("delay") and not d.get("gradient"))
        what = f"folded graph, {delays} delay edge{'s' if delays != 1 else ''}"
    elif steps == {}:
        what = "unrolled (no time axis: the same as folded)"
    else:
        count = _steps_text(steps)
        what = f"unrolled over {count} step{'' if count == '1' else 's'}"
    where = f", layer {layer}" if layer else ""
    if graph.graph.get("gradient"):
        what += ", with its gradient graph"
    return f"# {name}: {what}{where}, {shown} node{'s' if shown != 1 else ''}"


def text(graph: nx.DiGraph, layer: Optional[str] = None, roles: Optional[dict] = None) -> str:
    """The graph as text: a title line, then one line per node in topological order."""
    roles = roles or {}
    chosen = layer_nodes(graph, layer) if layer else set(graph.nodes)
    order = [n for n in topological_order(graph) if n in chosen]
    width = min(max((len(str(n)) for n in order), default=0), 32)
    lines = [_title(graph, len(order), layer)]
    for node in order:
        role = roles.get(base_of(graph, node))
        lines.append(text_line(graph, node, width, role))
    return "\n".join(lines) + "\n"


# --- DOT -----------------------------------------------------------------------------------

def _quote(value: str) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(*lines: str) -> str:
    escaped = [str(line).replace("\\", "\\\\").replace('"', '\\"') for line in lines if line]
    return '"' + "\\n".join(escaped) + '"'


def _node_statement(graph: nx.DiGraph, node, role: Optional[str], boundary: bool = False) -> str:
    data = node_of(graph, node)
    kind = node_kind(data, role)
    fill, _ = KIND_STYLE[kind]
    if kind == "vjp":
        headline = f"vjp of {data.forward.op}"
    elif kind == "grad":
        headline = "d loss"
    else:
        headline = data.op
    name = data.name
    if name and name != node:
        headline += f"  ({name})"
    lines = [headline, str(node), describe_type(data)]
    rule = data.rule
    if rule in GATE_RULES:
        lines.append(f"rule: {rule}")
    elif kind == "grad":
        count = len(data.args)
        lines.append(f"sum of {count} contribution{'s' if count != 1 else ''}")
    attrs = [f"label={_label(*lines)}", f"fillcolor={_quote(fill)}"]
    if rule and not str(rule).startswith("leaf"):
        attrs.append(f"tooltip={_quote('gradient: ' + str(rule))}")
    if kind == "const":
        attrs.append("shape=plaintext")
    elif kind in ("input", "target", "lengths"):
        attrs.append("shape=house")
    elif kind in ("loss", "output"):
        attrs.append("shape=doubleoctagon" if kind == "loss" else "shape=octagon")
    if rule in GATE_RULES:
        attrs.append("penwidth=2")
    if boundary:
        attrs.append('style="rounded,filled,dashed"')
        attrs.append('fontcolor="#6b7280"')
    return f"{_quote(node)} [{', '.join(attrs)}];"


def _edge_statement(graph: nx.DiGraph, source, target) -> str:
    edge = graph.edges[source, target]
    if edge.get("seed"):
        return (f"{_quote(source)} -> {_quote(target)} [style=dotted, color={_quote(GRADIENT_COLOUR)}, "
                f"fontcolor={_quote(GRADIENT_COLOUR)}, label=\"seed 1\", constraint=false];")
    if edge.get("gradient"):
        attrs = [f"color={_quote(GRADIENT_COLOUR)}"]
        if edge.get("carry"):  # handed back to the previous step
            attrs += ["style=dashed", f"fontcolor={_quote(GRADIENT_COLOUR)}", 'label="t+1"']
        if edge.get("delay"):
            attrs.append("constraint=false")
        return f"{_quote(source)} -> {_quote(target)} [{', '.join(attrs)}];"
    if _is_delay(graph, source, target):
        attrs = ["style=dashed", f"color={_quote(DELAY_COLOUR)}", f"fontcolor={_quote(DELAY_COLOUR)}",
                 'label="t-1"']
        if graph.edges[source, target].get("delay"):
            attrs.append("constraint=false")  # a back edge: do not let it bend the layout
        return f"{_quote(source)} -> {_quote(target)} [{', '.join(attrs)}];"
    return f"{_quote(source)} -> {_quote(target)};"


def _legend(kinds: set) -> list:
    rows = []
    for kind, (fill, words) in KIND_STYLE.items():
        if kind in kinds:
            rows.append(f'<TR><TD BGCOLOR="{fill}">  </TD><TD ALIGN="LEFT">{words}</TD></TR>')
    return ["  legend [shape=plaintext, style=solid, label=<<TABLE BORDER=\"0\" CELLBORDER=\"1\" "
            "CELLSPACING=\"0\" CELLPADDING=\"3\">" + "".join(rows) + "</TABLE>>];"]


def dot(graph: nx.DiGraph, layer: Optional[str] = None, roles: Optional[dict] = None) -> str:
    """The graph in Graphviz's DOT language (see the module docstring).

    With ``layer``, only that layer's nodes, and dashed grey the nodes just outside it that
    feed it or read from it."""
    roles = roles or {}
    chosen = layer_nodes(graph, layer) if layer else set(graph.nodes)
    boundary = set()
    if layer:
        for node in chosen:
            boundary.update(n for n in graph.predecessors(node) if n not in chosen)
            boundary.update(n for n in graph.successors(node) if n not in chosen)
    shown = chosen | boundary
    order = [n for n in topological_order(graph) if n in shown]
    unrolled = _is_unrolled(graph)
    title = _title(graph, len(chosen), layer).lstrip("# ")
    lines = [
        f"digraph {_quote(graph.graph.get('name') or 'seqgraph')} {{",
        f"  graph [rankdir=TB, fontname=\"Helvetica\", fontsize=12, labelloc=t, label={_quote(title)}];",
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=9, color="#4b5563"];',
    ]

    def statement(node):
        return _node_statement(graph, node, roles.get(base_of(graph, node)), node in boundary)

    sides: dict = {}  # "forward" / "backward" (None without a gradient graph) -> group -> nodes
    for node in order:
        data = node_of(graph, node)
        side = ("backward" if isinstance(data, GradientNode) else "forward") if graph.graph.get("gradient") else None
        group = data.step if unrolled else (data.layer if not layer else None)
        sides.setdefault(side, {}).setdefault(group, []).append(node)
    for side, groups in sorted(sides.items(), key=lambda item: item[0] == "backward"):
        indent = "  "
        if side:
            lines.append(f'  subgraph "cluster_{side}" {{')
            lines.append(f'    label={_quote(side)}; style="rounded"; color="#6b7280";')
            indent = "    "
        lines.extend(_group_lines(groups, unrolled, statement, indent, f"{side}_" if side else ""))
        if side:
            lines.append("  }")
    for source, target in graph.edges():
        if source in shown and target in shown and (source in chosen or target in chosen):
            lines.append("  " + _edge_statement(graph, source, target))
    lines.extend(_legend({node_kind(node_of(graph, n), roles.get(base_of(graph, n))) for n in shown}))
    lines.append("}")
    return "\n".join(lines) + "\n"


def _group_lines(groups: dict, unrolled: bool, statement, indent: str, prefix: str) -> list:
    """Each time step (unrolled) or layer (folded) in its own box; the rest loose."""
    lines = [indent + statement(node) for node in groups.get(None, [])]
    for group, nodes in groups.items():
        if group is None:
            continue
        name = f"cluster_{prefix}t{group}" if unrolled else f"cluster_{prefix}layer_{identifier(group)}"
        label = f"t = {group}" if unrolled else f"layer {group}"
        lines.append(f"{indent}subgraph {_quote(name)} {{")
        lines.append(f'{indent}  label={_quote(label)}; style="rounded,dashed"; color="#9ca3af";')
        lines.extend(f"{indent}  " + statement(node) for node in nodes)
        lines.append(f"{indent}}}")
    return lines


# --- rendering -------------------------------------------------------------------------------

def render(dot_text: str, fmt: str) -> bytes:
    """``dot_text`` drawn as ``svg`` or ``png`` by Graphviz's ``dot`` program."""
    if fmt not in ("svg", "png"):
        raise SeqgraphError(f"cannot render to '{fmt}'", hint="formats: svg, png")
    program = shutil.which("dot")
    if program is None:
        raise SeqgraphError(
            f"drawing the graph as {fmt} needs Graphviz, whose 'dot' program is not on PATH",
            hint="install Graphviz (apt-get install graphviz, or brew install graphviz on macOS), "
                 "or write DOT with --format dot and render it elsewhere")
    result = subprocess.run([program, f"-T{fmt}"], input=dot_text.encode("utf-8"),
                            capture_output=True, check=False)
    if result.returncode != 0:
        detail = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SeqgraphError(f"Graphviz could not draw the graph: {detail[-1] if detail else 'no reason given'}")
    return result.stdout


def view(graph: nx.DiGraph, fmt: str = "text", layer: Optional[str] = None,
         roles: Optional[dict] = None) -> bytes:
    """The graph in ``fmt`` (one of :data:`FORMATS`), as bytes ready to write out."""
    if fmt == "text":
        return text(graph, layer, roles).encode("utf-8")
    if fmt not in FORMATS:
        raise SeqgraphError(f"unknown format '{fmt}'", hint="formats: " + ", ".join(FORMATS))
    source = dot(graph, layer, roles)
    return source.encode("utf-8") if fmt == "dot" else render(source, fmt)
