"""Files in and out, the one place every command's paths go through: what is wrong with a path as one line,
text as it arrives (byte-order mark dropped, CRLF read as LF, invalid UTF-8 named by file and line), the
standard input and pipes where a stream makes sense, and files written atomically with ordinary permissions."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import stat
import sys
import tempfile
import typing
from collections.abc import Iterator
from pathlib import Path

from core.errors import UserError

STDIN = ("-", "/dev/stdin")  # the names that read the standard input
BOM = "\ufeff"


def _shown(path: str | Path) -> str:
    return "the standard input" if str(path) in STDIN else str(path)


def check_path(path: str | Path | None, kind: str = "file", stream: bool = False, flag: str = "") -> Path:
    """An existing file (kind "file") or folder ("folder") to read, or a UserError saying exactly what is wrong
    with it: an empty name, a folder where a file belongs or a file where a folder does, a missing or unreadable
    path, a symbolic link that loops. `stream`: the standard input (`-`) and pipes (`<(...)`) will do."""
    where = f"{flag} " if flag else ""
    if path is None or not str(path).strip():
        raise UserError(f"{where}is empty; name a {kind}")
    if stream and str(path) in STDIN:
        return Path(str(path))
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise UserError(f"{where}{path} {_reason(err, kind)}") from None
    if kind == "file" and stat.S_ISDIR(mode):
        raise UserError(f"{where}{path} is a folder; a file is needed")
    if kind == "folder" and not stat.S_ISDIR(mode):
        raise UserError(f"{where}{path} is a file, not a folder")
    if kind == "file" and not stat.S_ISREG(mode) and not (stream and (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode))):
        raise UserError(f"{where}{path} is not a regular file" + ("" if stream else " (a pipe cannot be read twice)"))
    if not os.access(path, os.R_OK | (os.X_OK if kind == "folder" else 0)):
        raise UserError(f"{where}{path} cannot be read (permission denied)")
    return Path(path)


def _reason(err: OSError, kind: str) -> str:
    """Why a path cannot be opened, in words."""
    if err.errno == errno.ELOOP:
        return "is a symbolic link that loops back on itself"
    if err.errno == errno.ENOTDIR:
        return "cannot exist: a part of it is a file, not a folder"
    if err.errno == errno.ENOENT:
        return "does not exist" if kind == "file" else "does not exist (no such folder)"
    if err.errno == errno.EACCES:
        return "cannot be read (permission denied)"
    return f"cannot be read ({err.strerror or err})"


def check_output(path: str | Path | None, kind: str = "file", suffix: str = "", flag: str = "") -> Path:
    """A file or folder to write: an empty name, a folder where a file goes (or the reverse), a parent that is a
    file and a wrong suffix are refused before any work is done."""
    where = f"{flag} " if flag else ""
    if path is None or not str(path).strip():
        raise UserError(f"{where}is empty; name a {kind}")
    path = Path(path)
    if kind == "file" and path.is_dir():
        raise UserError(f"{where}{path} is a folder; name a file to write")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise UserError(f"{where}{path} is a file, not a folder")
    if suffix and path.suffix.lower() != suffix:
        raise UserError(f"{where}{path} does not end in {suffix}; the file is written as {suffix[1:].upper()}")
    for parent in path.parents:  # the nearest that exists must be a folder we may write in
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise UserError(f"{where}{path} cannot be written: {parent} is a file, not a folder")
            break
    return path


def read_bytes(path: str | Path, flag: str = "") -> bytes:
    """The bytes of a file, of a pipe, or of the standard input (`-`)."""
    if str(path) in STDIN:
        return _stdin().read()
    check_path(path, stream=True, flag=flag)
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as err:
        raise UserError(f"{path} {_reason(err, 'file')}") from None


def decode_text(data: bytes, name: str | Path, first_line: int = 1) -> str:
    """UTF-8 bytes as text with LF line ends and no byte-order mark; invalid UTF-8 is one line naming the file
    (`name`) and the line (counted from `first_line`)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = first_line + data[: err.start].count(b"\n")
        where = f"line {line} of the standard input" if str(name) in STDIN else f"{name}:{line}"
        raise UserError(f"{where}: byte {data[err.start]:#04x} is not UTF-8 (convert the text to UTF-8)") from None
    return text.removeprefix(BOM).replace("\r\n", "\n")


def read_text(path: str | Path, flag: str = "") -> str:
    """A UTF-8 text file (or pipe, or `-`) that holds something besides white space."""
    text = decode_text(read_bytes(path, flag), path)
    if not text.strip():
        raise UserError(f"{_shown(path)} is empty")
    return text


def lines_of(text: str) -> list[str]:
    """Lines without their line ends; a final newline does not start another line."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_lines(path: str | Path, flag: str = "") -> list[str]:
    """The lines of a UTF-8 text file; a file with none is refused, blank lines count (an output of empty lines
    is still an output)."""
    lines = lines_of(decode_text(read_bytes(path, flag), path))
    if not lines:
        raise UserError(f"{_shown(path)} is empty")
    return lines


def stdin_lines(size: int) -> Iterator[list[str]]:
    """The standard input's lines, read as every text input is, in lists of up to `size` lines, each as soon as it
    is full or the input ends (bounded memory however long the input); from a terminal, each line as it is typed."""
    stream = _stdin()
    size = 1 if sys.stdin.isatty() else size
    lines: list[str] = []
    for number, raw in enumerate(stream, start=1):
        try:
            line = decode_text(raw, "-", number).removesuffix("\n")
        except UserError:
            if lines:  # the lines before the bad one are answered first
                yield lines
            raise
        lines.append(line.removeprefix(BOM) if number > 1 else line)
        if len(lines) == size:
            yield lines
            lines = []
    if lines:
        yield lines


def _stdin() -> typing.BinaryIO:
    """The standard input as bytes (a test's text stand-in encoded as UTF-8); a closed one is refused."""
    if sys.stdin is None or sys.stdin.closed:
        raise UserError("the standard input is closed; give a file instead of -")
    buffer = getattr(sys.stdin, "buffer", None)
    return buffer if buffer is not None else io.BytesIO(sys.stdin.read().encode("utf-8"))


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cannot_write(path: Path, err: OSError) -> UserError:
    """A failed write as one line: the file, the cause, and that the file is as it was before."""
    return UserError(f"cannot write {path}: {err.strerror or err} (any earlier {path.name} is left as it was)")


def _new_file_mode(path: Path) -> int:
    """An existing file keeps its permissions; a new one gets what the umask leaves of 0666, as open() gives."""
    with contextlib.suppress(OSError):
        return stat.S_IMODE(os.stat(path).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[typing.BinaryIO]:
    """A binary file that replaces `path` only once it is written whole (temp file, fsync, rename, fsync of the
    folder): a crash or a full disk midway leaves the old file as it was. A device or pipe (`/dev/stdout`) is
    written directly. A failed write is a UserError naming the file and the cause."""
    if path.exists() and not path.is_file() and not path.is_dir():
        try:
            with open(path, "wb") as f:
                yield f
        except OSError as err:
            raise cannot_write(path, err) from None
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise cannot_write(path, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), _new_file_mode(path))
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _sync_folder(path.parent)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, Exception) and (failure := _write_failure(err)) is not None:
            raise cannot_write(path, failure) from None
        raise


def _write_failure(err: BaseException | None) -> OSError | None:
    """The OSError behind a failed write: the error itself, or the one a library's clean-up error replaced
    (torch.save's zip writer raises a RuntimeError over a full disk's)."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


def _sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (some file systems cannot sync a folder; they keep it anyway)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_text(path: Path, text: str) -> Path:
    """Write a UTF-8 text file atomically (`atomic_file`)."""
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))
    return path
