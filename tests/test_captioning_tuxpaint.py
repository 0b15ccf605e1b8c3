"""The default data, offline: a fake apt-get hands out a small Tux Paint .deb and a librsvg2-bin .deb whose
rsvg-convert is a stand-in; docs/data.md's rules (pictures, captions, languages, split) are checked on them."""

from __future__ import annotations

import hashlib
import io
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from captioning.tuxpaint import parse_description, split_key, tuxpaint
from core.errors import UserError

STAMPS = "usr/share/tuxpaint/stamps/"


def test_split_key_drops_extension_and_trailing_number():
    assert split_key("animals/amphibians/frog-1.png") == "animals/amphibians/frog"
    assert split_key("animals/amphibians/frog.png") == "animals/amphibians/frog"
    assert split_key("food/fruit/apple_core_01.svg") == "food/fruit/apple_core"
    assert split_key("symbols/money/gbp_1_pound.png") == "symbols/money/gbp_1_pound"
    assert split_key("people/two-3-4.png") == "people/two-3"


def test_parse_description():
    text = "A frog. \nde.utf8=Ein Frosch.\nca@valencia.utf8=Una granota.\nes.utf8=\npt_BR.utf8= Um sapo.\nnoise\n"
    assert parse_description(text) == {
        "en": "A frog.",
        "de": "Ein Frosch.",
        "ca@valencia": "Una granota.",
        "pt_BR": "Um sapo.",
    }  # an empty translation is no translation


def _png(mode="RGBA", size=(6, 4)) -> bytes:
    picture = Image.new(mode, size, (0, 0, 0, 0) if mode == "RGBA" else (0, 0, 255))
    picture.paste((255, 0, 0, 255) if mode == "RGBA" else (255, 0, 0), (0, 0, 2, 2))  # red corner, rest clear
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    return buffer.getvalue()


def _stamp_files() -> dict[str, bytes]:
    files = {
        STAMPS + "animals/frog.png": _png(),
        STAMPS + "animals/frog.txt": b"A frog.\nde.utf8=Ein Frosch.\n",
        STAMPS + "animals/frog-1.png": _png(),
        STAMPS + "animals/frog-1.txt": b"A frog.\nfr.utf8=Une grenouille.\n",
        STAMPS + "animals/frog.ogg": b"OggS not a picture",
        STAMPS + "nature/sun.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>",
        STAMPS + "nature/sun.txt": b"The sun.\nde.utf8=Die Sonne.\n",
        STAMPS + "town/both.png": _png("RGB"),
        STAMPS + "town/both.svg": b"<svg/>",
        STAMPS + "town/both.txt": b"A house.\nde.utf8=Ein Haus.\n",
        STAMPS + "seasonal/gift.txt": b"A gift.\n",  # no picture
        "usr/share/doc/tuxpaint-stamps-default/copyright": b"GPL-2\n",
    }
    for i in range(30):
        files[STAMPS + f"things/thing{i}x.png"] = _png("RGB", (3, 3))
        files[STAMPS + f"things/thing{i}x.txt"] = f"Thing {i}.\nde.utf8=Ding {i}.\n".encode()
    return files


FAKE_RSVG = """#!{python}
import sys
from PIL import Image
args = sys.argv[1:]
if args == ["--version"]:
    print("rsvg-convert version 0 (test stand-in)")
    sys.exit(0)
width = int(args[args.index("-w") + 1])
picture = Image.new("RGBA", (width, width // 2), (0, 0, 0, 0))
picture.paste((0, 128, 0, 255), (0, 0, 4, 4))
picture.save(args[args.index("-o") + 1])
"""

FAKE_APT = """#!{python}
# A stand-in for apt-get: hands out the .debs in the state folder, except those listed as failing.
import shutil, sys
from pathlib import Path
state = Path({state!r})
with open(state / "calls.log", "a") as log:
    log.write(" ".join(sys.argv[1:]) + "\\n")
if sys.argv[1] == "download":
    package = sys.argv[2].split("=")[0]
    if package in (state / "failing").read_text().split():
        sys.exit("E: Failed to fetch http://deb.debian.org/debian " + package + ": network unreachable")
    shutil.copy(next(state.glob(package + "_*.deb")), ".")
"""


def _tar_xz(files: dict[str, bytes], modes: dict[str, int] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo("./" + name)
            info.size, info.mode = len(data), (modes or {}).get(name, 0o644)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _deb(path: Path, files: dict[str, bytes]) -> None:
    """A minimal .deb: an ar archive of debian-binary, control.tar.xz and data.tar.xz."""
    members = {
        "debian-binary": b"2.0\n",
        "control.tar.xz": _tar_xz({"control": b"Package: x\n"}),
        "data.tar.xz": _tar_xz(files),
    }
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode("ascii") + data
        out += b"\n" * (len(data) % 2)
    path.write_bytes(bytes(out))


def _fake_apt(tmp_path: Path, monkeypatch, failing: str = "") -> Path:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    (state / "failing").write_text(failing)
    _deb(state / "tuxpaint-stamps-default_2022.06.04-1_all.deb", _stamp_files())
    _deb(
        state / "librsvg2-bin_2.54.7_amd64.deb",
        {"usr/bin/rsvg-convert": FAKE_RSVG.format(python=sys.executable).encode()},
    )
    (bin_dir / "apt-get").write_text(FAKE_APT.format(python=sys.executable, state=str(state)))
    (bin_dir / "apt-get").chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))  # no real apt-get, dpkg-deb, dpkg-query or rsvg-convert
    return state


def _bucket(key: str) -> int:
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16) % 100


def test_fetches_prepares_and_splits_as_data_md_says(tmp_path, monkeypatch):
    state = _fake_apt(tmp_path, monkeypatch)
    splits = tuxpaint(data_dir=tmp_path / "data")
    folder = tmp_path / "data" / "tuxpaint-stamps-2022.06.04-1"
    records = {r.image.relative_to(folder / "images").as_posix(): r.captions for s in splits.values() for r in s}
    assert len(records) == 34 and "seasonal/gift.png" not in records  # 33 PNG + 1 SVG-only; gift has no picture
    assert records["animals/frog-1.png"] == ["A frog."] and records["nature/sun.png"] == ["The sun."]
    for name, low, high in (("test", 0, 10), ("valid", 10, 20), ("train", 20, 100)):
        assert splits[name]
        assert all(
            low <= _bucket(split_key(r.image.relative_to(folder / "images").as_posix())) < high for r in splits[name]
        )
    where = {r.image.name: name for name, split in splits.items() for r in split}
    assert where["frog.png"] == where["frog-1.png"]

    frog = Image.open(folder / "images" / "animals" / "frog.png")
    assert frog.mode == "RGB" and frog.getpixel((0, 0)) == (255, 0, 0) and frog.getpixel((5, 3)) == (255, 255, 255)
    sun = Image.open(folder / "images" / "nature" / "sun.png")  # rendered 256 wide, composited on white
    assert sun.mode == "RGB" and sun.size == (256, 128) and sun.getpixel((0, 0)) == (0, 128, 0)
    assert sun.getpixel((100, 100)) == (255, 255, 255)
    assert Image.open(folder / "images" / "town" / "both.png").size == (6, 4)  # the PNG, not the SVG

    source = (folder / "SOURCE.txt").read_text()
    assert "tuxpaint-stamps-default 2022.06.04-1" in source and "GPL-2" in source
    assert "34 of 34 described (33 PNG, 1 SVG-only, rendered 256 px" in source
    assert sorted(p.name for p in folder.iterdir()) == ["COPYRIGHT.txt", "SOURCE.txt", "captions", "images"]
    assert sorted(p.name for p in (folder / "captions").iterdir()) == ["de.tsv", "en.tsv", "fr.tsv"]
    assert (state / "calls.log").read_text().split("\n")[:2] == [
        "download tuxpaint-stamps-default=2022.06.04-1",
        "download librsvg2-bin=2.54.7+dfsg-1~deb12u1",
    ]

    (tmp_path / "bin" / "apt-get").unlink()  # the cache is used: nothing is fetched again
    with pytest.warns(UserWarning, match="1 of 34 Tux Paint pictures have no de caption; left out"):
        german = tuxpaint("de", data_dir=tmp_path / "data")
    captions = {r.image.name: r.captions for s in german.values() for r in s}
    assert len(captions) == 33 and captions["sun.png"] == ["Die Sonne."] and "frog-1.png" not in captions
    assert all(
        name in where and where[name] == split for split in german for name in (r.image.name for r in german[split])
    )  # a picture keeps its split in every language
    with pytest.raises(UserError, match="no 'xx' captions; languages: de, en, fr"):
        tuxpaint("xx", data_dir=tmp_path / "data")


def test_without_a_renderer_the_pngs_are_used_and_the_skip_is_said(tmp_path, monkeypatch):
    _fake_apt(tmp_path, monkeypatch, failing="librsvg2-bin")
    with pytest.warns(UserWarning) as caught:
        splits = tuxpaint(data_dir=tmp_path / "data")
    messages = [str(w.message) for w in caught]
    assert any("no SVG renderer: using the 33 PNG pictures only, 1 SVG-only pictures skipped" in m for m in messages)
    assert any("network unreachable" in m for m in messages)  # why there is no renderer
    assert sum(map(len, splits.values())) == 33
    with pytest.warns(UserWarning, match="lacks 1 SVG-only pictures"):
        tuxpaint(data_dir=tmp_path / "data")


def test_a_failed_fetch_is_one_line_and_leaves_no_cache(tmp_path, monkeypatch):
    _fake_apt(tmp_path, monkeypatch, failing="tuxpaint-stamps-default")
    with pytest.raises(UserError) as err:
        tuxpaint(data_dir=tmp_path / "data")
    message = str(err.value)
    assert (
        "\n" not in message and "network unreachable" in message and "--corpus CAPTIONS.tsv --images FOLDER" in message
    )
    assert list((tmp_path / "data").iterdir()) == []
