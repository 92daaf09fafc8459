"""The ``seqgraph`` command: check a model, look at its graph, train it, sample from it.

::

    seqgraph check MODEL.sg [--crosscheck]   parse, check, gradient check, parameters; NumPy vs CuPy
    seqgraph graph MODEL.sg [--unroll T] [--grad] [--layer NAME] [--format text|dot|svg|png] [-o FILE]
    seqgraph graph --program MODEL.sg        each recurrent core's step program
    seqgraph run MODEL.sg [--data PATH] [--epochs N] [--backend numpy|cupy] [--seed S] [--out DIR] [--init WEIGHTS]
    seqgraph sample RUN_DIR_OR_CHECKPOINT [--length N] [--prime TEXT] [--temperature X]
    seqgraph generate RUN [--input IDS_TEXT_OR_NPZ]... [--beam K] [--greedy] [--temperature X] [--seed S]
    seqgraph grads MODEL.sg [--batch B] [--steps T] [--seed S] [--size NAME=VALUE] [--out PNG]
    seqgraph bench MODEL.sg [--batch B] [--steps T] [--size NAME=VALUE] [--dtype D] [--repeat N]
    seqgraph export RUN_OR_MODEL [--format onnx|safetensors] [-o FILE] [--weights RUN_OR_FILE]

A user's mistake (in the model, the data or the command) is a :class:`SeqgraphError`: it is
printed to stderr with its place and a caret, and the exit status is 1. Success is 0.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import Optional

from . import grads, inspection, resources
from .backends import BACKENDS, DEFAULT_BACKEND
from .compiler import Scan, compile_program
from .errors import SeqgraphError
from .ir import node_of
from .program import Model, load
from .weights import set_params


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("seqgraph")
    except PackageNotFoundError:  # a source checkout that was never installed: read pyproject
        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text("utf-8"), re.M) \
            if pyproject.exists() else None
        return found.group(1) if found else "unknown"


# --- seqgraph check ----------------------------------------------------------------------------

def _gradient_check_report(model: Model) -> Optional[str]:
    """The tiny float64 gradient check under the parameter table; a failure is a user-visible
    error naming the first node and time step whose gradient disagrees."""
    from .gradcheck import quick_report

    ok, text = quick_report(model)
    if not ok:
        raise SeqgraphError(text, hint="the failing node's op has a gradient rule that does not "
                                       "match its forward; see docs/language.md")
    return text


def _type_text(model: Model, node) -> str:
    vtype = node_of(model.graph, node).type
    text = str(vtype)
    if vtype.is_seq and vtype.time != "time":
        text += f"  (time axis '{vtype.time}')"
    fed = [f for f in model.checked.feedback.values() if f.input == node]
    if fed:
        source = node_of(model.graph, fed[0].source).name or fed[0].source
        text += f"  (fed back from {source} when generating)"
    return text


def _check_report(model: Model) -> str:
    """What `seqgraph check` prints for one model."""
    sizes = ", ".join(f"{name} = {value}" for name, value in model.sizes.items())
    lines = [f"model {model.name}" + (f"({sizes})" if sizes else "")]
    sections = [("inputs", model.checked.inputs), ("targets", model.checked.targets),
                ("outputs", model.outputs)]
    for title, named in sections:
        lines.append(f"  {title}:" + ("" if named else " none"))
        width = max((len(name) for name in named), default=0)
        for name, node in named.items():
            lines.append(f"    {name:<{width}}  {_type_text(model, node)}")
    lines.append("  parameters:")
    rows = [(key, str(list(shape)), math.prod(shape)) for key, (shape, _) in model.params.items()]
    total = sum(count for _, _, count in rows)
    key_width = max([len("key"), len("total")] + [len(key) for key, _, _ in rows])
    shape_width = max([len("shape")] + [len(shape) for _, shape, _ in rows])
    count_width = max([len("count"), len(f"{total:,}")])
    lines.append(f"    {'key':<{key_width}}  {'shape':<{shape_width}}  {'count':>{count_width}}")
    for key, shape, count in rows:
        lines.append(f"    {key:<{key_width}}  {shape:<{shape_width}}  {count:>{count_width},}")
    lines.append(f"    {'total':<{key_width}}  {'':<{shape_width}}  {total:>{count_width},}")
    lines.append(f"  {total:,} parameters in {len(rows)} tensor{'s' if len(rows) != 1 else ''}")
    report = _gradient_check_report(model)
    if report:
        lines.append(report.rstrip("\n"))
    return "\n".join(lines)


def _cell_report(cell) -> str:
    """One line per cell of a file: its inputs, outputs, parameters and states."""
    def names(kind):
        return [d.name for d in cell.body if getattr(d, "kind", None) == kind]
    inputs = ", ".join(d.name for d in cell.inputs)
    outputs = ", ".join(d.name for d in cell.outputs)
    return (f"  cell {cell.name}({inputs}) -> {outputs}: parameters {', '.join(names('param')) or 'none'}; "
            f"states {', '.join(names('state')) or 'none'}")


def cmd_check(args) -> int:
    program = load(args.model_file)
    models = [program.model(args.model)] if args.model else list(program.models.values())
    if not models and not program.ast.cells:
        raise SeqgraphError(f"{args.model_file} defines no model",
                            hint="write one: model Name(sizes) { input ... loss = ... }")
    gpu = _crosscheck_backend() if args.crosscheck else None
    print(f"{args.model_file}: ok")
    for cell in program.ast.cells:
        print(_cell_report(cell))
    agreed = True
    for model in models:
        print()
        print(_check_report(model))
        if gpu is not None:
            from .crosscheck import crosscheck
            result = crosscheck(model, second=gpu)
            print(result)
            agreed = agreed and result.difference is None
    return 0 if agreed else 1


def _crosscheck_backend():
    """The GPU backend (made before anything is printed, so a missing GPU is one error)."""
    from .backends import GPU_BACKEND, get_backend
    return get_backend(GPU_BACKEND)


# --- seqgraph graph ----------------------------------------------------------------------------

def _output_format(args) -> str:
    if args.format:
        return args.format
    suffix = Path(args.output).suffix.lstrip(".").lower() if args.output else ""
    return suffix if suffix in inspection.FORMATS and suffix != "text" else "text"


def step_programs(model: Model) -> str:
    """What ``seqgraph graph --program`` prints: the step program of each recurrent core of
    ``model`` (its loops with in-place ufunc calls, as NumPy runs them with no fused chain)."""
    scans = [item for item in compile_program(model.graph, model.checked).schedule if isinstance(item, Scan)]
    if not scans:
        return f"# {model.name}: no recurrent core, so no step program (every op runs once over all steps)\n"
    parts = [f"# {model.name}: scan {k} over time axis {scan.time}, {len(scan.code.order)} nodes\n"
             f"{scan.code.program()}\n" for k, scan in enumerate(scans)]
    return "\n".join(parts)


def _shown_graph(model: Model, args):
    """The graph ``seqgraph graph`` shows: folded, unrolled, or with its gradients."""
    if args.grad:
        return inspection.with_gradients(model, args.unroll)
    return model.unroll(args.unroll) if args.unroll else model.graph


def cmd_graph(args) -> int:
    program = load(args.model_file)
    model = program.model(args.model)
    if args.unroll is not None and args.unroll < 1:
        raise SeqgraphError(f"--unroll needs a positive number of steps, got {args.unroll}")
    if args.program:
        data = step_programs(model).encode()
    else:
        data = inspection.view(_shown_graph(model, args), _output_format(args), layer=args.layer,
                               roles=inspection.roles(model))
    if args.output:
        try:
            Path(args.output).write_bytes(data)
        except OSError as error:
            raise SeqgraphError(f"cannot write {args.output}: {error.strerror}") from None
    else:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    return 0


# --- seqgraph grads ----------------------------------------------------------------------------

def _positive(flag: str, value) -> None:
    if value is None or value <= 0:
        raise SeqgraphError(f"{flag} needs a positive number, got {value}")


def cmd_grads(args) -> int:
    """Backpropagate one random batch through time; print and plot the gradient norms."""
    from .gradcheck import random_inputs
    from .runtime import compile_model
    from .train.checkpoint import read_params

    for flag, value in (("--batch", args.batch), ("--steps", args.steps),
                        ("--threshold-explode", args.threshold_explode),
                        ("--threshold-vanish", args.threshold_vanish)):
        _positive(flag, value)
    model = load(args.model_file).model(args.model)
    sizes = parse_sizes(args.size)
    params = None
    if args.weights:
        params, sizes = read_params(args.weights)
    network = compile_model(model, dtype="float64", seed=args.seed, **sizes)
    if params is not None:
        set_params(network, params, args.weights)
    use_data = args.inputs == "data" or (args.inputs is None and model.train is not None)
    if use_data:
        inputs, lengths = grads.data_batch(network.model, args.model_file, args.batch, args.seed)
    else:
        inputs, lengths = random_inputs(network.model, batch=args.batch, steps=args.steps, seed=args.seed)
    flow = grads.gradient_flow(network, inputs, lengths)
    weights = f"weights of {args.weights}" if args.weights else f"initial weights (seed {args.seed})"
    batch = "a batch of its training data" if use_data else f"random inputs (seed {args.seed})"
    print(f"{args.model_file}: model {network.model.name}, {batch}, {weights}, float64")
    print(grads.format_report(flow, args.threshold_explode, args.threshold_vanish), end="")
    if flow.states:
        out = Path(args.out or f"{Path(args.model_file).stem}_grads.png")
        try:
            grads.plot(flow, out, title=f"{network.model.name}: gradient of the loss at each step")
        except OSError as error:
            raise SeqgraphError(f"cannot write {out}: {error.strerror}") from None
        print(f"plot: {out}")
    return 0


# --- seqgraph run / sample --------------------------------------------------------------------

def parse_sizes(items) -> dict:
    """``["hidden=256", "embed = 8"]`` from ``--size`` flags -> ``{"hidden": 256, "embed": 8}``."""
    sizes = {}
    for item in items or []:
        name, _, value = item.partition("=")
        name, value = name.strip(), value.strip()
        # ASCII digits only: str.isdigit() also passes '²', which int() refuses.
        if not name.isidentifier() or not re.fullmatch(r"-?[0-9]{1,30}", value):
            raise SeqgraphError(f"--size takes NAME=INTEGER, got '{item}'", hint="e.g. --size hidden=256")
        sizes[name] = int(value)
    return sizes


def cmd_run(args) -> int:
    """Train the model as its train block says (with the command line's overrides)."""
    from .train.loop import Interrupted
    from .train.run import run

    try:
        run(args.model_file, model=args.model, data=args.data, epochs=args.epochs, batch=args.batch,
            lr=args.lr, backend=args.backend or DEFAULT_BACKEND, dtype=args.dtype, seed=args.seed, out=args.out,
            resume=args.resume, settings=args.set, sizes=parse_sizes(args.size),
            progress=not args.quiet, init=args.init)
    except Interrupted:
        return 130
    return 0


def cmd_sample(args) -> int:
    """Print text generated by the language model of a run folder or checkpoint."""
    from .train.run import sample

    print(sample(args.run, length=args.length, prime=args.prime, temperature=args.temperature,
                 seed=args.seed))
    return 0


def cmd_generate(args) -> int:
    """Decode with the fed-back decoder input of a trained run (see docs/language.md)."""
    from .train.run import generate

    sampled = not args.greedy and (args.temperature is not None or args.top_k or args.top_p < 1)
    print(generate(args.run, args.input or (), output=args.output, show=args.show, beam=args.beam,
                   sample=sampled, temperature=args.temperature or 1.0, top_k=args.top_k,
                   top_p=args.top_p, seed=args.seed, max_length=args.max_length,
                   length_penalty=args.length_penalty, count=args.count))
    return 0


# --- seqgraph bench ---------------------------------------------------------------------------

def cmd_bench(args) -> int:
    """Time compiling, a forward pass and a training step of one model at one shape."""
    from .bench import format_result, measure

    for flag, value in (("--batch", args.batch), ("--steps", args.steps), ("--repeat", args.repeat)):
        _positive(flag, value)
    model = load(args.model_file).model(args.model)
    sizes = parse_sizes(args.size)
    if sizes:
        model = model.with_sizes(**sizes)
    result = measure(model, batch=args.batch, steps=args.steps, dtype=args.dtype, repeat=args.repeat,
                     backend=args.backend, seed=args.seed)
    print(f"{args.model_file}: ", end="")
    print(format_result(result), end="")
    return 0


EXPORT_FORMATS = ("onnx", "safetensors")


def cmd_export(args) -> int:
    """Write a trained (or freshly initialised) model as ONNX, or its weights as safetensors."""
    from .train.run import network_from
    from .weights import save_params

    network = network_from(args.location, model=args.model, weights=args.weights,
                           sizes=parse_sizes(args.size), dtype=args.dtype, seed=args.seed)
    stem = Path(args.location).stem if str(args.location).endswith(".sg") else network.model.name
    out = Path(args.output or f"{stem}.{args.format}")
    if args.format == "safetensors":
        save_params(network, out)
        print(f"wrote {out}: {len(network.params)} parameters of model {network.model.name}")
        return 0
    proto = network.export_onnx(out, recurrent_ops=not args.scan)
    inputs = ", ".join(i.name for i in proto.graph.input)
    outputs = ", ".join(o.name for o in proto.graph.output)
    print(f"wrote {out}: model {network.model.name}, {args.dtype}, inputs {inputs}; outputs {outputs}")
    return 0


# --- the parser ----------------------------------------------------------------------------------

def _model_command(commands, name: str, help: str, handler, sizes: bool = True):
    """A subcommand that reads one model of a file: MODEL.sg, --model and (unless told
    otherwise) --size NAME=VALUE."""
    command = commands.add_parser(name, help=help)
    command.add_argument("model_file", metavar="MODEL.sg")
    command.add_argument("--model", metavar="NAME", help="which model, when the file holds several")
    if sizes:
        command.add_argument("--size", action="append", metavar="NAME=VALUE",
                             help="override a model size: --size hidden=256")
    command.set_defaults(handler=handler)
    return command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``seqgraph`` command."""
    parser = argparse.ArgumentParser(
        prog="seqgraph",
        description="Sequence models written as equations, compiled to a graph, run on NumPy or CuPy.")
    parser.add_argument("--version", action="version", version=f"seqgraph {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    run = _model_command(commands, "run", "train a model as its train block says, then sample", cmd_run)
    run.add_argument("--data", metavar="PATH", help="a text file or .npz instead of the train block's data")
    run.add_argument("--epochs", type=int, metavar="N")
    run.add_argument("--batch", type=int, metavar="B", help="examples (or text windows) per step")
    run.add_argument("--lr", type=float, metavar="X", help="the optimiser's learning rate")
    run.add_argument("--backend", choices=BACKENDS, default=None)
    run.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    run.add_argument("--seed", type=int, metavar="S")
    run.add_argument("--out", metavar="DIR", help="where to write checkpoints and logs "
                                                   "(default runs/MODEL_FILE_STEM)")
    run.add_argument("--resume", nargs="?", const="", metavar="DIR_OR_CHECKPOINT",
                     help="continue a run (default: the last checkpoint in --out)")
    run.add_argument("--init", metavar="RUN_OR_FILE",
                     help="start from these weights: a run folder or checkpoint (its parameters "
                          "only), or saved parameters (.npz or .safetensors)")
    run.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help='override a train setting, written as in the train block: --set "clip = 1.0"')
    run.add_argument("--quiet", action="store_true", help="no progress bar")

    check = _model_command(commands, "check", "parse and check a model; print its inputs, outputs "
                                               "and parameters", cmd_check, sizes=False)
    check.add_argument("--crosscheck", action="store_true",
                       help="run on NumPy and on CuPy and name the first node and time step that differ")

    graph = _model_command(commands, "graph", "show the folded, unrolled or gradient graph", cmd_graph,
                           sizes=False)
    graph.add_argument("--unroll", type=int, metavar="T", help="unroll over T time steps")
    graph.add_argument("--grad", action="store_true",
                       help="draw the backward (gradient) graph beside the forward one")
    graph.add_argument("--program", action="store_true",
                       help="print each recurrent core's compiled step program (forward and backward loops)")
    graph.add_argument("--layer", metavar="NAME", help="only this layer (lstm_0, dense_1, a name=)")
    graph.add_argument("--format", choices=inspection.FORMATS, default=None,
                       help="text (default), dot, or svg/png drawn by Graphviz")
    graph.add_argument("-o", "--output", metavar="FILE",
                       help="write here instead of stdout (its suffix picks the format)")

    flow = _model_command(commands, "grads", "gradient norms through time: ||dL/dh_t|| per state and "
                                             "step, per parameter, as a table and a plot", cmd_grads)
    flow.add_argument("--batch", type=int, metavar="B", default=8, help="examples in the batch (8)")
    flow.add_argument("--steps", type=int, metavar="T", default=50,
                      help="time steps of random inputs (50)")
    flow.add_argument("--inputs", choices=("data", "random"), default=None,
                      help="a batch of the train block's data (the default when there is one) "
                           "or random inputs")
    flow.add_argument("--weights", metavar="RUN_OR_FILE",
                      help="trained weights: a run folder, a checkpoint, or saved parameters "
                           "(default: freshly initialised)")
    flow.add_argument("--seed", type=int, metavar="S", default=0, help="seeds the weights and inputs (0)")
    flow.add_argument("--out", metavar="PNG", help="where to draw the plot (MODEL_grads.png)")
    flow.add_argument("--threshold-explode", type=float, metavar="X", default=grads.EXPLODE,
                      help="flag gradient norms above X as exploding (%(default)g)")
    flow.add_argument("--threshold-vanish", type=float, metavar="Y", default=grads.VANISH,
                      help="flag gradient norms below Y as vanishing (%(default)g)")

    bench = _model_command(commands, "bench", "time compiling, a forward pass and a training step; "
                                              "GFLOP/s and peak memory", cmd_bench)
    bench.add_argument("--batch", type=int, metavar="B", default=32, help="examples in the batch (32)")
    bench.add_argument("--steps", type=int, metavar="T", default=64, help="time steps (64)")
    bench.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    bench.add_argument("--repeat", type=int, metavar="N", default=20, help="timed runs after warm-up (20)")
    bench.add_argument("--backend", choices=BACKENDS, default=DEFAULT_BACKEND)
    bench.add_argument("--seed", type=int, metavar="S", default=0)

    export = commands.add_parser("export", help="write a model as ONNX (its forward graph) or its "
                                                "weights as safetensors")
    export.add_argument("location", metavar="RUN_OR_MODEL",
                        help="a run folder or checkpoint, or a model file (MODEL.sg)")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")
    export.add_argument("-o", "--output", metavar="FILE", help="where to write (NAME.onnx)")
    export.add_argument("--model", metavar="NAME", help="which model, when the file holds several")
    export.add_argument("--weights", metavar="RUN_OR_FILE",
                        help="with a model file: trained weights (default: freshly initialised)")
    export.add_argument("--size", action="append", metavar="NAME=VALUE",
                        help="with a model file: override a model size")
    export.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    export.add_argument("--seed", type=int, metavar="S", default=0, help="seeds fresh weights (0)")
    export.add_argument("--scan", action="store_true",
                        help="every recurrence as an ONNX Scan, none as LSTM/GRU/RNN (ONNX Runtime "
                             "runs those in float32 only)")
    export.set_defaults(handler=cmd_export)

    sample = commands.add_parser("sample", help="generate from a trained model")
    sample.add_argument("run", metavar="RUN_DIR_OR_CHECKPOINT")
    sample.add_argument("--length", type=int, metavar="N", default=200)
    sample.add_argument("--prime", metavar="TEXT", default="")
    sample.add_argument("--temperature", type=float, metavar="X", default=0.8,
                        help="below 1 sharpens the distribution, above 1 flattens it")
    sample.add_argument("--seed", type=int, metavar="S", default=0)
    sample.set_defaults(handler=cmd_sample)

    generate = commands.add_parser("generate", help="decode with a model's fed-back input: held-out "
                                                    "examples, given ids or text, or an .npz file")
    generate.add_argument("run", metavar="RUN")
    generate.add_argument("--input", action="append", metavar="IDS_TEXT_OR_NPZ",
                          help='one example ("5 3 9", or text for a text model), or an .npz of inputs; '
                               "default: the run's held-out examples, scored")
    generate.add_argument("--beam", type=int, metavar="K", default=1, help="beam search of width K")
    generate.add_argument("--greedy", action="store_true", help="the most likely token at each step "
                                                                "(the default)")
    generate.add_argument("--temperature", type=float, metavar="X", help="sample, at this temperature")
    generate.add_argument("--top-k", type=int, metavar="K", default=0, help="sample from the K most likely")
    generate.add_argument("--top-p", type=float, metavar="P", default=1.0,
                          help="sample from the most likely tokens that reach probability P")
    generate.add_argument("--seed", type=int, metavar="S", default=0)
    generate.add_argument("--max-length", type=int, metavar="N", help="at most N tokens (default: "
                                                                       "the model's max_length)")
    generate.add_argument("--length-penalty", type=float, metavar="A", default=1.0,
                          help="beams are ranked by log-probability / length**A (1.0)")
    generate.add_argument("--count", type=int, metavar="N", default=1,
                          help="sequences to make when the model reads nothing else")
    generate.add_argument("--show", type=int, metavar="N", default=5, help="held-out pairs to print (5)")
    generate.add_argument("--output", metavar="FILE.npz", help="save the generated ids (tokens, lengths)")
    generate.set_defaults(handler=cmd_generate)
    return parser


def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    resources.keep_freed_memory()
    try:
        return args.handler(args)
    except SeqgraphError as error:
        sys.stdout.flush()
        print(error.render(), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # seqgraph graph ... | head
        return 0


if __name__ == "__main__":
    sys.exit(main())
