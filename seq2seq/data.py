"""Parallel-corpus data: the Ding German-English example sentences (docs/data.md), TSV pairs, aligned files.

The default corpus comes from Debian's `trans-de-en` package, fetched with `apt-get download`, unpacked
without installing anything, reduced to whole example sentences and split by a hash of the German side, so
that every machine gets the same train/valid/test sentences. Users with their own data pass a TSV file or
two aligned files instead.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, TypeVar

from tqdm import tqdm

from core import datasets
from core.datasets import SPLITS, apt_download, cached, deb_tar, member_bytes
from core.errors import UserError
from core.files import BOM, STDIN, check_path, decode_text, lines_of, read_bytes, read_text

DING_PACKAGE = "trans-de-en"
DING_VERSION = "1.9-6"  # pinned: other versions hold other sentences, so the splits would differ
DING_DICTIONARY = "usr/share/trans/de-en"
DING_COPYRIGHT = "usr/share/doc/trans-de-en/copyright"
LOCAL_FLAG = "--corpus PAIRS.tsv"

END_PUNCTUATION = (".", "?", "!")
FORBIDDEN = frozenset(";/[]{}")  # dictionary notation (alternatives, usage labels), not sentence text
MIN_WORDS = 4
# The most validation and test pairs a run keeps (--max-valid-pairs, --max-test-pairs): above the Bible's 2,147
# and 2,115 (the Ding corpus has 979 and 1,014), so that both default corpora keep their splits whole.
MAX_VALID_PAIRS = MAX_TEST_PAIRS = 2_500
# The most training pairs the tokenizer learns from (--tokenizer-pairs): above the Bible's 26,822, so that the
# default corpora's tokenizers learn from every training pair, as before.
TOKENIZER_PAIRS = 30_000
READ_BLOCK = 1 << 24  # bytes read at a time from a TSV file (16 MB)

Pair = tuple[str, str]
T = TypeVar("T")


# ---- extraction and split: pure functions, exactly as docs/data.md states them ----


def _is_sentence(text: str) -> bool:
    return text.endswith(END_PUNCTUATION) and len(text.split()) >= MIN_WORDS and not FORBIDDEN.intersection(text)


def extract_ding_pairs(lines: Iterable[str]) -> list[Pair]:
    """Whole example sentences (german, english) from Ding dictionary lines, first occurrence of each pair."""
    pairs: list[Pair] = []
    seen: set[Pair] = set()
    for line in lines:
        if line.startswith("#") or "::" not in line:
            continue
        german, english = line.split("::", 1)
        de_parts = [p.strip() for p in german.split("|")]
        en_parts = [p.strip() for p in english.split("|")]
        if len(de_parts) != len(en_parts):  # the parts would not line up
            continue
        for pair in zip(de_parts, en_parts):
            if _is_sentence(pair[0]) and _is_sentence(pair[1]) and pair not in seen:
                seen.add(pair)
                pairs.append(pair)
    return pairs


def hash_split(pairs: Iterable[Pair], key: Callable[[Pair], str] = lambda p: p[0]) -> dict[str, list[Pair]]:
    """Pairs split by sha256 of their source side (`key`): test 7%, valid 7%, train the rest, so that one source
    sentence never lands in two splits (core.datasets.hash_split)."""
    return datasets.hash_split(pairs, key, test=7, valid=7)


def key_hash(key: str) -> int:
    """The whole sha256 of a pair's key as a number: its bucket (core.datasets.bucket) is this modulo 100."""
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest(), 16)


def cap_split(pairs: list[Pair], limit: int, key: Callable[[Pair], str] = lambda p: p[0]) -> list[Pair]:
    """At most `limit` pairs of a split: those whose key has the smallest sha256 (ties in input order), in input
    order. A split within the limit comes back as it is; a growing corpus keeps the pairs kept before, unless
    new ones with smaller hashes push them out. The pairs left out go nowhere (never into training)."""
    if len(pairs) <= limit:
        return pairs
    ranked = sorted(range(len(pairs)), key=lambda i: (key_hash(key(pairs[i])), i))
    kept = set(ranked[:limit])
    return [pair for i, pair in enumerate(pairs) if i in kept]


def cap_splits(splits: dict[str, list[Pair]], max_valid: int, max_test: int) -> dict[str, list[Pair]]:
    """The splits with validation and test cut to `max_valid` and `max_test` pairs (`cap_split`); training as it
    is: a pair the hash put in validation or test never trains, kept or not."""
    return splits | {"valid": cap_split(splits["valid"], max_valid), "test": cap_split(splits["test"], max_test)}


def spread_sample(items: list[T], limit: int) -> list[T]:
    """At most `limit` items, evenly spread over the list (all of them, as they are, when there are no more)."""
    if len(items) <= limit:
        return items
    return [items[i * len(items) // limit] for i in range(limit)]


def _read_member(tar: tarfile.TarFile, path: str) -> str:
    for member in tar.getmembers():
        if member.name.removeprefix("./") == path:
            return member_bytes(tar, member).decode("utf-8")
    raise UserError(f"the {DING_PACKAGE} package has no {path}; use {LOCAL_FLAG} to point at local files")


def _build_ding(folder: Path) -> None:
    """Fetch, extract and split the Ding sentences into `folder` (a temporary folder `cached` renames)."""
    deb = apt_download(folder / "download", DING_PACKAGE, DING_VERSION, "the Ding dictionary", LOCAL_FLAG)
    with deb_tar(deb, LOCAL_FLAG) as tar:
        dictionary = _read_member(tar, DING_DICTIONARY)
        copyright_text = _read_member(tar, DING_COPYRIGHT)
    # split("\n"), not splitlines(): the latter also breaks at U+2028 and friends, changing the rule.
    pairs = extract_ding_pairs(dictionary.split("\n"))
    splits = hash_split(pairs)
    write_splits(folder, splits, ("de", "en"))
    (folder / "COPYRIGHT.txt").write_text(copyright_text, encoding="utf-8")
    counts = ", ".join(f"{name} {len(split):,}" for name, split in splits.items())
    (folder / "SOURCE.txt").write_text(
        f"source: Debian package {DING_PACKAGE} {DING_VERSION} (apt-get download), file {DING_DICTIONARY}\n"
        f"licence: GPL-2+ (COPYRIGHT.txt)\n"
        f"pairs: {len(pairs):,} whole example sentences (rule: docs/data.md, seq2seq/data.py)\n"
        f"split by sha256 of the German sentence: {counts}\n",
        encoding="utf-8",
    )
    shutil.rmtree(folder / "download")


def ding_pairs(data_dir: str | Path | None = None) -> dict[str, list[Pair]]:
    """The Ding German-English sentence pairs as {"train", "valid", "test"} lists of (german, english)."""
    return read_splits(cached(f"ding-de-en-{DING_VERSION}", _build_ding, data_dir), ("de", "en"))


def write_splits(folder: Path, splits: dict[str, list[Pair]], langs: tuple[str, str]) -> None:
    """Each split as two aligned files, folder/<split>.<lang>, one sentence per line."""
    for name, split in splits.items():
        for side, lang in enumerate(langs):
            (folder / f"{name}.{lang}").write_text("".join(pair[side] + "\n" for pair in split), encoding="utf-8")


def read_splits(folder: Path, langs: tuple[str, str]) -> dict[str, list[Pair]]:
    """The splits `write_splits` wrote to a cache folder."""
    splits = {}
    for name in SPLITS:
        # Plain reads: the cache is ours, and a split of a small corpus may rightly be empty.
        source, target = (lines_of((folder / f"{name}.{lang}").read_text(encoding="utf-8")) for lang in langs)
        if len(source) != len(target):
            raise UserError(
                f"the cache {folder} is damaged ({name}.{langs[0]} and {name}.{langs[1]} differ in "
                "length); delete it to fetch again"
            )
        splits[name] = list(zip(source, target))
    return splits


# ---- the user's own data ----


def read_pairs_tsv(path: str | Path) -> list[Pair]:
    """(source, target) pairs from a UTF-8 file with one `source<TAB>target` per line."""
    return list(iter_pairs_tsv(path))


def iter_pairs_tsv(path: str | Path, progress: bool = False) -> Iterator[Pair]:
    """The pairs of `read_pairs_tsv` one by one, read a block at a time (memory bounded by the block, not the
    file); `progress`: a progress bar over the file's bytes."""
    number, lines, blank = 0, _text_lines(path, progress), True
    for number, line in enumerate(lines, start=1):
        fields = line.split("\t")
        blank = blank and not line.strip()
        if len(fields) != 2:
            if blank and not any(rest.strip() for rest in lines):  # white space alone: as `read_text` says
                raise UserError(f"{'the standard input' if str(path) in STDIN else path} is empty")
            raise UserError(
                f"{path}:{number}: expected source<TAB>target, found {len(fields) - 1} tabs in {line[:60]!r}"
            )
        src, tgt = fields[0].strip(), fields[1].strip()
        if not src or not tgt:
            raise UserError(f"{path}:{number}: the {'source' if not src else 'target'} side is empty")
        yield src, tgt
    if number == 0:
        raise UserError(f"{'the standard input' if str(path) in STDIN else path} is empty")


def _text_lines(path: str | Path, progress: bool) -> Iterator[str]:
    """A text file's lines as `lines_of(read_text(path))` gives them, a block at a time: UTF-8 checked with the
    line of the first bad byte named, one byte-order mark dropped at the start, CRLF read as LF."""
    check_path(path, stream=True)
    size = os.path.getsize(path) if str(path) not in STDIN and os.path.isfile(path) else None
    shown = progress and size is not None  # (a bar only when the reading takes over 2 s)
    with (
        _open_binary(path) as f,
        tqdm(total=size, unit="B", unit_scale=True, desc="reading", delay=2, disable=not shown) as bar,
    ):
        rest, first_line = b"", 1
        while block := f.read(READ_BLOCK):
            bar.update(len(block))
            data = rest + block
            cut = data.rfind(b"\n") + 1  # whole lines now, the rest with the next block
            rest = data[cut:]
            yield from _decoded_lines(data[:cut], path, first_line)
            first_line += data.count(b"\n", 0, cut)
        yield from _decoded_lines(rest, path, first_line)


def _decoded_lines(data: bytes, path: str | Path, first_line: int) -> list[str]:
    text = decode_text(data, path, first_line)
    if first_line > 1 and data.startswith(BOM.encode("utf-8")):  # (decode_text drops one at a block's start)
        text = BOM + text
    return lines_of(text)


def _open_binary(path: str | Path) -> BinaryIO:
    """The file, or the standard input read whole (corpora come through it seldom)."""
    return io.BytesIO(read_bytes(path)) if str(path) in STDIN else open(path, "rb")


def read_parallel(src_path: str | Path, tgt_path: str | Path) -> list[Pair]:
    """(source, target) pairs from two line-aligned UTF-8 files, neither of them blank throughout."""
    src, tgt = lines_of(read_text(src_path)), lines_of(read_text(tgt_path))
    if len(src) != len(tgt):
        raise UserError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; "
            "parallel files must be aligned line by line"
        )
    return list(zip(src, tgt))
