"""Run folders: where a recipe writes, `--resume` (the run's own flags back from its config.json), `--overwrite`,
and files written atomically."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import json
import os
import re
import tempfile
import typing
import warnings
from pathlib import Path
from typing import Any, Iterator

from core.cli import given_flags, yes_no
from core.errors import UserError

# where and how a run goes on, not what it trains: never taken from the resumed run's saved flags
WHERE_FLAGS = ("resume", "out", "overwrite")


def parse_flags(parser: argparse.ArgumentParser, argv: list[str] | None, kept: typing.Iterable[str] = ()
                ) -> argparse.Namespace:
    """Parse a recipe's flags. With --resume, the flags its run started with (`flags` in the config.json beside
    the checkpoint, or in the run folder) become the defaults, so that `--resume RUN` alone goes on with the
    same data and settings; flags given now still win (e.g. --steps, to train for longer). The flags named in
    `kept` shape the model or its vocabulary, which the checkpoint fixes: given now with another value, they
    are refused rather than ignored in silence."""
    args = parser.parse_args(argv)
    if args.resume is not None and not args.resume.strip():  # an unset shell variable, say
        raise UserError("--resume is empty; name a run folder or a checkpoint")
    if not args.resume:
        return args
    config = resume_checkpoint(args.resume).parent / "config.json"
    try:
        saved = json.loads(config.read_bytes().decode("utf-8"))["flags"]
    except FileNotFoundError:
        checkpoint = resume_checkpoint(args.resume)
        if not checkpoint.is_file() or any((p / "config.json").is_file() for p in checkpoint.parents[1:3]):
            return args  # nothing to resume, or a part of a run (an ensemble's member): the recipe says which
        # the defaults would train on another corpus, with other settings, in silence
        raise UserError(f"{config} is missing; it holds the run's flags (its data among them): restore it to "
                        "resume the run") from None
    except ValueError as err:  # not UTF-8, or not JSON: damaged, and the run's flags are unknown
        raise UserError(f"{config} cannot be read ({err}); it holds the run's flags: restore it to resume "
                        "the run") from None
    except (KeyError, TypeError):
        warnings.warn(f"{config} does not list the run's flags (an older run?); the flags given now apply")
        return args
    if not isinstance(saved, dict):
        raise UserError(f"{config} cannot be read (its flags are not a JSON object); it holds the run's flags: "
                        "restore it to resume the run")
    known = vars(parser.parse_args([]))
    saved = {k: v for k, v in saved.items() if k in known and k not in WHERE_FLAGS}
    for action in parser._actions:  # a value edited by hand would otherwise fail far from here, or not at all
        if action.dest in saved and not _fits(saved[action.dest], action, known[action.dest]):
            raise UserError(f"{config}: flag {action.dest!r} holds {saved[action.dest]!r}, not a value "
                            f"{'/'.join(action.option_strings)} takes; correct it to resume the run")
    parser.set_defaults(**saved)
    args = parser.parse_args(argv)
    given = given_flags(parser, argv, known)
    for name in kept:  # (a run from before a flag existed did not save it: nothing to compare with)
        if name in given and name in saved and getattr(args, name) != saved[name]:
            flag = "--" + name.replace("_", "-")
            raise UserError(f"{flag} {_shown(getattr(args, name))}: the run in {config.parent} was built with "
                            f"{_shown(saved[name])}, and a resumed run keeps its model and vocabulary; leave out "
                            f"{flag}, or start a new run to change it")
    return args


def _fits(value: Any, action: argparse.Action, default: Any) -> bool:
    """Whether a value read from JSON can stand for the flag `action` (whose parser default is `default`).
    null passes: it is how an unset flag is saved, and a run of another recipe may hold it (that recipe's
    checkpoint is refused by name later)."""
    if value is None:
        return True
    if action.choices is not None:
        return value in action.choices
    kind = {int: int, float: (int, float), yes_no: bool}.get(action.type)
    if kind is None:
        kind = type(default) if default is not None else (str, int, float)
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _shown(value: Any) -> str:
    return "none" if value in (None, "") else "on" if value is True else "off" if value is False else str(value)


def resume_checkpoint(resume: str) -> Path:
    """The checkpoint that --resume names: the path itself, or the last.pt of a run folder."""
    path = Path(resume)
    return path / "last.pt" if path.is_dir() else path


def run_folder(out: str | None, resume: str | None, overwrite: bool, default: str) -> Path:
    """The recipe's output folder: --out, else the folder of the checkpoint it resumes from (a resumed run goes
    on where it was), else `default`; created here. Refuses to train over another run's checkpoints without
    --overwrite: any .pt file in the folder or below it (an ensemble's `memberK/`, `reverse/memberK/`), since a
    fresh Trainer.fit replaces best.pt and last.pt and deletes the snapshots."""
    if out is not None and not out.strip():  # an unset shell variable, say: not the default folder in silence
        raise UserError("--out is empty; name a folder")
    checkpoint = resume_checkpoint(resume) if resume else None
    if checkpoint and not checkpoint.is_file():
        raise UserError(f"--resume {resume}: checkpoint {checkpoint} does not exist")
    folder = Path(out or (checkpoint.parent if checkpoint else default))
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out {folder} is a file, not a folder")
    own = checkpoint and folder.resolve() == checkpoint.parent.resolve()
    held = next(folder.rglob("*.pt"), None)
    if held and not own and not overwrite:
        raise UserError(f"{folder} already holds checkpoints; continue with --resume {folder} or start afresh "
                        f"with --overwrite (or another --out); among them: {held}")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the folder {folder}: {err.strerror}") from None
    return folder


LOCK = "run.lock"  # in a run folder while a process trains in it; holds that process's id
_held: dict[Path, typing.TextIO] = {}  # the folders this process holds, with their open lock files


def hold_run(folder: Path) -> None:
    """One writer per run folder: lock `folder` for as long as this process lives (the system lets go of the
    lock of a process that ended, even by kill -9, so a stale lock file is simply taken over). Refused with one
    line naming the holder's process when another process holds it, or a folder below it (an ensemble member)."""
    folder = folder.resolve()
    if folder in _held:
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = open(folder / LOCK, "a+", encoding="utf-8")
    for path in [folder / LOCK, *(p for p in folder.rglob(LOCK) if p.parent != folder)]:
        other = lock if path == folder / LOCK else open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other.seek(0)
            holder = other.read().strip() or "?"
            lock.close()
            raise UserError(f"{path.parent} is in use by process {holder}, which trains in it (lock {path}); wait "
                            "for it to end, or stop it") from None
        finally:
            if other is not lock:
                other.close()  # (a lock tested, not kept)
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    _held[folder] = lock


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[typing.BinaryIO]:
    """A binary file that replaces `path` only once it is written whole (temp file, fsync, rename): a crash
    or a full disk midway leaves the old file as it was. A failed write (a full or read-only disk) is a
    UserError naming the file and the cause."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise write_error(path, err) from None
        raise


def write_error(path: Path, err: OSError) -> UserError:
    """A failed write as one line: the file, the cause, and that the file is as it was before."""
    return UserError(f"cannot write {path}: {err.strerror or err} (any earlier {path.name} is left as it was)")


def write_text(path: Path, text: str) -> Path:
    """Write a UTF-8 text file of the run atomically (`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))
    return path


def save_config(out_dir: Path, **configs: Any) -> Path:
    """Write the resolved configuration next to the checkpoint, as JSON (atomically: a resume needs it)."""
    path = out_dir / "config.json"
    plain = {name: dataclasses.asdict(c) if dataclasses.is_dataclass(c) else c for name, c in configs.items()}
    return write_text(path, json.dumps(plain, indent=2, default=str) + "\n")


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
                    raise UserError(f"{self.path}:{number}: not a log record ({line[:60]!r}); the log is damaged "
                                    "(remove that line to go on)") from None
                warnings.warn(f"{self.path}:{number}: the last line is incomplete (the run stopped while writing "
                              "it); it is set aside")
        return records

    def truncate(self, step: int) -> None:
        """Drop records written after `step` (and a partial last line), so that the log reads as one run."""
        if self.path.exists():
            kept = [r for r in self.records() if r["step"] <= step]
            with atomic_file(self.path) as f:
                f.write("".join(json.dumps(r) + "\n" for r in kept).encode("utf-8"))
