"""Pictures of a run: learning curves and confusion matrices (PNG, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nlp_lstm.files import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path, dpi: int) -> None:
    """Write a figure as PNG atomically (a half-written plot never replaces a good one)."""
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=dpi))


def plot_curves(history: Sequence[dict], path: str | Path, monitor: str, mode: str = "max") -> None:
    """Train loss, the monitored dev metric (its best value marked; ``mode`` says whether
    higher or lower is better) and the learning rate against the epoch."""
    if not history:
        return
    plt = _pyplot()
    epochs = [row["epoch"] for row in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(epochs, [row["train_loss"] for row in history], marker="o", ms=3)
    axes[0].set(title="train loss", xlabel="epoch")
    key = f"dev_{monitor}"
    values = [row.get(key) for row in history]
    axes[1].plot(epochs, values, marker="o", ms=3, color="tab:green")
    sign = 1.0 if mode == "max" else -1.0
    best = max(
        range(len(values)),
        key=lambda i: sign * values[i] if values[i] is not None else float("-inf"),
    )
    axes[1].annotate(
        f"{values[best]:.2f}",
        (epochs[best], values[best]),
        textcoords="offset points",
        xytext=(0, 6),
    )
    axes[1].set(title=f"dev {monitor}", xlabel="epoch")
    axes[2].plot(epochs, [row["lr"] for row in history], marker="o", ms=3, color="tab:orange")
    axes[2].set(title="learning rate", xlabel="epoch", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path, 100)
    plt.close(fig)


def plot_confusion(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str = ""
) -> None:
    """A confusion matrix (rows: gold, columns: predicted) with counts in the cells."""
    plt = _pyplot()
    size = max(3.5, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="gold", title=title)
    top = max((max(row) for row in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                color="white" if count > top / 2 else "black",
            )
    fig.tight_layout()
    _save(fig, path, 100)
    plt.close(fig)


def plot_forecasts(panels: Sequence[dict], path: str | Path, cols: int = 3) -> None:
    """Forecast panels: each dict has ``title``, ``history`` (the look-back window),
    ``truth`` and ``forecast`` (the horizon), drawn against the step."""
    plt = _pyplot()
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        past = len(panel["history"])
        ahead = range(past, past + len(panel["truth"]))
        ax.plot(range(past), panel["history"], color="0.45", lw=1, label="history")
        ax.plot(ahead, panel["truth"], color="tab:blue", lw=1, label="truth")
        ax.plot(ahead, panel["forecast"], color="tab:red", lw=1.2, label="forecast")
        ax.axvline(past - 0.5, color="0.7", lw=0.8, ls="--")
        ax.set_title(panel["title"], fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path, 90)
    plt.close(fig)


def plot_attention(panels: Sequence[tuple], path: str | Path, cols: int = 2) -> None:
    """Attention heatmaps: each panel is ``(source tokens, output tokens, weights)`` with
    ``weights`` of shape (outputs, sources); output tokens down, source tokens across."""
    plt = _pyplot()
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 5.5 * rows), squeeze=False)
    for ax, (source, output, weights) in zip(axes.flat, panels, strict=False):
        ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(source)), source, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(output)), output, fontsize=8)
        ax.set(xlabel="source", ylabel="output")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.tight_layout()
    _save(fig, path, 90)
    plt.close(fig)
