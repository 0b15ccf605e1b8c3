"""Flags, as every command line reads them: one table per command of flags that do not go together, paths checked
as they are parsed, @FILE arguments, `--resume` with the run's own flags, device and dtype flags, and dataclass
configs as flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import typing
import warnings
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.checkpoint import load_checkpoint
from core.errors import UserError, check_config, flag_name
from core.files import check_output, check_path, read_text
from core.runs import resume_checkpoint
from core.search_config import SearchConfig


@dataclass(frozen=True)
class FlagTable:
    """One command line's declared rules for its flags (by dest name), checked on the flags given, not on defaults:
    `apart`: (flag, other, why) pairs that do not go together (one would be ignored in silence); `needs`: (flag,
    other) where flag means something only with other; `kept`: with --resume, what the run fixes (its model,
    vocabulary and data), refused when given with another value."""

    apart: tuple[tuple[str, str, str], ...] = ()
    needs: tuple[tuple[str, str], ...] = ()
    kept: tuple[str, ...] = ()

    def check(self, given: set[str], settled: Collection[str] = ()) -> None:
        """`settled`: what a resumed run set when it started, which a flag given now may need."""
        for flag, other, why in self.apart:
            if flag in given and other in given:
                raise UserError(f"{flag_name(flag)} does not go with {flag_name(other)}: {why}")
        for flag, other in self.needs:
            if flag in given and other not in given and other not in settled:
                raise UserError(f"{flag_name(flag)} is used only with {flag_name(other)}; give both, or leave it out")


def path_arg(kind: str = "file", stream: bool = False, output: bool = False, suffix: str = "") -> Callable:
    """An argparse `type` checking a path as it is parsed (`core.files`): a file, a folder or either ("any") to
    read, `stream` allowing `-` and pipes; or with `output`, one to write (of `suffix`). Its error is the flag's
    one line, before any work is done."""

    def path(value: str) -> str:
        try:
            if output:
                check_output(value, kind, suffix)
            elif kind == "any":
                is_folder = value.strip() and Path(value).is_dir()
                check_path(value, "folder" if is_folder else "file" if stream else "file or folder", stream)
            else:
                check_path(value, kind, stream)
        except UserError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    return path


class Parser(argparse.ArgumentParser):
    """argparse whose errors are UserErrors, so that a command prints them as every other error: one line, without
    the usage (`--help` shows it); the description is printed as written."""

    def __init__(self, **kwargs: Any):
        super().__init__(formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)

    def error(self, message: str) -> typing.NoReturn:
        raise UserError(f"{message} (see {self.prog} --help)")


class ArgsFileParser(Parser):
    """argparse that reads flags from @FILE, one argument per line as the recipes write them (`--checkpoint`,
    then its path), or a flag and its value on one line as people type them (`--checkpoint runs/a b/best.pt`:
    the value is the rest of the line, spaces included, without quotes around it). Blank lines and lines
    starting with # are skipped, except the line after a lone flag that takes a value: that line is its value,
    whatever it starts with (a path may begin with #)."""

    def __init__(self, **kwargs: Any):
        super().__init__(fromfile_prefix_chars="@", **kwargs)
        self._value_due = False  # the last line read was a lone flag waiting for its value
        self._reading: list[Path] = []  # the @FILEs being read, outermost first

    def _read_args_from_files(self, arg_strings: list[str]) -> list[str]:
        """Each @FILE replaced by its arguments, read as every text input is (core.files); an @FILE that includes
        itself, directly or through others, is refused."""
        found: list[str] = []
        for arg in arg_strings:
            if not arg.startswith("@"):
                found.append(arg)
                continue
            path = Path(arg[1:])
            if path.resolve() in self._reading:
                raise UserError(f"{arg} includes itself (through {' -> '.join(map(str, self._reading))})")
            text = read_text(path)
            self._reading.append(path.resolve())
            found += self._read_args_from_files(
                [a for line in text.split("\n") for a in self.convert_arg_line_to_args(line)]
            )
            self._reading.pop()
        return found

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


def add_run_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, default: str) -> None:
    """--out, --resume and --overwrite, as every recipe takes them."""
    parser.add_argument(
        "--out",
        type=path_arg("folder", output=True),
        help=f"folder for checkpoints, config, logs and plots (default: {default}, or the run that --resume continues)",
    )
    parser.add_argument(
        "--resume",
        metavar="PATH",
        type=path_arg("any"),
        help="continue an interrupted run: its "
        "folder (every model of the run goes on from its last.pt) or a checkpoint, with the flags "
        "it started with; flags given now override those that may change",
    )
    parser.add_argument("--overwrite", action="store_true", help="start afresh, replacing the checkpoints in --out")


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
    parser: argparse.ArgumentParser, argv: list[str] | None, table: FlagTable = FlagTable(), task: str = ""
) -> argparse.Namespace:
    """Parse a command's flags and check them against its `table`. A recipe's `--resume` (of a run of `task`)
    takes the flags the run started with (`flags` in the config.json beside the checkpoint, or in the run
    folder) as defaults, so that `--resume RUN` alone goes on with the same data and settings; flags given now
    still win (e.g. --steps, to train for longer), but those the run fixes (`table.kept`) only with the value
    it has."""
    args = parser.parse_args(argv)
    known = vars(parser.parse_args([])) if hasattr(args, "resume") else vars(args)
    given, resuming = given_flags(parser, argv, known), bool(getattr(args, "resume", None))
    table.check(given, set(known) if resuming else ())  # with --resume, what a flag needs may be the run's own
    if not resuming:
        return args
    config = resume_checkpoint(args.resume).parent / "config.json"
    saved = {k: v for k, v in (_saved_flags(config, args.resume, task) or {}).items() if k in known}
    saved = {k: v for k, v in saved.items() if k not in WHERE_FLAGS}
    table.check(given, {k for k, v in saved.items() if v != known[k]})
    if not saved:
        return args
    for action in parser._actions:  # a value edited by hand would otherwise fail far from here, or not at all
        if action.dest in saved and not _fits(saved[action.dest], action, known[action.dest]):
            raise UserError(
                f"{config}: flag {action.dest!r} holds {saved[action.dest]!r}, not a value "
                f"{'/'.join(action.option_strings)} takes; correct it to resume the run"
            )
    parser.set_defaults(**saved)
    args = parser.parse_args(argv)
    for name in table.kept:  # (a run from before a flag existed did not save it: nothing to compare with)
        if name in given and name in saved and getattr(args, name) != saved[name]:
            flag = flag_name(name)
            raise UserError(
                f"{flag} {_shown(getattr(args, name))}: the run in {config.parent} was built with "
                f"{_shown(saved[name])}, and a resumed run keeps its model, vocabulary and data; leave out "
                f"{flag}, or start a new run to change it"
            )
    return args


def _saved_flags(config: Path, resume: str, task: str) -> dict | None:
    """The flags a run saved in its config.json, or None when there is nothing to take (a checkpoint outside a
    run folder, an ensemble member, a run of before flags were saved); a run of another recipe is refused."""
    try:
        saved = json.loads(config.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        checkpoint = resume_checkpoint(resume)
        if not checkpoint.is_file() or any((p / "config.json").is_file() for p in checkpoint.parents[1:3]):
            return None  # nothing to resume, or a part of a run (an ensemble's member): the recipe says which
        # the defaults would train on another corpus, with other settings, in silence
        raise UserError(
            f"{config} is missing; it holds the run's flags (its data among them): restore it to resume the run"
        ) from None
    except ValueError as err:  # not UTF-8, or not JSON: damaged, and the run's flags are unknown
        raise UserError(
            f"{config} cannot be read ({err}); it holds the run's flags: restore it to resume the run"
        ) from None
    if not isinstance(saved, dict) or "flags" not in saved:
        warnings.warn(f"{config} does not list the run's flags (an older run?); the flags given now apply")
        return None
    if not isinstance(saved["flags"], dict):
        raise UserError(
            f"{config} cannot be read (its flags are not a JSON object); it holds the run's flags: "
            "restore it to resume the run"
        )
    checkpoint = resume_checkpoint(resume)
    run_task = saved.get("task") or (load_checkpoint(checkpoint).get("task") if checkpoint.is_file() else task)
    if task and run_task != task:
        raise UserError(
            f"--resume {resume}: that is a {run_task} run; continue it with its own recipe "
            f"(recipes/{RECIPES.get(str(run_task), run_task)}.py --resume {resume})"
        )
    return saved["flags"]


RECIPES = {"textgen": "textgen", "translation": "translate", "captioning": "caption"}  # a task's recipe


def _fits(value: Any, action: argparse.Action, default: Any) -> bool:
    """Whether a value read from JSON can stand for the flag `action` (whose parser default is `default`).
    null passes: it is how an unset flag is saved, and a run of another recipe may hold it (that recipe's
    checkpoint is refused by name later)."""
    if value is None:
        return True
    if action.choices is not None:
        return value in action.choices
    kinds: dict[Any, type | tuple[type, ...]] = {int: int, float: (int, float), yes_no: bool}
    kind = kinds.get(action.type)
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
        typed = dict(dest=field.name, type=_flag_type(hints[field.name]), default=default, choices=choices)
        section.add_argument(flag_name(field.name), help=f"{text} (default: {default})".lstrip(), **typed)


def config_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build the dataclass `cls` from parsed flags added by `add_config_flags`."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    values.update(overrides)
    config = cls(**values)
    check_config(config)
    return config
