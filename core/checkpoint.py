"""The one checkpoint format: task, config, weights, tokenizers as plain data, and the trainer's state.

Files are written to a temporary name and renamed, so a crash never leaves a half-written checkpoint, and
read with `torch.load(weights_only=True)`, so loading never runs code from the file (`read_tensors`, which every
file torch.save wrote goes through).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import torch

from core.errors import UserError, first_line
from core.files import atomic_file, check_path, read_bytes

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
    """Read a checkpoint safely (`read_tensors`), from a file or a pipe; one CheckpointError for a missing,
    damaged, foreign or wrong-task file."""
    try:
        path = check_path(path, stream=True, flag="checkpoint")
    except UserError as err:
        raise CheckpointError(str(err)) from None
    data = read_tensors(path, "checkpoint", map_location)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a checkpoint of this toolkit (expected format {FORMAT})")
    if task is not None and data.get("task") != task:
        raise CheckpointError(f"{path} is a {data.get('task')!r} checkpoint; this needs a {task!r} checkpoint")
    missing = [key for key in ("config", "model", "tokenizers") if key not in data]
    if task is not None and missing:
        raise CheckpointError(f"{path} is an incomplete {task!r} checkpoint: it lacks {', '.join(missing)}")
    return data


def read_tensors(path: Path, what: str, map_location: str | torch.device = "cpu", mmap: bool = False) -> Any:
    """A file torch.save wrote (a checkpoint, a state dict, a feature shard), read with weights_only=True after the
    CRC-32 of each of its records is checked (torch.load does not: a bit flipped on disk would load as wrong
    weights). A pipe is read into memory first. One CheckpointError naming the file and `what` it should be."""
    source: Path | io.BytesIO = path if path.is_file() else io.BytesIO(read_bytes(path))
    damaged = None
    if zipfile.is_zipfile(source):  # torch.save's archives (the legacy format of old files has no checksums)
        try:
            with zipfile.ZipFile(source) as archive:
                damaged = archive.testzip()
        except Exception as err:  # a broken record header: the record cannot even be read
            damaged = f"({first_line(err)})"
    if damaged is not None:
        raise CheckpointError(
            f"{path} is damaged: record {damaged} does not match the checksum written with it "
            "(the file changed after it was saved)"
        )
    if isinstance(source, io.BytesIO):
        source.seek(0)
    try:
        return torch.load(source, map_location=map_location, weights_only=True, mmap=mmap and source is path)
    except Exception as err:  # any failure to unpickle an untrusted file means the same thing to the user
        raise CheckpointError(f"{path} is not a readable {what}: {_load_failure(err)}") from None


def _load_failure(err: Exception) -> str:
    """Why torch.load refused a file, in one line; never torch's advice to load it without weights_only."""
    if "weights_only" in str(err) or "Weights only load failed" in str(err):
        return "it holds Python objects besides tensors and plain data, which are never loaded (they could run code)"
    return first_line(err)


def rng_state(device: torch.device) -> dict:
    """The CPU generator's state and that of the GPU `device` (a list: empty on the CPU), for exact resume."""
    cuda = [torch.cuda.get_rng_state(device)] if device.type == "cuda" else []
    return {"torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng_state(rng: dict, device: torch.device) -> None:
    torch.set_rng_state(rng["torch"].cpu())
    if rng["cuda"] and device.type == "cuda":  # older checkpoints list every GPU's, this one's first
        torch.cuda.set_rng_state(rng["cuda"][0].cpu(), device)
