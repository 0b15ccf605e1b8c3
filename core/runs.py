"""Run folders: where a recipe writes (`--out`, `--overwrite`), the checkpoint `--resume` names, one writer per
folder (its lock), the resolved configuration, the snapshots a trainer keeps and the run's log."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import typing
import warnings
from pathlib import Path
from typing import Any

from core.errors import UserError
from core.files import atomic_file, check_output, write_text


def resume_checkpoint(resume: str) -> Path:
    """The checkpoint that --resume names: the path itself, or the last.pt of a run folder."""
    path = Path(resume)
    return path / "last.pt" if path.is_dir() else path


def run_folder(out: str | None, resume: str | None, overwrite: bool, default: str) -> Path:
    """The recipe's output folder: --out, else the folder of the checkpoint it resumes from (a resumed run goes
    on where it was), else `default`; created here. Refuses to train over another run's checkpoints without
    --overwrite: any .pt file in the folder or below it (an ensemble's `memberK/`, `reverse/memberK/`), since a
    fresh Trainer.fit replaces best.pt and last.pt and deletes the snapshots."""
    checkpoint = resume_checkpoint(resume) if resume else None
    if checkpoint and not checkpoint.is_file():
        raise UserError(f"--resume {resume}: checkpoint {checkpoint} does not exist")
    folder = check_output(
        out if out is not None else checkpoint.parent if checkpoint else default, "folder", flag="--out"
    )
    own = checkpoint and folder.resolve() == checkpoint.parent.resolve()
    held = next(folder.rglob("*.pt"), None) if folder.is_dir() else None
    if held and not own and not overwrite:
        raise UserError(
            f"{folder} already holds checkpoints; continue with --resume {folder} or start afresh "
            f"with --overwrite (or another --out); among them: {held}"
        )
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the folder {folder}: {err.strerror}") from None
    return folder


LOCK = "run.lock"  # in a run folder while a process trains in it; holds that process's id
_held: dict[Path, typing.TextIO] = {}  # the folders this process holds, with their open lock files


def hold_run(folder: Path) -> None:
    """One writer per run folder: lock `folder` until the run ends (`release_run`, or this process's exit; the
    system lets go of the lock of a process that died, even by kill -9, so a stale lock file is taken over).
    Refused with one line naming the holder's process when another process holds it, or a folder below it (an
    ensemble member)."""
    folder = folder.resolve()
    if folder in _held:
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = _locked(folder / LOCK)
    for path in (p for p in folder.rglob(LOCK) if p.parent != folder):  # tested, not kept
        with contextlib.closing(_locked(path)):
            pass
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    _held[folder] = lock


def _locked(path: Path) -> typing.TextIO:
    """The lock file `path`, open and locked by this process; a UserError naming the holder when another holds
    it. A lock file removed by its holder as we took it (`release_run`) is made afresh."""
    while True:
        lock = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "?"
            lock.close()
            raise UserError(
                f"{path.parent} is in use by process {holder}, which trains in it (lock {path}); wait "
                "for it to end, or stop it"
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(lock.fileno()).st_ino:
                return lock
        lock.close()


def release_run(folder: Path) -> None:
    """The run in `folder` has ended: its lock file goes, and the lock with it."""
    lock = _held.pop(folder.resolve(), None)
    if lock is not None:
        (folder.resolve() / LOCK).unlink(missing_ok=True)  # removed while still locked: no one takes it meanwhile
        lock.close()


@atexit.register
def release_all() -> None:
    """Every run this process holds has ended (called on exit, and by a job that ends in another process)."""
    for folder in list(_held):
        release_run(folder)


def save_config(out_dir: Path, **configs: Any) -> Path:
    """Write the resolved configuration next to the checkpoint, as JSON (atomically: a resume needs it)."""
    path = out_dir / "config.json"
    plain = {name: _plain(c) for name, c in configs.items()}
    return write_text(path, json.dumps(plain, indent=2, default=str) + "\n")


def _plain(value: Any) -> Any:
    """A config dataclass as a dict; anything else as it is."""
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


def snapshots_in(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the snapshots a Trainer kept in `folder` (`snapshot-STEP.pt`), oldest first; other files
    that merely look alike (`snapshot-old.pt`) are not its own and are left alone."""
    found = [(re.fullmatch(r"snapshot-(\d+)\.pt", path.name), path) for path in Path(folder).glob("snapshot-*.pt")]
    return sorted((int(match[1]), path) for match, path in found if match)


class RunLog:
    """A run's log.jsonl: one JSON record per line (every training step and validation), appended as they come.
    A last line left partial by a crash or a full disk is set aside with one warning when the log is read."""

    def __init__(self, path: Path):
        self.path = path

    def append(self, record: dict) -> None:
        try:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as err:  # a partial line this leaves is set aside when the log is next read
            raise UserError(f"cannot write {self.path}: {err.strerror or err}") from None

    def records(self) -> list[dict]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        records = []
        for number, line in enumerate(lines, start=1):
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                    raise ValueError("not a step record")
                records.append(record)
            except ValueError:
                if number < len(lines):
                    raise UserError(
                        f"{self.path}:{number}: not a log record ({line[:60]!r}); the log is damaged "
                        "(remove that line to go on)"
                    ) from None
                warnings.warn(
                    f"{self.path}:{number}: the last line is incomplete (the run stopped while writing "
                    "it); it is set aside"
                )
        return records

    def truncate(self, step: int) -> None:
        """Drop records written after `step` (and a partial last line), so that the log reads as one run."""
        if self.path.exists():
            kept = [r for r in self.records() if r["step"] <= step]
            with atomic_file(self.path) as f:
                f.write("".join(json.dumps(r) + "\n" for r in kept).encode("utf-8"))
