"""How every command line ends: the main wrapper that turns bad input, a full disk or too little memory into one
`error:` line and exit status 2, and an interrupted run into status 130; and a standard output that names itself
when a write to it fails; and the malloc settings the decoding command lines run with."""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch

from core import distributed
from core.errors import INTERRUPTED, Interrupted, UserError


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
        if (line := error_line(err, memory_flags)) is None:
            raise  # a bug: its traceback is wanted
        print(f"error: {line}", file=sys.stderr)
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


def keep_freed_memory() -> bool:
    """Set glibc's malloc to keep freed blocks of up to 32 MB for reuse, for the whole process; True when it took
    effect. Every search step allocates and frees a few (rows x vocabulary) tensors; by default glibc hands
    blocks this large back to the kernel and the next step faults fresh pages in. The heap may then keep up to
    256 MB free. Nothing happens without glibc (macOS, Windows, musl)."""
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return False
    except (AttributeError, OSError, ValueError):  # no confstr (Windows), or not glibc
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # M_MMAP_THRESHOLD (-3), M_TRIM_THRESHOLD (-1) from malloc.h; a set threshold also stops glibc moving it
    return bool(mallopt(-3, 32 << 20) and mallopt(-1, 256 << 20))
