"""What a run shows and leaves behind: progress bars, epoch lines, metrics.csv, the loss plot."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from ..weights import atomic_write

COLUMNS = ("epoch", "train_loss", "valid_loss", "metric", "metric_value", "lr", "seconds", "throughput")


def progress(total: int, description: str, enabled: bool):
    """A progress bar over ``total`` batches (tqdm), silent when not ``enabled`` and when its
    stream is not a terminal (a log file or a pipe would get every redraw; the epoch lines
    still say how the run goes)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=description, disable=None if enabled else True, leave=False, unit="batch",
                dynamic_ncols=True)


def epoch_line(row: dict, epochs: int, unit: str) -> str:
    """``epoch 3/10  train 1.234  valid 1.301  perplexity 3.67  (4.1 s, 12.3k tokens/s)``."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"train {row['train_loss']:.4f}"]
    if row.get("valid_loss") is not None:
        parts.append(f"valid {row['valid_loss']:.4f}")
    if row.get("metric") and row.get("metric_value") is not None:  # none without validation data
        value = row["metric_value"]
        parts.append(f"{row['metric']} {value:.2%}" if row["metric"] == "accuracy" else
                     f"{row['metric']} {value:.4g}")
    rate = row["throughput"]
    rate_text = f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.0f}"
    parts.append(f"({row['seconds']:.1f} s, {rate_text} {unit}/s)")
    return "  ".join(parts)


def write_metrics(path, history: list) -> None:
    """The whole history as ``metrics.csv``, written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in COLUMNS})
    data = buffer.getvalue().encode("utf-8")
    atomic_write(path, lambda file: file.write(data))


def plot_losses(path, history: list, title: str) -> bool:
    """A PNG of training and validation loss per epoch; False when matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        return False
    epochs = [row["epoch"] for row in history]
    figure, axes = pyplot.subplots(figsize=(6, 4))
    axes.plot(epochs, [row["train_loss"] for row in history], marker="o", label="train")
    valid = [row["valid_loss"] for row in history]
    if any(v is not None and not math.isnan(v) for v in valid):
        axes.plot(epochs, valid, marker="o", label="validation")
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    pyplot.close(figure)
    atomic_write(Path(path), lambda file: file.write(buffer.getvalue()))
    return True
