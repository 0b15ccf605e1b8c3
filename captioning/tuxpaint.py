"""The default captioning data: Tux Paint's stamps (Debian `tuxpaint-stamps-default`, docs/data.md), pictures of things
with a one-line description in English and up to 77 other languages.

Fetched with `apt-get download`, unpacked without installing anything, and prepared once into the data cache:
every picture as an RGB PNG composited on white (the SVG-only ones rendered by `rsvg-convert`, the machine's or
Debian's `librsvg2-bin` unpacked beside them) under images/, and captions/<lang>.tsv per language in the TSV
format users give their own data in. The split hashes each picture's path with its trailing number removed, so
that `frog` and `frog-1` share a split.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import tarfile
import tempfile
import warnings
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from captioning.data import ImageCaptions, Splits, hash_split, read_captions_tsv
from captioning.images import to_rgb
from core.datasets import apt_download, cached, deb_tar, member_bytes
from core.errors import UserError

TUX_PACKAGE = "tuxpaint-stamps-default"
TUX_VERSION = "2022.06.04-1"  # pinned: other versions hold other pictures, so the splits would differ
STAMPS = "usr/share/tuxpaint/stamps/"
COPYRIGHT = "usr/share/doc/tuxpaint-stamps-default/copyright"
RSVG_PACKAGE = "librsvg2-bin"
RSVG_VERSION = "2.54.7+dfsg-1~deb12u1"  # Debian 12's, when dpkg cannot say which librsvg the machine has
SVG_SIZE = 256
LOCAL_FLAG = "--corpus CAPTIONS.tsv --images FOLDER"
SKIPPED = "skipped-svg.txt"  # lists the SVG-only pictures a build without a renderer left out

_TRANSLATION = re.compile(r"([A-Za-z_@]+)\.utf8=(.*)")


def split_key(relative: str) -> str:
    """A picture's path relative to stamps/ without its extension and a trailing -N/_N (`frog-1.png` -> `frog`)."""
    return re.sub(r"[-_]\d+$", "", relative.rsplit(".", 1)[0])


def parse_description(text: str) -> dict[str, str]:
    """A stamp's .txt: the first line is English, later lines `xx.utf8=...` translations -> {language: caption}."""
    lines = text.split("\n")
    captions = {"en": lines[0].strip()}
    for line in lines[1:]:
        match = _TRANSLATION.fullmatch(line.strip())
        if match and match[2].strip():
            captions.setdefault(match[1], match[2].strip())
    return {lang: caption for lang, caption in captions.items() if caption}


def tuxpaint(lang: str = "en", data_dir: str | Path | None = None) -> Splits:
    """The Tux Paint pictures with their `lang` captions (en, de, fr, es, ...: the code before `.utf8` in the
    stamps' files), split train/valid/test; pictures without a `lang` caption are left out, with a warning."""
    folder = cached(f"tuxpaint-stamps-{TUX_VERSION}", _build, data_dir)
    captions = folder / "captions" / f"{lang}.tsv"
    if not captions.is_file():
        langs = sorted(p.stem for p in (folder / "captions").glob("*.tsv"))
        raise UserError(f"the Tux Paint stamps have no {lang!r} captions; languages: {', '.join(langs)}")
    if (folder / SKIPPED).exists():
        skipped = len((folder / SKIPPED).read_text(encoding="utf-8").split())
        warnings.warn(
            f"the Tux Paint data in {folder} lacks {skipped} SVG-only pictures (no SVG renderer when it "
            "was prepared); delete that folder to prepare it again"
        )
    images = folder / "images"
    records = read_captions_tsv(captions, images)
    total = (folder / "captions" / "en.tsv").read_text(encoding="utf-8").count("\n")  # every picture has English
    if len(records) < total:
        warnings.warn(f"{total - len(records)} of {total} Tux Paint pictures have no {lang} caption; left out")
    return hash_split(records, key=lambda r: split_key(r.image.relative_to(images).as_posix()))


def _build(folder: Path) -> None:
    """Fetch the stamps and prepare pictures and captions in `folder` (a temporary folder `cached` renames)."""
    download = folder / "download"
    deb = apt_download(download, TUX_PACKAGE, TUX_VERSION, "the Tux Paint stamps", LOCAL_FLAG)
    with deb_tar(deb, LOCAL_FLAG) as tar:
        files = {m.name.removeprefix("./"): m for m in tar.getmembers() if m.isfile()}

        def read(name: str) -> bytes:
            return member_bytes(tar, files[name])

        stamps = _stamps(files)
        svg_only = [rel for rel, picture in stamps.items() if picture.endswith(".svg")]
        render = _svg_renderer(download) if svg_only else None
        if svg_only and render is None:
            warnings.warn(
                f"no SVG renderer: using the {len(stamps) - len(svg_only)} PNG pictures only, "
                f"{len(svg_only)} SVG-only pictures skipped"
            )
            (folder / SKIPPED).write_text("".join(rel + "\n" for rel in svg_only), encoding="utf-8")
        by_lang: dict[str, list[str]] = {}
        for rel, picture in stamps.items():
            out = folder / "images" / f"{rel}.png"
            if not _prepare(read(picture), picture, out, render):
                continue
            for lang, caption in parse_description(read(STAMPS + rel + ".txt").decode("utf-8")).items():
                by_lang.setdefault(lang, []).append(f"{rel}.png\t{caption}\n")
        (folder / "COPYRIGHT.txt").write_bytes(read(COPYRIGHT))
    (folder / "captions").mkdir()
    for lang, lines in by_lang.items():
        (folder / "captions" / f"{lang}.tsv").write_text("".join(lines), encoding="utf-8")
    _write_source(folder, len(stamps), len(svg_only), render is not None, by_lang)
    shutil.rmtree(download)


def _stamps(files: dict[str, tarfile.TarInfo]) -> dict[str, str]:
    """Each described picture's path relative to stamps/ (no extension) -> its PNG, else its SVG member."""
    stamps = {}
    for name in sorted(files):
        if name.startswith(STAMPS) and name.endswith(".txt"):
            base = name.removesuffix(".txt")
            picture = next((base + ext for ext in (".png", ".svg") if base + ext in files), None)
            if picture:  # two descriptions have no picture
                stamps[base.removeprefix(STAMPS)] = picture
    return stamps


def _prepare(data: bytes, name: str, out: Path, render: list[str] | None) -> bool:
    """Write the picture `name` (its bytes) to `out` as an RGB PNG on white; False when it cannot be."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if name.endswith(".svg"):
        if render is None:
            return False
        rendered = _render_svg(data, render)
        if rendered is None:
            warnings.warn(f"rsvg-convert could not render {name}; left out")
            return False
        data = rendered
    try:
        with Image.open(io.BytesIO(data)) as picture:
            to_rgb(picture).save(out)
    except (UnidentifiedImageError, OSError) as err:
        warnings.warn(f"{name} cannot be read ({err}); left out")
        return False
    return True


def _render_svg(data: bytes, render: list[str]) -> bytes | None:
    """An SVG's bytes -> PNG bytes at most SVG_SIZE square, aspect kept; None when rsvg-convert fails."""
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "in.svg", Path(tmp) / "out.png"
        source.write_bytes(data)
        result = subprocess.run(
            render + ["-w", str(SVG_SIZE), "-h", str(SVG_SIZE), "--keep-aspect-ratio", "-o", str(target), str(source)],
            capture_output=True,
            timeout=60,
        )
        return target.read_bytes() if result.returncode == 0 and target.is_file() else None


def _svg_renderer(download: Path) -> list[str] | None:
    """The rsvg-convert command: the machine's, else the one in Debian's librsvg2-bin (fetched and unpacked into
    `download`, using the machine's librsvg); None, with a warning saying why, when neither runs."""
    found = shutil.which("rsvg-convert")
    if found is None:
        try:
            deb = apt_download(download / "rsvg", RSVG_PACKAGE, _librsvg_version(), "the SVG renderer", LOCAL_FLAG)
            with deb_tar(deb, LOCAL_FLAG) as tar:
                binary = member_bytes(tar, next(m for m in tar.getmembers() if m.name.endswith("bin/rsvg-convert")))
                target = download / "rsvg" / "rsvg-convert"
                target.write_bytes(binary)
        except (UserError, StopIteration, OSError) as err:
            warnings.warn(f"could not get rsvg-convert ({err or 'no rsvg-convert in the package'})")
            return None
        target.chmod(0o755)
        found = str(target)
    try:
        probe = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as err:
        warnings.warn(f"rsvg-convert does not run here ({err})")
        return None
    if probe.returncode != 0:
        warnings.warn(f"rsvg-convert does not run here ({(probe.stderr.strip() or 'no output').splitlines()[-1]})")
        return None
    return [found]


def _librsvg_version() -> str:
    """The installed librsvg's Debian version (its rsvg-convert matches it best), else RSVG_VERSION."""
    if shutil.which("dpkg-query"):
        result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "librsvg2-2"], capture_output=True, text=True)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
    return RSVG_VERSION


def _write_source(folder: Path, pictures: int, svg_only: int, rendered: bool, by_lang: dict[str, list[str]]) -> None:
    en = len(by_lang.get("en", []))
    coverage = ", ".join(f"{lang} {len(by_lang.get(lang, []))}" for lang in ("de", "fr", "es"))
    splits = hash_split(
        (ImageCaptions(Path(line.split("\t")[0]), []) for line in by_lang.get("en", [])),
        key=lambda r: split_key(r.image.as_posix()),
    )
    (folder / "SOURCE.txt").write_text(
        f"source: Debian package {TUX_PACKAGE} {TUX_VERSION} (apt-get download), pictures and descriptions under "
        f"{STAMPS}\nlicence: GPL-2 (COPYRIGHT.txt)\n"
        f"pictures: {en} of {pictures} described ({pictures - svg_only} PNG, {svg_only} SVG-only"
        f"{f', rendered {SVG_SIZE} px by rsvg-convert' if rendered else ': skipped, no SVG renderer'}), "
        "composited on white as RGB PNG under images/\n"
        f"captions: captions/<lang>.tsv, {len(by_lang)} languages; pictures with de, fr, es captions: {coverage}\n"
        f"split by sha256 of the path without its trailing number: "
        + ", ".join(f"{name} {len(split)}" for name, split in splits.items())
        + "\n",
        encoding="utf-8",
    )
