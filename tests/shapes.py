"""A tiny made-up captioning set: solid shapes in a few colours on white, each with the caption that says it."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageDraw

from captioning.data import ImageCaptions

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 60), "blue": (40, 70, 220)}
SHAPES = ("square", "circle", "triangle")


def draw(shape: str, colour: tuple[int, int, int], size: int = 64) -> Image.Image:
    picture = Image.new("RGB", (size, size), (255, 255, 255))
    pen = ImageDraw.Draw(picture)
    box = (size // 6, size // 6, size * 5 // 6, size * 5 // 6)
    if shape == "square":
        pen.rectangle(box, fill=colour)
    elif shape == "circle":
        pen.ellipse(box, fill=colour)
    else:
        pen.polygon([(size // 2, box[1]), (box[0], box[3]), (box[2], box[3])], fill=colour)
    return picture


def write_shapes(folder: Path) -> list[ImageCaptions]:
    """Nine pictures (every shape in every colour) as PNG files in `folder`, with captions.tsv beside them."""
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for colour, rgb in COLOURS.items():
        for shape in SHAPES:
            path = folder / f"{colour}-{shape}.png"
            draw(shape, rgb).save(path)
            records.append(ImageCaptions(path, [f"a {colour} {shape} ."]))
    (folder / "captions.tsv").write_text("".join(f"{r.image.name}\t{r.captions[0]}\n" for r in records))
    return records
