"""Gradient flow through time: how much of the loss's gradient reaches each step.

Backpropagation through time hands every recurrent state ``s`` (``h`` of an RNN, ``h`` and
``c`` of an LSTM, every ``state`` of a user's cell) a gradient ``dL/ds_t`` at each step
``t``. Its size, ``||dL/ds_t||`` (the norm over the batch and the features), shows how much
the loss can still teach the network about step ``t``: in a vanilla RNN it shrinks roughly
geometrically with the distance from the loss (the vanishing gradient), while an LSTM's
additive cell state ``c_t = f * c_{t-1} + i * g`` lets it survive far longer::

    flow = gradient_flow(net, inputs)
    flow.states["rnn_0.h"]        # array of T norms, step 0 first
    flow.params["rnn_0.weight_hh"]
    print(format_report(flow)); plot(flow, "grads.png")

This is what ``seqgraph grads MODEL.sg`` prints and draws. The numbers come from the
reference executor (via :class:`seqgraph.Probe`), which keeps every step's cotangent.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Optional

from .probe import Probe
from .weights import atomic_write

EXPLODE = 1e3  # default threshold above which a gradient norm is flagged as exploding
VANISH = 1e-6  # default threshold below which a gradient norm is flagged as vanishing


@dataclass
class GradientFlow:
    """The gradient norms of one batch.

    ``states``: state key (``lstm_0.c``) -> list of ``||dL/ds_t||`` for t = 0..T-1 of its
    time axis; ``params``: parameter key -> ``(shape, ||dL/dp||)``; ``loss``, ``batch`` and
    ``steps`` (time axis -> steps) describe the run."""

    states: dict
    params: dict
    loss: float
    batch: int
    steps: dict

    def decay(self, key: str) -> float:
        """``||dL/ds_0|| / ||dL/ds_T-1||`` for state ``key``: far below 1 when the gradient
        vanishes on its way back to the first step (inf when the last one is zero)."""
        norms = self.states[key]
        return norms[0] / norms[-1] if norms[-1] > 0 else math.inf


def _squares(backend, array):
    return backend.to_host(array).astype("float64") ** 2


def _norm(backend, array) -> float:
    """The 2-norm of all of ``array``."""
    return math.sqrt(float(_squares(backend, array).sum()))


def _step_norms(backend, stacked) -> list:
    """The 2-norm of each step of ``stacked``, ``(T, B, ...)``."""
    squares = _squares(backend, stacked)
    return [math.sqrt(float(v)) for v in squares.reshape(len(squares), -1).sum(axis=1)]


def gradient_flow(network, inputs: dict, lengths=None) -> GradientFlow:
    """Run one batch forward and backward through ``network``'s unrolled graph and measure
    the gradient of the loss at every recurrent state and step, and at every parameter."""
    network.model.require_loss()
    probe = Probe(network)
    loss = float(network.backend.to_host(probe.forward(inputs, lengths)["loss"]))
    param_grads = probe.backward()
    backend, model = network.backend, network.model
    states = {key: _step_norms(backend, probe.grad(key)) for key in model.checked.states}
    params = {key: (tuple(network.params[key].shape), _norm(backend, param_grads[key]))
              for key in model.checked.params}
    return GradientFlow(states, params, loss, model.batch_of(inputs), probe.steps)


def state_gradient_norms(network, inputs: dict, lengths=None) -> dict:
    """State key -> ``[||dL/ds_0||, ..., ||dL/ds_T-1||]`` for one batch (see :func:`gradient_flow`)."""
    return gradient_flow(network, inputs, lengths).states


def flag(norm: float, explode: float = EXPLODE, vanish: float = VANISH) -> Optional[str]:
    """``"exploding"`` above ``explode``, ``"vanishing"`` below ``vanish``, else None."""
    if not math.isfinite(norm) or norm > explode:
        return "exploding"
    if norm < vanish:
        return "vanishing"
    return None


# --- the report --------------------------------------------------------------------------------

MARKS = {"exploding": " !", "vanishing": " v", None: "  "}


def _cell(norm: float, explode: float, vanish: float) -> str:
    return f"{norm:9.2e}{MARKS[flag(norm, explode, vanish)]}"


def state_table(flow: GradientFlow, explode: float = EXPLODE, vanish: float = VANISH) -> str:
    """One row per step, one column per recurrent state (grouped by layer), each cell
    ``||dL/ds_t||`` marked ``v`` (vanishing) or ``!`` (exploding); then each state's decay
    ``||dL/ds_0|| / ||dL/ds_T-1||``."""
    keys = list(flow.states)
    if not keys:
        return "no recurrent states: nothing flows through time\n"
    width = max(10, *(len(k) for k in keys))

    def row(label, cells) -> str:
        return (f"{label:>10}  " + "  ".join(f"{c:>{width}}" for c in cells)).rstrip()

    lines = [row("step", keys)]
    for step in range(max(len(v) for v in flow.states.values())):
        lines.append(row(step, [_cell(flow.states[k][step], explode, vanish) if step < len(flow.states[k])
                                else "" for k in keys]))
    lines.append(row("first/last", [f"{flow.decay(k):9.2e}  " for k in keys]))
    return "\n".join(lines) + "\n"


def param_table(flow: GradientFlow, explode: float = EXPLODE, vanish: float = VANISH) -> str:
    """One row per parameter: key, shape, ``||dL/dp||`` and a flag."""
    rows = [(key, str(list(shape)), norm) for key, (shape, norm) in flow.params.items()]
    key_width = max([len("parameter")] + [len(r[0]) for r in rows])
    shape_width = max([len("shape")] + [len(r[1]) for r in rows])
    lines = [f"{'parameter':<{key_width}}  {'shape':<{shape_width}}  {'||dL/dp||':>9}"]
    for key, shape, norm in rows:
        mark = flag(norm, explode, vanish)
        lines.append(f"{key:<{key_width}}  {shape:<{shape_width}}  {norm:9.2e}" + (f"  {mark}" if mark else ""))
    return "\n".join(lines) + "\n"


def flagged(flow: GradientFlow, explode: float = EXPLODE, vanish: float = VANISH) -> list:
    """Lines naming every state (with its steps) and parameter whose gradient norm is flagged."""
    found = []
    for key, norms in flow.states.items():
        for kind in ("exploding", "vanishing"):
            steps = [t for t, n in enumerate(norms) if flag(n, explode, vanish) == kind]
            if steps:
                found.append(f"{kind}: {key} at {_ranges(steps)}")
    for key, (_, norm) in flow.params.items():
        kind = flag(norm, explode, vanish)
        if kind:
            found.append(f"{kind}: {key} ({norm:.2e})")
    return found


def _ranges(steps: list) -> str:
    """``[0, 1, 2, 5]`` -> ``steps 0-2, 5``."""
    parts, start = [], steps[0]
    for before, after in zip(steps, steps[1:] + [None]):
        if after != before + 1:
            parts.append(str(start) if start == before else f"{start}-{before}")
            start = after
    return ("step " if len(steps) == 1 else "steps ") + ", ".join(parts)


def format_report(flow: GradientFlow, explode: float = EXPLODE, vanish: float = VANISH) -> str:
    """The text ``seqgraph grads`` prints: the state table, the parameter table and the flags."""
    steps = ", ".join(f"{count} steps" + (f" on '{axis}'" if len(flow.steps) > 1 else "")
                      for axis, count in flow.steps.items()) or "no time axis"
    lines = [f"loss {flow.loss:.6g} on a batch of {flow.batch}, {steps}",
             "",
             "||dL/ds_t||: the gradient of the loss at each recurrent state s and step t",
             state_table(flow, explode, vanish),
             param_table(flow, explode, vanish)]
    marks = flagged(flow, explode, vanish)
    thresholds = f"exploding above {explode:g} (!), vanishing below {vanish:g} (v)"
    lines.append(f"flags ({thresholds}):" + ("" if marks else " none"))
    lines.extend("  " + line for line in marks)
    return "\n".join(lines) + "\n"


def plot(flow: GradientFlow, path, title: str = "") -> None:
    """A PNG of ``||dL/ds_t||`` against ``t`` for every state, on a log scale."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    for key, norms in flow.states.items():
        # a log scale cannot show an exact zero: leave a gap there
        axes.plot(range(len(norms)), [n if n > 0 else math.nan for n in norms], marker=".", label=key)
    axes.set_yscale("log")
    axes.set_xlabel("time step t")
    axes.set_ylabel("||dL/ds_t||")
    axes.set_title(title or "gradient of the loss at each recurrent state")
    axes.grid(alpha=0.3, which="both")
    if flow.states:
        axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    atomic_write(path, lambda file: file.write(buffer.getvalue()))


def data_batch(model, model_path, batch: int, seed: int = 0) -> tuple:
    """``(inputs, lengths)``: the first ``batch`` examples of the data the model's train
    block names (for text, the first window of ``bptt`` characters of ``batch`` streams),
    checked against the model as training checks them."""
    from dataclasses import replace
    from pathlib import Path

    from .train.config import resolve
    from .train.loop import data_roles, load_dataset, model_batches

    config = replace(resolve(model.train, {"seed": str(seed)}), batch=batch)
    dataset = load_dataset(config, model, Path(model_path).parent)
    inputs, lengths, _, _ = next(model_batches(model, data_roles(model, dataset, config), dataset, config))
    return inputs, lengths
