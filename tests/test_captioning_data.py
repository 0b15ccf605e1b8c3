"""Image-caption records from the user's files (TSV, Karpathy split JSON, COCO captions JSON) and the hash split."""

from __future__ import annotations

import hashlib
import json
import warnings

import pytest
from PIL import Image

from captioning.data import (
    ImageCaptions,
    hash_split,
    read_captions_tsv,
    read_coco_json,
    read_corpus,
    read_karpathy_json,
    split_by_path,
)
from core.errors import UserError


def _images(folder, *names):
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (4, 4)).save(folder / name)


def test_hash_split_follows_the_sha256_rule_and_keeps_a_key_in_one_split(tmp_path):
    records = [ImageCaptions(tmp_path / f"{i}.png", [f"caption {i}"]) for i in range(400)]
    splits = hash_split(records + records[:50], key=lambda r: r.image.name)
    for name, low, high in (("test", 0, 10), ("valid", 10, 20), ("train", 20, 100)):
        assert splits[name]  # every rule exercised
        for record in splits[name]:
            assert low <= int(hashlib.sha256(record.image.name.encode()).hexdigest(), 16) % 100 < high
    assert sum(map(len, splits.values())) == 450
    where = {}
    for name, split in splits.items():
        for record in split:
            assert where.setdefault(record.image, name) == name
    by_path = split_by_path(records, tmp_path)
    assert by_path == hash_split(records, key=lambda r: r.image.name)  # the path relative to the images folder


def test_tsv_groups_references_per_picture(tmp_path):
    _images(tmp_path / "img", "a.png", "sub/b.jpg")
    tsv = tmp_path / "captions.tsv"
    tsv.write_text("image\tcaption\na.png\tA dog.\nsub/b.jpg\t A cat. \r\n\na.png\tA dog runs.\n", encoding="utf-8")
    records = read_captions_tsv(tsv, tmp_path / "img")
    assert records == [
        ImageCaptions(tmp_path / "img" / "a.png", ["A dog.", "A dog runs."]),
        ImageCaptions(tmp_path / "img" / "sub" / "b.jpg", ["A cat."]),
    ]
    (tmp_path / "img" / "local.tsv").write_text("a.png\tA dog.\n", encoding="utf-8")
    assert read_captions_tsv(tmp_path / "img" / "local.tsv")[0].image == tmp_path / "img" / "a.png"


@pytest.mark.parametrize(
    "line, message",
    [
        ("a.png\t  ", r"captions.tsv:2: the caption is empty"),
        ("\tA dog.", r"captions.tsv:2: the image is empty"),
        ("a.png A dog.", r"captions.tsv:2: expected image<TAB>caption"),
    ],
)
def test_tsv_bad_lines_name_file_and_line(tmp_path, line, message):
    _images(tmp_path, "a.png")
    (tmp_path / "captions.tsv").write_text(f"a.png\tA dog.\n{line}\n", encoding="utf-8")
    with pytest.raises(UserError, match=message) as err:
        read_captions_tsv(tmp_path / "captions.tsv")
    assert "\n" not in str(err.value)


def test_missing_pictures_are_one_warning_and_left_out(tmp_path):
    _images(tmp_path, "a.png")
    (tmp_path / "captions.tsv").write_text("gone1.png\tX.\na.png\tA dog.\ngone2.png\tY.\ngone1.png\tZ.\n")
    with pytest.warns(UserWarning) as caught:
        records = read_captions_tsv(tmp_path / "captions.tsv")
    assert [r.image.name for r in records] == ["a.png"]
    assert len(caught) == 1
    assert str(caught[0].message).startswith(
        f"2 of 3 pictures named in {tmp_path / 'captions.tsv'} do not exist (first: {tmp_path / 'gone1.png'})"
    )


KARPATHY = {
    "images": [
        {
            "filename": "1.jpg",
            "split": "train",
            "sentences": [
                {"raw": "A dog runs.", "tokens": ["a", "dog", "runs"]},
                {"raw": " Two dogs. ", "tokens": ["two", "dogs"]},
            ],
        },
        {"filepath": "val2014", "filename": "2.jpg", "split": "val", "sentences": [{"tokens": ["a", "cat"]}]},
        {"filename": "3.jpg", "split": "test", "sentences": [{"raw": "A bird.", "tokens": []}]},
        {"filename": "4.jpg", "split": "restval", "sentences": [{"raw": "A fish.", "tokens": []}]},
    ]
}


def test_karpathy_json(tmp_path):
    _images(tmp_path / "img", "1.jpg", "val2014/2.jpg", "3.jpg", "4.jpg")
    (tmp_path / "dataset.json").write_text(json.dumps(KARPATHY))
    splits = read_karpathy_json(tmp_path / "dataset.json", tmp_path / "img")
    root = tmp_path / "img"
    assert splits == {
        "train": [
            ImageCaptions(root / "1.jpg", ["A dog runs.", "Two dogs."]),
            ImageCaptions(root / "4.jpg", ["A fish."]),
        ],  # restval trains
        "valid": [ImageCaptions(root / "val2014" / "2.jpg", ["a cat"])],
        "test": [ImageCaptions(root / "3.jpg", ["A bird."])],
    }


def test_karpathy_json_errors(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text('{"images": [\n  {"filename": "1.jpg",, "split": "train"}]}')
    with pytest.raises(UserError, match=r"dataset.json is not valid JSON \(Expecting .* at line 2, column 24\)"):
        read_karpathy_json(path)
    path.write_text(json.dumps({"images": [{"filename": "1.jpg", "sentences": []}]}))
    with pytest.raises(UserError, match=r"dataset.json: images\[0\] has no 'split'"):
        read_karpathy_json(path)
    path.write_text(json.dumps({"images": [{"filename": "1.jpg", "split": "dev", "sentences": []}]}))
    with pytest.raises(UserError, match=r"images\[0\] has split 'dev', not one of train, restval, val, test"):
        read_karpathy_json(path)
    path.write_text(json.dumps({"pictures": []}))
    with pytest.raises(UserError, match="the top level has no 'images'"):
        read_karpathy_json(path)
    with pytest.raises(UserError, match="does not exist"):
        read_karpathy_json(tmp_path / "nope.json")


COCO = {
    "images": [
        {"id": 9, "file_name": "COCO_9.jpg"},
        {"id": 3, "file_name": "COCO_3.jpg"},
        {"id": 5, "file_name": "COCO_5.jpg"},
    ],
    "annotations": [
        {"image_id": 3, "id": 1, "caption": "A plate of food."},
        {"image_id": 9, "id": 2, "caption": "A bus. "},
        {"image_id": 3, "id": 3, "caption": "Food on a table."},
        {"image_id": 77, "id": 4, "caption": "Nobody's picture."},
    ],
}


def test_coco_json(tmp_path):
    _images(tmp_path, "COCO_9.jpg", "COCO_3.jpg", "COCO_5.jpg")
    (tmp_path / "captions_val.json").write_text(json.dumps(COCO))
    with pytest.warns(UserWarning, match="1 captions in .*captions_val.json name an image id that its 'images' lack"):
        records = read_coco_json(tmp_path / "captions_val.json")
    assert records == [
        ImageCaptions(tmp_path / "COCO_9.jpg", ["A bus."]),  # in the order of 'images'
        ImageCaptions(tmp_path / "COCO_3.jpg", ["A plate of food.", "Food on a table."]),
    ]
    many = {
        "images": [{"id": i, "file_name": f"COCO_{i:012d}.jpg"} for i in range(300)],
        "annotations": [{"image_id": i, "caption": "x"} for i in range(300)],
    }
    _images(tmp_path / "big", *(f"COCO_{i:012d}.jpg" for i in range(300)))
    (tmp_path / "big" / "captions.json").write_text(json.dumps(many))
    splits = split_by_path(read_coco_json(tmp_path / "big" / "captions.json"), tmp_path / "big")
    assert all(20 <= len(splits[name]) <= 45 for name in ("valid", "test"))  # names with numbers still spread


def test_coco_json_errors(tmp_path):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    with pytest.raises(UserError, match=r"captions.json: images\[0\] has no 'file_name'"):
        read_coco_json(path)
    path.write_text(json.dumps({"images": [], "annotations": {"image_id": 1}}))
    with pytest.raises(UserError, match="'annotations' is an object, not a list"):
        read_coco_json(path)
    path.write_bytes(b'{"images": [}')
    with pytest.raises(UserError, match=r"not valid JSON \(.* at line 1, column 13\)"):
        read_coco_json(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an empty but valid file is not a missing-picture case
        path.write_text(json.dumps({"images": [], "annotations": []}))
        assert read_coco_json(path) == []


@pytest.mark.parametrize("data, message", [
    ({"images": [{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}], "annotations": []},
     r"images\[1\] has id 1, which an earlier image has too"),
    ({"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "caption": None}]},
     r"annotations\[0\].caption is null, not a string"),
    ({"images": "a.png", "annotations": []}, "'images' is a string, not a list"),
    ({"images": [{"id": [1], "file_name": "a.png"}], "annotations": []},
     r"images\[0\].id is a list, not an integer or a string"),
    ({"images": [{"id": True, "file_name": "a.png"}], "annotations": []}, r"images\[0\].id is a bool"),
    ({"images": [{"id": 1, "file_name": 7}], "annotations": []}, r"images\[0\].file_name is an integer, not a string"),
    ({"images": [], "annotations": [["a"]]}, r"annotations\[0\] is a list, not an object"),
])  # fmt: skip
def test_coco_json_is_checked_against_its_documented_shape(tmp_path, data, message):
    path = tmp_path / "captions.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserError, match=message):
        read_coco_json(path)


@pytest.mark.parametrize("image, message", [
    ({"filename": "a.png", "split": "train", "sentences": "a dog"}, r"images\[0\].sentences is a string, not a list"),
    ({"filename": "a.png", "split": "train", "sentences": [{"raw": None}]}, r"sentences\[0\].raw is null"),
    ({"filename": None, "split": "train", "sentences": []}, r"images\[0\].filename is null, not a string"),
    ({"filename": "a.png", "split": ["train"], "sentences": []}, r"images\[0\].split is a list, not a string"),
])  # fmt: skip
def test_karpathy_json_is_checked_against_its_documented_shape(tmp_path, image, message):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"images": [image]}))
    with pytest.raises(UserError, match=message):
        read_karpathy_json(path)


def test_json_nested_too_deeply_is_one_line(tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"images": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(UserError, match="nested too deeply"):
        read_corpus(path)


def test_a_corpus_is_read_once_and_told_json_or_tsv_by_its_text(tmp_path):
    """Through a pipe (no suffix to go by, no second read), JSON and TSV alike."""
    import os
    import threading

    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    for name, text in (("tsv", "a.png\ta dog\n"), ("json", json.dumps({"images": [{"id": 1, "file_name": "a.png"}],
                       "annotations": [{"image_id": 1, "caption": "a dog"}]}))):  # fmt: skip
        pipe = tmp_path / name
        os.mkfifo(pipe)
        threading.Thread(target=lambda p=pipe, t=text: p.write_text(t), daemon=True).start()
        splits = read_corpus(pipe, tmp_path)
        assert sum(len(v) for v in splits.values()) == 1, name
