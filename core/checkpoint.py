"""The one checkpoint format: task, config, weights, tokenizers as plain data, and the trainer's state.

Files are written to a temporary name and renamed, so a crash never leaves a half-written checkpoint, and
read with `torch.load(weights_only=True)`, so loading never runs code from the file. Before that, the CRC-32
of every record of the file's zip archive is checked, which torch.load does not do: a bit flipped on disk or in
a copy is refused instead of loading as wrong weights.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import torch

from core.errors import UserError, first_line
from core.files import atomic_file

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
    _check_records(path)
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # any failure to unpickle an untrusted file means the same thing to the user
        raise _unreadable(path, first_line(err)) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this toolkit (expected format {FORMAT})")
    if task is not None and data.get("task") != task:
        raise CheckpointError(f"{path} is a {data.get('task')!r} checkpoint; this needs a {task!r} checkpoint")
    missing = [key for key in ("config", "model", "tokenizers") if key not in data]
    if task is not None and missing:
        raise CheckpointError(f"{path} is an incomplete {task!r} checkpoint: it lacks {', '.join(missing)}")
    return data


def _unreadable(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"{path} is not a readable checkpoint (truncated, or not made by this toolkit): {reason}")


def _check_records(path: Path) -> None:
    """One CheckpointError naming the first record of the archive whose bytes no longer match their CRC-32."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:  # torch.save writes zip archives: this is none, or a truncated one
        raise _unreadable(path, str(err)) from None
    with archive:
        try:
            damaged = archive.testzip()
        except Exception as err:  # a damaged record header: the record cannot even be read
            damaged = f"({first_line(err)})"
    if damaged is not None:
        raise CheckpointError(
            f"{path} is damaged: record {damaged} does not match the checksum written with it "
            "(the file changed after it was saved)"
        )


def rng_state(device: torch.device) -> dict:
    """The CPU generator's state and that of the GPU `device` (a list: empty on the CPU), for exact resume."""
    cuda = [torch.cuda.get_rng_state(device)] if device.type == "cuda" else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng_state(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] and device.type == "cuda":  # older checkpoints list every GPU's, this one's first
        torch.cuda.set_rng_state(rng["cuda"][0].cpu(), device)
