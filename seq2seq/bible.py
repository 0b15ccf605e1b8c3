"""A second parallel corpus: the verse-aligned public-domain Bibles in Debian's SWORD packages.

Spanish (Reina-Valera 1909, `sword-text-sparv`) -> English (King James Version, `sword-text-kjv`), ~31k
verse pairs. Both packages are fetched with `apt-get download` and unpacked without installing anything; the
`pysword` package reads the SWORD modules. Verses are paired by reference (book, chapter, verse) in the KJV
versification both modules use, cleaned (paragraph marks dropped, whitespace collapsed), pairs with an
empty side dropped, and split by the same sha256 rule as the Ding corpus (on the Spanish verse).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from core.datasets import apt_download, cached, deb_tar
from core.errors import UserError
from seq2seq.data import LOCAL_FLAG, Pair, hash_split, read_splits, write_splits

PACKAGES = {"es": ("sword-text-sparv", "2.60-1"), "en": ("sword-text-kjv", "14.3-1")}  # pinned, like Ding's
VerseKey = tuple[str, int, int]


def clean_verse(text: str) -> str:
    """A verse as plain text: no paragraph marks (pilcrows), single spaces, no leading or trailing space."""
    return re.sub(r"\s+", " ", text.replace("\u00b6", " ")).strip()


def align_verses(source: dict[VerseKey, str], target: dict[VerseKey, str]) -> list[Pair]:
    """(source, target) pairs of the verses both texts have, in the source's order, cleaned; empty dropped."""
    pairs = []
    for key, text in source.items():
        src, tgt = clean_verse(text), clean_verse(target.get(key, ""))
        if src and tgt:
            pairs.append((src, tgt))
    return pairs


def _read_module(root: Path) -> dict[VerseKey, str]:
    """Every verse of the one Bible module under `root` (an unpacked sword-text-* package), by reference."""
    try:
        from pysword.modules import SwordModules
    except ImportError:
        raise UserError("reading the Bible corpus needs the pysword package (pip install pysword)") from None
    modules = SwordModules(str(root / "usr/share/sword"))
    names = list(modules.parse_modules())
    if len(names) != 1:
        raise UserError(f"expected one SWORD module in {root}, found {names}")
    bible = modules.get_bible_from_module(names[0])
    verses = {}
    for books in bible.get_structure().get_books().values():
        for book in books:
            for chapter, length in enumerate(book.chapter_lengths, start=1):
                for verse in range(1, length + 1):
                    verses[(book.name, chapter, verse)] = bible.get(
                        books=[book.name], chapters=[chapter], verses=[verse], clean=True
                    )
    return verses


def _unpacked(package: str, version: str, folder: Path) -> Path:
    """Download and unpack one package under folder/package."""
    deb = apt_download(folder / "download", package, version, "a Bible text", LOCAL_FLAG)
    root = folder / package
    with deb_tar(deb, LOCAL_FLAG) as tar:
        tar.extractall(root, filter="data")
    return root


def _build_bible(folder: Path) -> None:
    verses = {lang: _read_module(_unpacked(*PACKAGES[lang], folder)) for lang in ("es", "en")}
    pairs = align_verses(verses["es"], verses["en"])
    splits = hash_split(pairs)
    write_splits(folder, splits, ("es", "en"))
    for package, _ in PACKAGES.values():
        copyright_file = folder / package / "usr/share/doc" / package / "copyright"
        (folder / f"COPYRIGHT.{package}.txt").write_text(copyright_file.read_text(encoding="utf-8"), encoding="utf-8")
    counts = ", ".join(f"{name} {len(split):,}" for name, split in splits.items())
    (folder / "SOURCE.txt").write_text(
        "source: Debian packages "
        + ", ".join(f"{p} {v}" for p, v in PACKAGES.values())
        + " (apt-get download), read with pysword\n"
        f"pairs: {len(pairs):,} verses present in both (seq2seq/bible.py)\n"
        f"split by sha256 of the Spanish verse: {counts}\n",
        encoding="utf-8",
    )
    for leftover in [package for package, _ in PACKAGES.values()] + ["download"]:
        shutil.rmtree(folder / leftover)


def bible_pairs(data_dir: str | Path | None = None) -> dict[str, list[Pair]]:
    """Spanish-English Bible verse pairs as {"train", "valid", "test"} lists of (spanish, english)."""
    return read_splits(
        cached("bible-es-en-" + "-".join(v for _, v in PACKAGES.values()), _build_bible, data_dir), ("es", "en")
    )
