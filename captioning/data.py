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
    root = Path(images_dir) if images_dir is not None else Path(path).parent
    pairs = []
    for number, line in enumerate(lines_of(read_text(path)), start=1):
        if not line.strip() or (number == 1 and line.lower() == "image\tcaption"):
            continue
        if "\t" not in line:
            raise UserError(f"{path}:{number}: expected image<TAB>caption, found no tab in {line[:60]!r}")
        image, caption = (field.strip() for field in line.split("\t", 1))
        if not image or not caption:
            raise UserError(f"{path}:{number}: the {'image' if not image else 'caption'} is empty")
        pairs.append((root / image, caption))
    return keep_existing(group(pairs), path)


def read_json(path: str | Path) -> Any:
    """A JSON file, with one-line errors naming the file and where the JSON breaks."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from None


def _field(item: Any, name: str, where: str, path: str | Path) -> Any:
    """item[name], or a UserError saying which entry of which file lacks it."""
    if not isinstance(item, dict) or name not in item:
        raise UserError(f"{path}: {where} has no {name!r}")
    return item[name]


def _list(value: Any, where: str, path: str | Path) -> list:
    if not isinstance(value, list):
        raise UserError(f"{path}: {where} is a {type(value).__name__}, not a list")
    return value


def read_karpathy_json(path: str | Path, images_dir: str | Path | None = None) -> Splits:
    """Splits from a Karpathy split file (`dataset_flickr8k.json`, `dataset_coco.json`): each image's
    `filepath`/`filename` under `images_dir` (default: the file's folder), its `sentences`' raw text; the split
    as the file says (restval goes to train, val to valid)."""
    root = Path(images_dir) if images_dir is not None else Path(path).parent
    splits: dict[str, list[tuple[Path, str]]] = {name: [] for name in SPLITS}
    images = _list(_field(read_json(path), "images", "the top level", path), "'images'", path)
    for i, image in enumerate(images):
        where = f"images[{i}]"
        name = str(_field(image, "filename", where, path))
        file = root / str(image.get("filepath", "")) / name
        split = _field(image, "split", where, path)
        if split not in KARPATHY_SPLITS:
            raise UserError(f"{path}: {where} has split {split!r}, not one of {', '.join(KARPATHY_SPLITS)}")
        for j, sentence in enumerate(_list(_field(image, "sentences", where, path), f"{where}.sentences", path)):
            raw = sentence.get("raw") if isinstance(sentence, dict) else None
            if not isinstance(raw, str):  # some files keep only the tokens
                raw = " ".join(map(str, _field(sentence, "tokens", f"{where}.sentences[{j}]", path)))
            if raw.strip():
                splits[KARPATHY_SPLITS[split]].append((file, raw.strip()))
    return {name: keep_existing(group(pairs), f"{path} ({name})") for name, pairs in splits.items()}


def read_coco_json(path: str | Path, images_dir: str | Path | None = None) -> list[ImageCaptions]:
    """Records from a COCO captions file (`captions_train2014.json`): `images` (id, file_name) under `images_dir`
    (default: the file's folder) with the `annotations` (image_id, caption) of each, in the order of `images`.
    The file is one split: give train and val files for those, or hash-split one with split_by_path."""
    root = Path(images_dir) if images_dir is not None else Path(path).parent
    data = read_json(path)
    files = {}
    for i, image in enumerate(_list(_field(data, "images", "the top level", path), "'images'", path)):
        files[_field(image, "id", f"images[{i}]", path)] = root / str(_field(image, "file_name", f"images[{i}]", path))
    captions: dict[Any, list[str]] = {image_id: [] for image_id in files}
    unknown = 0
    for i, note in enumerate(_list(_field(data, "annotations", "the top level", path), "'annotations'", path)):
        image_id = _field(note, "image_id", f"annotations[{i}]", path)
        caption = _field(note, "caption", f"annotations[{i}]", path)
        if image_id not in captions:
            unknown += 1
        elif str(caption).strip():
            captions[image_id].append(str(caption).strip())
    if unknown:
        warnings.warn(f"{unknown} captions in {path} name an image id that its 'images' lack; left out")
    records = [ImageCaptions(files[image_id], texts) for image_id, texts in captions.items() if texts]
    return keep_existing(records, path)


def read_corpus(path: str | Path, images_dir: str | Path | None = None) -> Splits:
    """The user's captions in any of the three formats, split: a Karpathy JSON as it says, a COCO captions JSON
    or a TSV by the hash of each picture's path (relative to `images_dir`, default the file's folder)."""
    root = Path(images_dir) if images_dir is not None else Path(path).parent
    if Path(path).suffix.lower() != ".json":
        return split_by_path(read_captions_tsv(path, root), root)
    data = read_json(path)
    if isinstance(data, dict) and "annotations" in data:
        return split_by_path(read_coco_json(path, root), root)
    if isinstance(data, dict) and "images" in data:
        return read_karpathy_json(path, root)
    raise UserError(
        f"{path}: neither a Karpathy split file (an 'images' list with 'sentences') nor a COCO "
        "captions file ('images' and 'annotations')"
    )
