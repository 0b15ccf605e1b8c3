"""Errors in what the user gave, and the range, choice and device checks that raise them (a leaf: imports no core
module)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

MAX_SEED = 2**32 - 1  # the seeds every command takes (an ensemble's members use seed + k)
INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C or SIGTERM (its state saved), as shells use


class UserError(ValueError):
    """A problem with the user's input; command lines print it as one line, with no traceback."""


class Interrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM after saving its state; its message says how to go on. Command lines
    exit with status INTERRUPTED, so that `train && next-step` stops too."""


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise a UserError naming `name`, the value and the allowed range when value falls outside it (NaN,
    infinities and integers beyond 64 bits always do: every comparison with NaN is false)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise UserError(f"{name} = {value!r} is not a number")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    unusable = abs(value) > 2**63 - 1 if isinstance(value, numbers.Integral) else not math.isfinite(value)  # int64
    if too_low or too_high or unusable:
        left = "(-inf" if low is None else ("(" if low_open else "[") + _number(low)
        right = "inf)" if high is None else _number(high) + (")" if high_open else "]")
        raise UserError(f"{name} = {_number(value)} is out of range; allowed: {left}, {right}")


def check_int(name: str, value: Any, low: int | None = None, high: int | None = None) -> None:
    """A TypeError naming `name` when value is not an integer, a UserError when it falls outside [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    check_range(name, int(value), low, high)


def check_choice(name: str, value: Any, choices: list) -> None:
    """Raise a UserError naming `name`, the value and the choices when value is not one of them."""
    if value not in choices:
        raise UserError(f"{name} {value!r} is not one of {', '.join(map(str, choices))}")


def check_device(name: str, value: Any) -> torch.device:
    """`value` (a torch.device, or auto, cpu, cuda, cuda:N) as a device of this machine, "auto" being CUDA where
    there is one, else the CPU; a UserError naming `name` for anything else or a GPU that is not here."""
    if value == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(value)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"{name} {value!r} is not a device this toolkit runs on; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise UserError(f"{name} {value!r}: no such GPU here ({torch.cuda.device_count()} visible); use auto or cpu")
    return device


def first_line(err: BaseException, limit: int = 160) -> str:
    """An error from deep inside a library, cut to one short line for a message that names the file."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:limit]


def _number(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def flag_name(field: str) -> str:
    """A config field as the flag that sets it: `hidden_dim` -> `--hidden-dim`."""
    return "--" + field.replace("_", "-")


def check_config(config: Any) -> None:
    """Check a config dataclass's fields against its RANGES (field -> (low, high, low_open, high_open), each bound
    None when open-ended), its CHOICES (field -> allowed values) and its ORDER ((low, high) pairs of fields: low
    may not exceed high); the error names the field as its flag."""
    for name, bounds in getattr(type(config), "RANGES", {}).items():
        check_range(flag_name(name), getattr(config, name), *bounds)
    for name, choices in getattr(type(config), "CHOICES", {}).items():
        check_choice(flag_name(name), getattr(config, name), choices)
    for low, high in getattr(type(config), "ORDER", ()):  # fields whose values must not cross
        if getattr(config, low) > getattr(config, high):
            raise UserError(
                f"{flag_name(low)} {_number(getattr(config, low))} is above {flag_name(high)} "
                f"{_number(getattr(config, high))}; it may be at most that"
            )
