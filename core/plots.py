"""Pictures people would rather look at than numbers: loss curves and attention maps, as PNG."""
from __future__ import annotations

from pathlib import Path

from torch import Tensor

from core.runs import atomic_file


def pyplot():
    """matplotlib.pyplot drawing to files (no screen needed)."""
    import matplotlib
    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt
    return plt


def plot_losses(records: list[dict], path: Path) -> Path | None:
    """Training loss (smoothed) and validation loss by step, from a trainer's log records; None without any."""
    plt = pyplot()
    train = [(r["step"], r["loss"]) for r in records if r["split"] == "train"]
    valid = [(r["step"], r["valid_loss"]) for r in records if r["split"] == "valid" and "valid_loss" in r]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    steps, losses = zip(*train)
    window = max(1, len(losses) // 100)  # smooth noisy per-step losses
    smooth = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1])
              for i in range(len(losses))]
    ax.plot(steps, smooth, label="train loss")
    if valid:
        ax.plot(*zip(*valid), marker="o", label="valid loss")
    ax.set_xlabel("step")
    ax.set_ylabel("nats per token")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(plt, fig, path)
    return path


def _save(plt, fig, path: Path) -> None:
    try:
        with atomic_file(path) as f:  # a full disk is one line naming the picture
            fig.savefig(f, format="png", dpi=100)
    finally:
        plt.close(fig)


def _label(piece: str) -> str:
    """A tick label: spaces dropped, control characters (a byte piece may decode to one, and no font has a
    glyph for it) written as escapes, and an empty piece as _."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in piece.replace(" ", "")) or "_"


def save_attention_png(source: list[str], target: list[str], weights: Tensor, path: str | Path) -> Path:
    """Draw weights (len(target), len(source)): one row per output piece, one column per source piece."""
    plt = pyplot()
    weights = weights.detach().float().cpu()
    fig, ax = plt.subplots(figsize=(max(4, 0.45 * len(source) + 1.5), max(3, 0.4 * len(target) + 1.5)))
    ax.imshow(weights.numpy(), cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)), [_label(s) for s in source], rotation=60, ha="right")
    ax.set_yticks(range(len(target)), [_label(t) for t in target])
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.tight_layout()
    path = Path(path)
    _save(plt, fig, path)
    return path
