"""seqgraph: sequence models written as equations, compiled to a graph, run on NumPy or CuPy.

The public API::

    prog = seqgraph.load("models/char_lstm.sg")     # or seqgraph.parse(text)
    model = prog.model()                            # or prog.models["CharLSTM"]
    net = seqgraph.compile(model, backend="numpy", dtype="float64", seed=0)
    out = net.forward({"x": x, "y": y})
    grads = net.backward()
    probe = seqgraph.Probe(net)                     # every value and gradient, by name and step
    out = net.predict({"x": x})                     # outputs that need no target
    run = seqgraph.load_run("runs/char_lstm")       # a trained run: run.net, run.config
"""

from .backends import DEFAULT_BACKEND
from .errors import SeqgraphError
from .probe import NodeInfo, Probe
from .program import Model, Program, load, parse

__all__ = ["SeqgraphError", "Model", "Program", "load", "parse", "compile", "load_run", "Probe", "NodeInfo"]


def compile(model, backend: str = DEFAULT_BACKEND, dtype: str = "float32", seed: int = 0, **sizes):
    """Compile ``model`` into a runnable network (see :class:`seqgraph.runtime.Network`)."""
    from .runtime import compile_model
    return compile_model(model, backend=backend, dtype=dtype, seed=seed, **sizes)


def load_run(location, backend: str = DEFAULT_BACKEND, dtype=None):
    """A trained run (folder or checkpoint) with its weights and settings: see
    :func:`seqgraph.train.run.load_run`."""
    from .train.run import load_run as load_trained
    return load_trained(location, backend=backend, dtype=dtype)
