"""What every command line shares: the main wrapper (one-line errors), @FILE arguments, device and dtype
flags, and dataclass configs as flags."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import re
import sys
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from core import distributed
from core.errors import INTERRUPTED, Interrupted, UserError, check_config, flag_name
from core.runs import resume_checkpoint
from core.search_config import SearchConfig


def run_main(main: Callable[[list[str] | None], Any], argv: list[str] | None = None, memory_flags: str = "") -> None:
    """Run a command-line `main`: bad input, a full disk or too little memory is `error: ...` on stderr (one line,
    `error_line`) and exit status 2; an interrupted run (Ctrl-C, `Interrupted`) exits with status 130, as shells
    expect; output piped into `head` that stops reading ends it quietly."""
    warnings.formatwarning = lambda message, category, *args, **kwargs: f"warning: {message}\n"
    try:
        with named_output():
            main(argv)
    except (KeyboardInterrupt, Interrupted) as err:
        if message := str(err) if isinstance(err, Interrupted) else "interrupted":  # (said once, by the main process)
            print(message, file=sys.stderr)
        sys.exit(INTERRUPTED)
    except BrokenPipeError:
        sys.stderr.close()
        sys.exit(0)
    except Exception as err:
        if (message := error_line(err, memory_flags)) is None:
            raise  # a bug: its traceback is wanted
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)
    finally:
        distributed.shutdown()  # leave a torchrun process group cleanly (nothing to do otherwise)


def error_line(err: BaseException, memory_flags: str = "") -> str | None:
    """What a command says of an error, in one line: the user's input (UserError), input that is not UTF-8, running
    out of memory (naming `memory_flags`, the command's flags that shrink what it holds) or a file that cannot
    be read or written; None for anything else, a bug."""
    if isinstance(err, UnicodeDecodeError):  # our readers name the file; this is an argument or the like
        return f"input is not UTF-8 text ({err.reason})"
    if isinstance(err, UserError):
        return str(err)
    if isinstance(err, RuntimeError):
        return out_of_memory(err, memory_flags)
    if isinstance(err, OSError):
        return f"{f'{err.filename}: ' if err.filename else ''}{err.strerror or err}"
    return None


class _Output:
    """The standard output, whose failed writes (a full disk, `> /dev/full`) raise a UserError naming it: the
    OSError of a write carries no file name."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> int:
        return self._guarded(self.stream.write, text)

    def flush(self) -> None:
        self._guarded(self.stream.flush)

    def _guarded(self, call: Callable, *args: Any) -> Any:
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as err:
            _discard(self.stream)
            raise UserError(f"cannot write the standard output: {err.strerror or err}") from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _discard(stream: Any) -> None:
    """Point a failed stream at /dev/null, so that the interpreter's last flush of what it holds succeeds
    instead of printing a second error."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file (a test's capture)
        return
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, fd)
    os.close(null)


@contextlib.contextmanager
def named_output() -> Iterator[None]:
    """Within, sys.stdout names itself when a write fails; what it holds is flushed on leaving."""
    stdout = sys.stdout
    sys.stdout = _Output(stdout)
    try:
        yield
        sys.stdout.flush()
    finally:
        sys.stdout = stdout


def out_of_memory(err: BaseException, flags: str = "") -> str | None:
    """A failed allocation (CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError) as one line naming
    the cure (`flags`, e.g. "--batch-size or --beam-size"); None for any other error. Its traceback would point
    deep into torch, not at the flags."""
    text = str(err)
    if not (isinstance(err, torch.OutOfMemoryError) or "can't allocate memory" in text or "not enough memory" in text):
        return None
    cpu = re.search(r"allocate (\d+) bytes", text)
    cuda = re.search(r"[Tt]ried to allocate ([\d.]+ [KMGT]i?B)", text)
    size = f"{int(cpu[1]) / 2**30:.1f} GiB" if cpu else cuda[1] if cuda else None
    return f"out of memory{f' while allocating {size}' if size else ''}" + (f"; lower {flags}" if flags else "")


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


def add_device_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--device", default="auto", help="auto (CUDA where there is one), cpu, cuda or cuda:N")


def add_search_flags(parser: argparse.ArgumentParser, defaults: SearchConfig, skip: Iterable[str] = ()) -> None:
    """SearchConfig's fields as flags (--method, --beam-size, --temperature, ...), with this command's defaults."""
    add_config_flags(parser, defaults, "search", skip)


def search_config_from_args(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None, **overrides: Any
) -> SearchConfig:
    """The SearchConfig of the parsed flags, checked: ranges, and no flag given that the method ignores."""
    names = [f.name for f in dataclasses.fields(SearchConfig)]
    config = SearchConfig(**{n: getattr(args, n) for n in names if hasattr(args, n)}, **overrides)
    return config.check(given_flags(parser, argv, names))


def given_flags(parser: argparse.ArgumentParser, argv: list[str] | None, dests: Iterable[str]) -> set[str]:
    """The flags on the command line itself: argparse fills in a default only where the namespace lacks the
    attribute, so whatever still holds the marker afterwards was not given."""
    unset = object()
    parsed = parser.parse_args(argv, argparse.Namespace(**dict.fromkeys(dests, unset)))
    return {name for name, value in vars(parsed).items() if value is not unset}


# where and how a run goes on, not what it trains: never taken from the resumed run's saved flags
WHERE_FLAGS = ("resume", "out", "overwrite")


def parse_flags(
    parser: argparse.ArgumentParser, argv: list[str] | None, kept: typing.Iterable[str] = ()
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
        raise UserError(
            f"{config} is missing; it holds the run's flags (its data among them): restore it to resume the run"
        ) from None
    except ValueError as err:  # not UTF-8, or not JSON: damaged, and the run's flags are unknown
        raise UserError(
            f"{config} cannot be read ({err}); it holds the run's flags: restore it to resume the run"
        ) from None
    except (KeyError, TypeError):
        warnings.warn(f"{config} does not list the run's flags (an older run?); the flags given now apply")
        return args
    if not isinstance(saved, dict):
        raise UserError(
            f"{config} cannot be read (its flags are not a JSON object); it holds the run's flags: "
            "restore it to resume the run"
        )
    known = vars(parser.parse_args([]))
    saved = {k: v for k, v in saved.items() if k in known and k not in WHERE_FLAGS}
    for action in parser._actions:  # a value edited by hand would otherwise fail far from here, or not at all
        if action.dest in saved and not _fits(saved[action.dest], action, known[action.dest]):
            raise UserError(
                f"{config}: flag {action.dest!r} holds {saved[action.dest]!r}, not a value "
                f"{'/'.join(action.option_strings)} takes; correct it to resume the run"
            )
    parser.set_defaults(**saved)
    args = parser.parse_args(argv)
    given = given_flags(parser, argv, known)
    for name in kept:  # (a run from before a flag existed did not save it: nothing to compare with)
        if name in given and name in saved and getattr(args, name) != saved[name]:
            flag = "--" + name.replace("_", "-")
            raise UserError(
                f"{flag} {_shown(getattr(args, name))}: the run in {config.parent} was built with "
                f"{_shown(saved[name])}, and a resumed run keeps its model and vocabulary; leave out "
                f"{flag}, or start a new run to change it"
            )
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


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def add_dtype_flag(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--dtype`: the number format decoding computes in (checkpoints stay float32)."""
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=list(DTYPES),
        help="decode in float32, or in bfloat16: faster on CPUs that multiply it natively "
        "(AVX512-BF16, AMX), scores rounded differently (default: %(default)s)",
    )


def yes_no(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false (true/false, yes/no, on/off, 1/0)")


def _flag_type(field_type: Any) -> Any:
    if field_type in (bool, "bool"):
        return yes_no
    origin_args = typing.get_args(field_type)
    if origin_args:  # Optional[X]: take X
        field_type = next(a for a in origin_args if a is not type(None))
    return {"int": int, "float": float, "str": str}.get(getattr(field_type, "__name__", str(field_type)), field_type)


def add_config_flags(parser: argparse.ArgumentParser, config: Any, group: str, skip: Iterable[str] = ()) -> None:
    """Expose every field of the dataclass instance `config` (but those in `skip`) as `--field-name` with its
    value as default, and the config's HELP for it, if any."""
    hints = typing.get_type_hints(type(config))
    section = parser.add_argument_group(group)
    for field in dataclasses.fields(config):
        if field.name in skip:
            continue
        default = getattr(config, field.name)
        choices = getattr(type(config), "CHOICES", {}).get(field.name)
        text = getattr(type(config), "HELP", {}).get(field.name, "")
        section.add_argument(
            flag_name(field.name),
            dest=field.name,
            type=_flag_type(hints[field.name]),
            default=default,
            choices=choices,
            help=f"{text} (default: {default})".lstrip(),
        )


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build the dataclass `cls` from parsed flags added by `add_config_flags`."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    values.update(overrides)
    config = cls(**values)
    check_config(config)
    return config
