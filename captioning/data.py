"""Image-caption data: one record per picture with every reference caption, the hash split, and readers for the
user's own files (a TSV of image<TAB>caption, Karpathy's split JSON, COCO's captions JSON).

Evaluation scores a caption against all references of its picture, so readers keep them all, grouped by
picture in the order the file names them. Pictures that do not exist are left out with one warning.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

from core import datasets
from core.datasets import SPLITS
from core.errors import UserError
from core.files import lines_of, read_text

TEST_PERCENT, VALID_PERCENT = 10, 10
KARPATHY_SPLITS = {"train": "train", "restval": "train", "val": "valid", "test": "test"}


class ImageCaptions(NamedTuple):
    """A picture and all its reference captions."""

    image: Path
    captions: list[str]


Splits = dict[str, list[ImageCaptions]]


def hash_split(records: Iterable[ImageCaptions], key: Callable[[ImageCaptions], str]) -> Splits:
    """Records split by sha256 of `key(record)`: test 10%, valid 10%, train the rest; records sharing a key share a
    split (core.datasets.hash_split)."""
    return datasets.hash_split(records, key, TEST_PERCENT, VALID_PERCENT)


def split_by_path(records: Iterable[ImageCaptions], images_dir: str | Path) -> Splits:
    """hash_split keyed on each picture's path relative to `images_dir` (for data that names no split)."""
    root = Path(images_dir)
    return hash_split(records, key=lambda r: _relative(r.image, root))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:  # an absolute path elsewhere
        return path.as_posix()


def group(pairs: Iterable[tuple[Path, str]]) -> list[ImageCaptions]:
    """(picture, caption) pairs -> one record per picture, in order of first appearance, captions in file order."""
    captions: dict[Path, list[str]] = {}
    for image, caption in pairs:
        captions.setdefault(image, []).append(caption)
    return [ImageCaptions(image, texts) for image, texts in captions.items()]


def keep_existing(records: list[ImageCaptions], source: str | Path) -> list[ImageCaptions]:
    """The records whose picture exists; one warning naming how many do not, and the first."""
    kept = [r for r in records if r.image.is_file()]
    if len(kept) < len(records):
        first = next(r.image for r in records if not r.image.is_file())
        warnings.warn(
            f"{len(records) - len(kept)} of {len(records)} pictures named in {source} do not exist "
            f"(first: {first}); going on without them"
        )
    return kept


# ---- the user's files ----


def read_captions_tsv(path: str | Path, images_dir: str | Path | None = None) -> list[ImageCaptions]:
    """Records from a UTF-8 file of `image<TAB>caption` lines, paths relative to `images_dir` (default: the file's
    folder); several lines for one picture are several references. A header line `image<TAB>caption` is skipped."""
    return _tsv_records(read_text(path), path, _root(path, images_dir))


def _tsv_records(text: str, path: str | Path, root: Path) -> list[ImageCaptions]:
    pairs = []
    for number, line in enumerate(lines_of(text), start=1):
        if not line.strip() or (number == 1 and line.lower() == "image\tcaption"):
            continue
        if "\t" not in line:
            raise UserError(f"{path}:{number}: expected image<TAB>caption, found no tab in {line[:60]!r}")
        image, caption = (field.strip() for field in line.split("\t", 1))
        if not image or not caption:
            raise UserError(f"{path}:{number}: the {'image' if not image else 'caption'} is empty")
        pairs.append((root / image, caption))
    return keep_existing(group(pairs), path)


def _root(path: str | Path, images_dir: str | Path | None) -> Path:
    """Where a corpus's picture paths start: `images_dir`, else the corpus file's folder (the working folder for
    the standard input or a pipe)."""
    if images_dir is not None:
        return Path(images_dir)
    return Path(path).parent if Path(path).is_file() else Path()


def parse_json(text: str, path: str | Path) -> Any:
    """JSON text, with one-line errors naming the file and where the JSON breaks."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None
    except RecursionError:
        raise UserError(f"{path} is not a captions file: its JSON is nested too deeply") from None


class _Shape:
    """What a file's JSON must hold, checked where it is read: each problem one line naming the file and the entry."""

    def __init__(self, path: str | Path):
        self.path = path

    def field(self, item: Any, name: str, where: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
        """item[name], of `kind`; None when `optional` and missing."""
        if not isinstance(item, dict):
            raise UserError(f"{self.path}: {where} is {_kind(item)}, not an object")
        if name not in item and optional:
            return None
        if name not in item:
            raise UserError(f"{self.path}: {where} has no {name!r}")
        value = item[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            wanted = " or ".join(_kind(k()) for k in (kind if isinstance(kind, tuple) else (kind,)))
            place = f"'{name}'" if where == "the top level" else f"{where}.{name}"
            raise UserError(f"{self.path}: {place} is {_kind(value)}, not {wanted}")
        return value


def _kind(value: Any) -> str:
    """What a JSON value is, in words."""
    names = {type(None): "null", dict: "an object", list: "a list", str: "a string", int: "an integer"}
    return names.get(type(value), f"a {type(value).__name__}")


def read_karpathy_json(path: str | Path, images_dir: str | Path | None = None) -> Splits:
    """Splits from a Karpathy split file (`dataset_flickr8k.json`, `dataset_coco.json`): each image's
    `filepath`/`filename` under `images_dir` (default: the file's folder), its `sentences`' raw text; the split
    as the file says (restval goes to train, val to valid)."""
    return _karpathy_splits(parse_json(read_text(path), path), path, _root(path, images_dir))


def _karpathy_splits(data: Any, path: str | Path, root: Path) -> Splits:
    shape = _Shape(path)
    splits: dict[str, list[tuple[Path, str]]] = {name: [] for name in SPLITS}
    for i, image in enumerate(shape.field(data, "images", "the top level", list)):
        where = f"images[{i}]"
        file = root / (shape.field(image, "filepath", where, str, optional=True) or "")
        file = file / shape.field(image, "filename", where, str)
        split = shape.field(image, "split", where, str)
        if split not in KARPATHY_SPLITS:
            raise UserError(f"{path}: {where} has split {split!r}, not one of {', '.join(KARPATHY_SPLITS)}")
        for j, sentence in enumerate(shape.field(image, "sentences", where, list)):
            raw = shape.field(sentence, "raw", f"{where}.sentences[{j}]", str, optional=True)
            if raw is None:  # some files keep only the tokens
                tokens = shape.field(sentence, "tokens", f"{where}.sentences[{j}]", list)
                if not all(isinstance(t, str) for t in tokens):
                    raise UserError(f"{path}: {where}.sentences[{j}].tokens holds something other than strings")
                raw = " ".join(tokens)
            if raw.strip():
                splits[KARPATHY_SPLITS[split]].append((file, raw.strip()))
    return {name: keep_existing(group(pairs), f"{path} ({name})") for name, pairs in splits.items()}


def read_coco_json(path: str | Path, images_dir: str | Path | None = None) -> list[ImageCaptions]:
    """Records from a COCO captions file (`captions_train2014.json`): `images` (id, file_name) under `images_dir`
    (default: the file's folder) with the `annotations` (image_id, caption) of each, in the order of `images`.
    The file is one split: give train and val files for those, or hash-split one with split_by_path."""
    return _coco_records(parse_json(read_text(path), path), path, _root(path, images_dir))


def _coco_records(data: Any, path: str | Path, root: Path) -> list[ImageCaptions]:
    shape = _Shape(path)
    files: dict[int | str, Path] = {}
    for i, image in enumerate(shape.field(data, "images", "the top level", list)):
        image_id = shape.field(image, "id", f"images[{i}]", (int, str))
        if image_id in files:  # its captions would silently go to one of the two pictures
            raise UserError(f"{path}: images[{i}] has id {image_id!r}, which an earlier image has too")
        files[image_id] = root / shape.field(image, "file_name", f"images[{i}]", str)
    captions: dict[int | str, list[str]] = {image_id: [] for image_id in files}
    unknown = 0
    for i, note in enumerate(shape.field(data, "annotations", "the top level", list)):
        image_id = shape.field(note, "image_id", f"annotations[{i}]", (int, str))
        caption = shape.field(note, "caption", f"annotations[{i}]", str)
        if image_id not in captions:
            unknown += 1
        elif caption.strip():
            captions[image_id].append(caption.strip())
    if unknown:
        warnings.warn(f"{unknown} captions in {path} name an image id that its 'images' lack; left out")
    records = [ImageCaptions(files[image_id], texts) for image_id, texts in captions.items() if texts]
    return keep_existing(records, path)


def read_corpus(path: str | Path, images_dir: str | Path | None = None) -> Splits:
    """The user's captions in any of the three formats, read once (a pipe will do) and split: a Karpathy split
    file as it says, a COCO captions file or TSV lines by the hash of each picture's path (relative to
    `images_dir`, default the file's folder). JSON is told from TSV by its first character."""
    root, text = _root(path, images_dir), read_text(path)
    if not text.lstrip().startswith("{"):
        return split_by_path(_tsv_records(text, path, root), root)
    data = parse_json(text, path)
    if isinstance(data, dict) and "annotations" in data:
        return split_by_path(_coco_records(data, path, root), root)
    if isinstance(data, dict) and "images" in data:
        return _karpathy_splits(data, path, root)
    raise UserError(
        f"{path}: neither a Karpathy split file (an 'images' list with 'sentences') nor a COCO captions "
        "file ('images' and 'annotations')"
    )
