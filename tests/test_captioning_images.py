"""Pictures in: every mode to RGB on white, tensors, one-line errors for bad files, and the input transform."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.images import IMAGENET_MEAN, IMAGENET_STD, image_transform, load_image
from core.errors import UserError

RED, WHITE = (255, 0, 0), (255, 255, 255)


def _pixels(picture: Image.Image) -> list:
    return [picture.getpixel((x, y)) for y in range(picture.height) for x in range(picture.width)]


def test_rgba_is_composited_on_white(tmp_path):
    picture = Image.new("RGBA", (3, 1))
    picture.putdata([(0, 0, 0, 0), (255, 0, 0, 255), (255, 0, 0, 128)])  # clear, opaque red, half red
    picture.save(tmp_path / "a.png")
    loaded = load_image(tmp_path / "a.png")
    assert loaded.mode == "RGB" and loaded.size == (3, 1)
    clear, opaque, half = _pixels(loaded)
    assert clear == WHITE and opaque == RED  # black under transparency would show if composited on black
    assert half[0] == 255 and 125 <= half[1] <= 129 and half[1] == half[2]


def test_la_and_transparent_palette_are_composited_on_white(tmp_path):
    la = Image.new("LA", (2, 1))
    la.putdata([(0, 0), (0, 255)])
    assert _pixels(load_image(la)) == [WHITE, (0, 0, 0)]
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.putdata([0, 1])
    palette.save(tmp_path / "p.png", transparency=0)  # palette entry 0 (black) is transparent
    assert Image.open(tmp_path / "p.png").mode == "P"  # precondition: the file keeps its palette
    assert _pixels(load_image(tmp_path / "p.png")) == [WHITE, RED]


@pytest.mark.parametrize(
    "mode, value, expected",
    [("L", 100, (100, 100, 100)), ("1", 1, WHITE), ("CMYK", (0, 255, 255, 0), RED), ("I;16", 65535, WHITE)],
)
def test_other_modes_become_rgb(mode, value, expected):
    loaded = load_image(Image.new(mode, (2, 2), value))
    assert loaded.mode == "RGB" and _pixels(loaded) == [expected] * 4


@pytest.mark.parametrize("mode, array, grey", [
    ("I;16", np.full((3, 3), 30000, dtype=np.uint16), 117),  # 16 bits scaled, not clipped to white
    ("I", np.full((3, 3), 30000, dtype=np.int32), 117),
    ("I", np.full((3, 3), 200, dtype=np.int32), 200),  # 32-bit values within 0..255: 8-bit grey already
    ("F", np.full((3, 3), 0.5, dtype=np.float32), 128),  # floats in 0..1
    ("F", np.full((3, 3), 200.0, dtype=np.float32), 200),
])  # fmt: skip
def test_deep_grey_levels_look_as_a_person_sees_them(mode, array, grey):
    picture = Image.fromarray(array) if mode == "I;16" else Image.fromarray(array, mode)
    assert picture.mode == mode and _pixels(load_image(picture)) == [(grey, grey, grey)] * 9


def test_a_picture_without_pixels_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"has no pixels \(0 x 0\)"):
        load_image(Image.new("RGB", (0, 0)))


def test_cmyk_jpeg_and_sixteen_bit_png_files(tmp_path):
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "c.jpg")
    r, g, b = _pixels(load_image(tmp_path / "c.jpg"))[0]
    assert r > 200 and g < 60 and b < 60
    Image.new("I;16", (4, 4), 65535).save(tmp_path / "g.png")
    assert _pixels(load_image(tmp_path / "g.png"))[0] == WHITE


def test_exif_orientation_is_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the stored 4 x 2 picture is shown as 2 x 4
    Image.new("RGB", (4, 2), RED).save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (2, 4)


def test_tiny_and_large_pictures(tmp_path):
    Image.new("RGB", (1, 1), RED).save(tmp_path / "one.png")
    assert _pixels(load_image(tmp_path / "one.png")) == [RED]
    Image.new("RGB", (5000, 5000), RED).save(tmp_path / "big.png")  # 25 Mpx: under Pillow's bomb limit
    assert load_image(tmp_path / "big.png").size == (5000, 5000)


def _one_line_error(path, *words):
    with pytest.raises(UserError) as err:
        load_image(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for word in words:
        assert word in message
    return message


def test_bad_files_are_one_line_errors_naming_the_file(tmp_path):
    _one_line_error(tmp_path / "missing.png", "does not exist")
    _one_line_error(tmp_path, "folder")
    (tmp_path / "empty.png").write_bytes(b"")
    _one_line_error(tmp_path / "empty.png", "empty")
    (tmp_path / "text.png").write_text("not a picture at all")
    _one_line_error(tmp_path / "text.png", "not a picture")


def test_truncated_png_is_decoded_and_refused(tmp_path):
    picture = Image.effect_noise((64, 64), 64).convert("RGB")  # noise: the pixel data fills most of the file
    buffer = io.BytesIO()
    picture.save(buffer, "PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert Image.open(tmp_path / "cut.png").size == (64, 64)  # precondition: the header alone reads fine
    _one_line_error(tmp_path / "cut.png", "truncated")


def test_decompression_bomb_guard_is_kept_as_one_line(tmp_path, monkeypatch):
    Image.new("RGB", (100, 100)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px is over twice the limit: Pillow's error
    _one_line_error(tmp_path / "bomb.png", "too large")


def test_tensors_uint8_and_float():
    pixels = torch.tensor([[[255, 0]], [[0, 0]], [[0, 255]]], dtype=torch.uint8)  # (3, 1, 2): red, blue
    assert _pixels(load_image(pixels)) == [RED, (0, 0, 255)]
    assert _pixels(load_image(pixels.float() / 255)) == [RED, (0, 0, 255)]
    assert _pixels(load_image(torch.full((1, 2, 2), 0.5))) == [(128, 128, 128)] * 4
    rgba = torch.zeros(4, 1, 1, dtype=torch.uint8)  # fully transparent black
    assert _pixels(load_image(rgba)) == [WHITE]


@pytest.mark.parametrize(
    "tensor, error",
    [
        (torch.zeros(2, 2, dtype=torch.uint8), ValueError),
        (torch.zeros(2, 3, 3, dtype=torch.uint8), ValueError),
        (torch.zeros(3, 0, 2, dtype=torch.uint8), ValueError),
        (torch.zeros(3, 2, 2, dtype=torch.int64), TypeError),
        (torch.full((3, 2, 2), 1.5), ValueError),
        (torch.full((3, 2, 2), float("nan")), ValueError),
    ],
)
def test_bad_tensors_name_the_argument(tensor, error):
    with pytest.raises(error, match="image"):
        load_image(tensor)


def test_other_inputs_are_a_type_error():
    with pytest.raises(TypeError, match="image must be"):
        load_image(42)


def _unnormalise(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(IMAGENET_STD).view(3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1)


def test_transform_crops_the_centre_or_pads_on_white():
    wide = Image.new("RGB", (200, 100), RED)
    wide.paste(Image.new("RGB", (20, 100), (0, 0, 255)), (0, 0))  # a blue band on the left edge
    crop = _unnormalise(image_transform(32, 36)(wide))
    pad = _unnormalise(image_transform(32, 36, fit="pad")(wide))
    assert crop.shape == pad.shape == (3, 32, 32)
    assert crop[2].max() < 0.1  # the blue band was cut away with the sides
    assert pad[:, 0].min() > 0.95 and pad[:, -1].min() > 0.95  # white rows above and below
    assert pad[2, 16, 0] > 0.9 and pad[0, 16, 0] < 0.1  # the band survives at the left
    with pytest.raises(ValueError, match="fit"):
        image_transform(32, 36, fit="stretch")
