"""Translation's picture, as PNG: the attention of one translation, source pieces across and output pieces down."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from core.plots import pyplot, save_figure


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
    return save_figure(fig, path)
