"""The one checkpoint format: task, config, weights, tokenizers as plain data, and the trainer's state.

Files are written to a temporary name and renamed, so a crash never leaves a half-written checkpoint, and
read with `torch.load(weights_only=True)`, so loading never runs code from the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from core.cli import UserError, atomic_file

FORMAT = "seqgen-checkpoint/1"


class CheckpointError(UserError):
    """A checkpoint that is missing, unreadable, foreign or of another task."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write `payload` (with task, config, model, tokenizers, optionally trainer) atomically to `path`."""
    path = Path(path)
    with atomic_file(path) as f:
        torch.save({"format": FORMAT, **payload}, f)
    return path


def load_checkpoint(path: str | Path, task: str | None = None, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint safely; one clear CheckpointError for a missing, truncated, foreign or wrong-task file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # any failure to unpickle an untrusted file means the same thing to the user
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated, or not made by this toolkit): "
                              f"{reason}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this toolkit (expected format {FORMAT})")
    if task is not None and data.get("task") != task:
        raise CheckpointError(f"{path} is a {data.get('task')!r} checkpoint; this needs a {task!r} checkpoint")
    missing = [key for key in ("config", "model", "tokenizers") if key not in data]
    if task is not None and missing:
        raise CheckpointError(f"{path} is an incomplete {task!r} checkpoint: it lacks {', '.join(missing)}")
    return data
