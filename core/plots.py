"""Pictures people would rather look at than numbers, written as PNG: matplotlib without a screen, figures saved
atomically, and the loss and reward curves of a run."""

from __future__ import annotations

from pathlib import Path

from core.files import atomic_file


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
    ax.plot(steps, _smoothed(list(losses)), label="train loss")  # per-step losses are noisy
    if valid:
        ax.plot(*zip(*valid), marker="o", label="valid loss")
    ax.set_xlabel("step")
    ax.set_ylabel("nats per token")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_rewards(records: list[dict], path: Path, select: str) -> Path | None:
    """Sequence-level training's rewards by step (the samples', the baseline's, greedy's; smoothed) and the
    validation figure `select`, from a trainer's log records; None without any."""
    train = [r for r in records if r["split"] == "train" and "reward" in r]
    if not train:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, style in (("reward", "-"), ("greedy_reward", "-"), ("baseline", "--")):
        ax.plot([r["step"] for r in train], _smoothed([r[name] for r in train]), style, label=f"train {name}")
    ax.set_xlabel("step")
    ax.set_ylabel("reward (train batches)")
    ax.grid(alpha=0.3)
    valid = [(r["step"], r[select]) for r in records if r["split"] == "valid" and select in r]
    lines = ax.get_lines()
    if valid:
        twin = ax.twinx()
        lines += twin.plot(*zip(*valid), "o-", color="black", label=select)
        twin.set_ylabel(select)
    ax.legend(lines, [line.get_label() for line in lines], loc="best", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _smoothed(values: list[float]) -> list[float]:
    """Each value the mean of a window of about a hundredth of the run ending at it."""
    window = max(1, len(values) // 100)
    return [
        sum(values[max(0, i - window + 1) : i + 1]) / len(values[max(0, i - window + 1) : i + 1])
        for i in range(len(values))
    ]


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """Write a matplotlib figure as PNG, atomically, and close it."""
    path = Path(path)
    try:
        with atomic_file(path) as f:  # a full disk is one line naming the picture
            fig.savefig(f, format="png", dpi=dpi)
    finally:
        pyplot().close(fig)
    return path
