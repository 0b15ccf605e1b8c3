"""What every command line shares: one-line errors, device choice, dataclass configs as flags."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import sys
import tempfile
import typing
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch


class UserError(ValueError):
    """A problem with the user's input; command lines print it as one line, with no traceback."""


def run_main(main: Callable[[list[str] | None], Any], argv: list[str] | None = None, memory_flags: str = "") -> None:
    """Run a command-line `main`, turning bad input into `error: ...` on stderr and exit status 2; running out
    of memory too, naming `memory_flags`, the command's flags that shrink what it holds."""
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except UnicodeDecodeError as err:  # our readers name the file; this is stdin or an @FILE of arguments
        print(f"error: input is not UTF-8 text ({err.reason})", file=sys.stderr)
        sys.exit(2)
    except RuntimeError as err:
        if (message := out_of_memory(err, memory_flags)) is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # output piped into `head` and the like: stop quietly
        sys.stderr.close()
        sys.exit(0)
    finally:
        from core import distributed  # leave a torchrun process group cleanly (nothing to do otherwise)
        distributed.shutdown()


def out_of_memory(err: BaseException, flags: str = "") -> str | None:
    """A failed allocation (CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError) as one line naming
    the cure (`flags`: those that shrink it); None for any other error. Its traceback would point deep into
    torch, not at the flags."""
    text = str(err)
    if not (isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in text or "not enough memory" in text):
        return None
    cpu = re.search(r"allocate (\d+) bytes", text)
    cuda = re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]i?B)", text)
    size = f"{int(cpu[1]) / 2 ** 30:.1f} GiB" if cpu else cuda[1] if cuda else None
    return (f"out of memory{f' while allocating {size}' if size else ''}; use smaller batches or beams"
            f"{f' ({flags})' if flags else ''} or a smaller model")


class ArgsFileParser(argparse.ArgumentParser):
    """argparse that reads flags from @FILE, one argument per line as the recipes write them (`--checkpoint`,
    then its path), or a flag and its value on one line as people type them (`--checkpoint runs/a b/best.pt`:
    the value is the rest of the line, spaces included, without quotes around it). Blank lines and lines
    starting with # are skipped, except the line after a lone flag that takes a value: that line is its value,
    whatever it starts with (a path may begin with #)."""

    def __init__(self, **kwargs: Any):
        super().__init__(fromfile_prefix_chars="@", **kwargs)
        self._value_due = False  # the last line read was a lone flag waiting for its value

    def convert_arg_line_to_args(self, arg_line: str) -> list[str]:
        line = arg_line.strip()
        if self._value_due and line:
            self._value_due = False
            return [line]
        if not line or line.startswith("#"):
            return []
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0].startswith("--") and "=" not in parts[0]:
            flag, value = parts
            quoted = len(value) > 1 and value[0] == value[-1] and value[0] in "'\""
            return [flag, value[1:-1] if quoted else value]  # a value quoted as in a shell: without the quotes
        action = self._option_string_actions.get(line)
        self._value_due = action is not None and action.nargs != 0  # store_true and the like take none
        return [line]


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"--device {name!r} is not one of auto, cpu, cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for, but CUDA is not available here (use --device auto or cpu)")
    return torch.device(name)


def add_search_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """The search options that text generation and translation share: sampling (`--method sample`) and the
    repetition controls of every method."""
    parser.add_argument("--temperature", type=float, default=1.0, help="> 0; lower is more conservative")
    parser.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="sample within the smallest set of mass p, (0, 1]")
    parser.add_argument("--no-repeat-ngram", type=int, default=0, help="forbid repeating any n-gram of this size")
    parser.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeated tokens")


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def add_dtype_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--dtype`: the number format decoding computes in (checkpoints stay float32)."""
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES),
                        help="decode in float32, or in bfloat16: faster on CPUs that multiply it natively "
                             "(AVX512-BF16, AMX), scores rounded differently (default: %(default)s)")


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
    except OSError:
        return args  # not a run: the recipe says what is missing
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
    given = _given_flags(parser, argv, known)
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
    kind = {int: int, float: (int, float), _yes_no: bool}.get(action.type)
    if kind is None:
        kind = type(default) if default is not None else (str, int, float)
    return isinstance(value, kind) and (kind is bool or not isinstance(value, bool))


def _shown(value: Any) -> str:
    return "none" if value in (None, "") else "on" if value is True else "off" if value is False else str(value)


def _given_flags(parser: argparse.ArgumentParser, argv: list[str] | None, dests: typing.Iterable[str]) -> set[str]:
    """The flags on the command line itself: argparse fills in a default only where the namespace lacks the
    attribute, so whatever still holds the marker afterwards was not given."""
    unset = object()
    parsed = parser.parse_args(argv, argparse.Namespace(**dict.fromkeys(dests, unset)))
    return {name for name, value in vars(parsed).items() if value is not unset}


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


MAX_SEED = 2 ** 32 - 1  # the seeds every command takes (an ensemble's members use seed + k: see the recipe)


def check_range(name: str, value: float, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise a UserError naming `name`, the value and the allowed range when value falls outside it (NaN,
    infinities and integers beyond 64 bits always do: every comparison with NaN is false)."""
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    unusable = not math.isfinite(value) if isinstance(value, float) else abs(value) > 2 ** 63 - 1  # (torch's int64)
    if too_low or too_high or unusable:
        left = "(-inf" if low is None else ("(" if low_open else "[") + _number(low)
        right = "inf)" if high is None else _number(high) + (")" if high_open else "]")
        raise UserError(f"{name} = {_number(value)} is out of range; allowed: {left}, {right}")


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def check_config(config: Any) -> None:
    """Check a config dataclass's fields against its RANGES: field -> (low, high, low_open, high_open), each
    bound None when open-ended; the error names the field as its flag."""
    for name, bounds in getattr(type(config), "RANGES", {}).items():
        check_range("--" + name.replace("_", "-"), getattr(config, name), *bounds)


def _yes_no(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false (true/false, yes/no, on/off, 1/0)")


def _flag_type(field_type: Any) -> Any:
    if field_type in (bool, "bool"):
        return _yes_no
    origin_args = typing.get_args(field_type)
    if origin_args:  # Optional[X]: take X
        field_type = next(a for a in origin_args if a is not type(None))
    return {"int": int, "float": float, "str": str}.get(getattr(field_type, "__name__", str(field_type)), field_type)


def add_config_flags(parser: argparse.ArgumentParser, config: Any, group: str) -> None:
    """Expose every field of the dataclass instance `config` as `--field-name` with its value as default."""
    hints = typing.get_type_hints(type(config))
    section = parser.add_argument_group(group)
    for field in dataclasses.fields(config):
        flag = "--" + field.name.replace("_", "-")
        default = getattr(config, field.name)
        choices = getattr(type(config), "CHOICES", {}).get(field.name)
        section.add_argument(flag, dest=field.name, type=_flag_type(hints[field.name]), default=default,
                             choices=choices, help=f"(default: {default})")


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build the dataclass `cls` from parsed flags added by `add_config_flags`."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    values.update(overrides)
    config = cls(**values)
    check_config(config)
    return config


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[typing.BinaryIO]:
    """A binary file that replaces `path` only once it is written whole (temp file, fsync, rename): a crash
    or a full disk midway leaves the old file as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_config(out_dir: Path, **configs: Any) -> Path:
    """Write the resolved configuration next to the checkpoint, as JSON (atomically: a resume needs it)."""
    path = out_dir / "config.json"
    plain = {name: dataclasses.asdict(c) if dataclasses.is_dataclass(c) else c for name, c in configs.items()}
    with atomic_file(path) as f:
        f.write((json.dumps(plain, indent=2, default=str) + "\n").encode("utf-8"))
    return path
