"""Regenerate the generated parts of docs/language.md from the code.

    python docs/gen_reference.py           # rewrite docs/language.md in place
    python docs/gen_reference.py --check   # exit 1 if docs/language.md is out of date

Four regions of the page are generated, each between ``<!-- begin generated: NAME -->`` and
``<!-- end generated: NAME -->``: ``functions`` (every built-in of
``seqgraph.library.FUNCTIONS``: its usage, docstring, and its example from
``seqgraph.library.EXAMPLES`` checked here, with the shapes, parameters and primitive ops it
gives), ``ops`` (every primitive op of the registry with its gradient rule), ``prelude`` (every cell of
``seqgraph/prelude/*.sg`` with the equations in its comment), and ``train`` (the settings a
train block takes, from ``seqgraph.train.config``). Everything else on the page is written
by hand.
"""

from __future__ import annotations

import re
import sys
from dataclasses import fields
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import seqgraph  # noqa: E402
from seqgraph.ir import node_of, nodes_of  # noqa: E402
from seqgraph.library import EXAMPLES, FUNCTIONS, example_source  # noqa: E402
from seqgraph.ops import REGISTRY  # noqa: E402

PAGE = ROOT / "docs" / "language.md"

GROUPS = [
    ("Elementwise", ["sigmoid", "tanh", "relu", "exp", "log", "max"]),
    ("Elementwise math", ["sqrt", "abs", "pow", "clamp", "min", "where"]),
    ("Activations", ["softplus", "gelu", "leaky_relu", "hardtanh"]),
    ("Normalising", ["softmax", "log_softmax", "layer_norm", "batch_norm"]),
    ("Shapes", ["concat", "split", "slice", "sum", "mean", "flatten", "reshape", "transpose"]),
    ("Layers with parameters", ["dense", "embedding", "conv1d", "conv2d"]),
    ("Pooling and dropout", ["maxpool2d", "avgpool2d", "maxpool_time", "avgpool_time", "dropout"]),
    ("Losses", ["cross_entropy", "mse"]),
    ("Losses per element", ["huber", "l1", "binary_cross_entropy", "binary_cross_entropy_with_logits", "kl_div"]),
    ("Sequences", ["last", "first", "max_over_time", "mean_over_time", "reverse", "attention"]),
]


def _doc(text: str) -> str:
    """A docstring as Markdown: paragraphs joined, RST double backquotes made single."""
    paragraphs = [" ".join(line.strip() for line in block.splitlines())
                  for block in re.split(r"\n\s*\n", text.strip())]
    return "\n\n".join(p.replace("``", "`") for p in paragraphs if p)


def functions_section() -> str:
    lines = []
    listed = set()
    groups = list(GROUPS)
    rest = [name for name in FUNCTIONS if all(name not in names for _, names in GROUPS)]
    if rest:
        groups.append(("Other", rest))
    for title, names in groups:
        names = [name for name in names if name in FUNCTIONS]
        if not names:
            continue
        lines += [f"### {title}", ""]
        for name in names:
            function = FUNCTIONS[name]
            listed.add(name)
            tag = "  *(layer: owns parameters)*" if function.layer else ""
            lines += [f"#### `{function.usage()}`{tag}", "", _doc(function.doc) or "(undocumented)", ""]
            if name in EXAMPLES:
                lines += example_lines(name)
    return "\n".join(lines).rstrip() + "\n"


def example_lines(name: str) -> list:
    """The built-in's example, checked: the code, then its shapes, parameters and ops."""
    declarations, body = EXAMPLES[name]
    model = seqgraph.parse(example_source(name), f"{name} example").model()
    graph = model.graph
    inputs = ", ".join(f"`{n}` {node_of(graph, node).type}" for n, node in model.checked.inputs.items())
    result = node_of(graph, model.outputs["out"]).type
    lines = ["```", *(f"input {d}" for d in declarations.splitlines()), *body.splitlines(), "```", "",
             f"- shapes: {inputs} → `out` {result}"]
    if model.params:
        params = ", ".join(f"`{key}` {list(shape)}" for key, (shape, _) in model.params.items())
        lines.append(f"- parameters: {params}")
    ops = []
    for _, data in nodes_of(graph):
        op = REGISTRY.get(data.op)
        if op is not None and data.op not in ("const", "dropout_mask") and data.op not in ops:
            ops.append(data.op)
    lines += [f"- ops (gradient rule): {', '.join(f'`{op}` ({REGISTRY[op].rule})' for op in ops)}", ""]
    return lines


def ops_section() -> str:
    """One row per primitive op of the registry: what it computes and its gradient rule."""
    lines = ["| op | inputs | computes | gradient rule |", "| --- | --- | --- | --- |"]
    for name, op in REGISTRY.items():
        computes = _doc(op.doc).replace("\n\n", " ").replace("|", "\\|")
        lines.append(f"| `{name}` | {op.arity if op.arity is not None else 'any'} | {computes} | {op.rule.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"


def prelude_section() -> str:
    folder = resources.files("seqgraph").joinpath("prelude")
    lines = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sg"):
            continue
        text = entry.read_text("utf-8").strip()
        cells = re.findall(r"^cell\s+(\w+)", text, re.M)
        lines += [f"### `prelude/{entry.name}`: {', '.join(f'`{c}`' for c in cells)}", "",
                  "```", text, "```", ""]
    return "\n".join(lines).rstrip() + "\n"


def _rst_table(doc: str) -> dict:
    """setting -> meaning, from the simple RST table in seqgraph.train.config's docstring."""
    rows: dict = {}
    lines = (doc or "").splitlines()
    rules = [i for i, line in enumerate(lines) if re.fullmatch(r"=+( +=+)+", line.strip())]
    if len(rules) < 3:
        return rows
    starts = [m.start() for m in re.finditer(r"=+", lines[rules[0]])]
    current = None
    for line in lines[rules[1] + 1:rules[2]]:
        cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
        if cells[0]:
            current = cells[0].strip("`")
            rows[current] = [cells[1], cells[2]]
        elif current is not None:
            rows[current][0] = (rows[current][0] + " " + cells[1]).strip()
            rows[current][1] = (rows[current][1] + " " + cells[2]).strip()
    return rows


def train_section() -> str:
    from seqgraph.train import config

    table = _rst_table(config.__doc__)
    defaults = config.TrainConfig()
    lines = ["| setting | default | example | meaning |", "| --- | --- | --- | --- |"]
    for item in fields(config.TrainConfig):
        if item.name == "spans":
            continue
        value = getattr(defaults, item.name)
        if isinstance(value, config.Call):
            args = [repr(a) for a in value.args] + [f"{k} = {v!r}" for k, v in value.kwargs.items()]
            value = f"{value.name}({', '.join(args)})" if args else value.name
        elif value is None:
            value = "none"
        else:
            value = repr(value) if isinstance(value, str) else value
        example, meaning = table.get(item.name, ["", ""])
        example = example.replace("``", "`")
        meaning = meaning.replace("``", "`")
        lines.append(f"| `{item.name}` | `{value}` | {example} | {meaning} |")
    return "\n".join(lines) + "\n"


SECTIONS = {"functions": functions_section, "ops": ops_section, "prelude": prelude_section,
            "train": train_section}


def render(page: str) -> str:
    """``page`` with every generated region rewritten."""
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- begin generated: {name} -->\n).*?(<!-- end generated: {name} -->)",
                             re.S)
        if not pattern.search(page):
            raise SystemExit(f"{PAGE}: no region '{name}'")
        page = pattern.sub(lambda m: m[1] + "\n" + make() + "\n" + m[2], page)
    return page


def main(argv) -> int:
    page = PAGE.read_text("utf-8")
    fresh = render(page)
    if "--check" in argv:
        if fresh != page:
            print(f"{PAGE} is out of date: run python docs/gen_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(fresh, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
