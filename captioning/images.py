"""Pictures in: any file Pillow reads, a PIL image or a tensor, as one RGB picture; and the transform to a network's
input (resize, centre crop or pad to a square on white, ImageNet normalisation)."""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms import functional as TF

from core.errors import UserError
from core.files import check_path, read_bytes

WHITE = (255, 255, 255)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
FITS = ("crop", "pad")

ImageInput = str | Path | Image.Image | Tensor


def load_image(image: ImageInput) -> Image.Image:
    """An RGB picture from a path, a PIL image or a tensor (C, H, W) of uint8 or floats in [0, 1], C in 1, 3, 4;
    transparency is composited on white. Bad files raise a one-line UserError naming the file."""
    if isinstance(image, Tensor):
        picture, name = _from_tensor(image), "image tensor"
    elif isinstance(image, Image.Image):
        picture, name = image, "picture"
    elif isinstance(image, (str, Path)):
        picture, name = _open(Path(image)), f"picture {image}"
    else:
        raise TypeError(f"image must be a path, a PIL image or a tensor, got {type(image).__name__}")
    if picture.width < 1 or picture.height < 1:
        raise UserError(f"{name} has no pixels ({picture.width} x {picture.height})")
    return to_rgb(picture)


def _open(path: Path) -> Image.Image:
    """The decoded picture of a file (or a pipe, read whole), upright as its EXIF orientation says."""
    check_path(path, stream=True, flag="picture")
    data = None if path.is_file() else read_bytes(path)
    try:
        if (path.stat().st_size if data is None else len(data)) == 0:
            raise UserError(f"picture {path} is an empty file")
        with Image.open(path if data is None else io.BytesIO(data)) as picture:
            picture.load()  # decode now: a truncated file fails here, not later inside a batch
            return ImageOps.exif_transpose(picture)
    except UnidentifiedImageError:
        raise UserError(f"{path} is not a picture Pillow can read") from None
    except Image.DecompressionBombError as err:  # Pillow's guard against decompression bombs, kept as it is
        raise UserError(f"{path} is too large to open safely ({err})") from None
    except OSError as err:  # truncated data, a broken chunk, no permission
        reason = err.strerror or str(err)
        kind = "is truncated" if "truncated" in reason else "cannot be read"
        raise UserError(f"picture {path} {kind} ({reason})") from None


def to_rgb(picture: Image.Image) -> Image.Image:
    """The picture in RGB as a person sees it: transparent parts (alpha or a palette's transparent colour)
    composited on white, and 16-bit, 32-bit and floating-point grey levels scaled to 8 bits, not clipped (which
    turns all but the darkest of them white)."""
    if picture.mode.startswith(("I", "F")):
        picture = _eight_bits(picture)
    if picture.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in picture.info:
        with warnings.catch_warnings():  # Pillow warns that a palette's transparency is better kept as RGBA
            warnings.simplefilter("ignore")
            rgba = picture.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE + (255,)), rgba).convert("RGB")
    return picture if picture.mode == "RGB" else picture.convert("RGB")  # L, P, CMYK, YCbCr, I;16, 1


def _eight_bits(picture: Image.Image) -> Image.Image:
    """A grey picture of 16- or 32-bit integers or of floats as 8-bit grey ("L"): 16-bit values (and 32-bit ones
    above 255) scaled from 0..65535, floats from 0..1 (or clipped to 0..255 when they go above 1)."""
    values = np.asarray(picture, dtype=np.float64)
    top = float(values.max()) if values.size else 0.0
    if picture.mode == "F":
        scale = 255.0 if top <= 1.0 else 1.0
    else:
        scale = 255.0 / 65535.0 if picture.mode.startswith("I;16") or top > 255 else 1.0
    return Image.fromarray(np.clip(values * scale, 0, 255).round().astype(np.uint8), "L")


def _from_tensor(image: Tensor) -> Image.Image:
    """A PIL picture from a tensor (C, H, W): uint8 as it is, floats in [0, 1] scaled to 0..255."""
    if image.dim() != 3 or image.size(0) not in (1, 3, 4) or image.size(1) < 1 or image.size(2) < 1:
        raise ValueError(f"image tensor must be (C, H, W) with C in 1, 3, 4, got shape {tuple(image.shape)}")
    if image.dtype == torch.uint8:
        pixels = image
    elif image.is_floating_point():
        if not bool(((image >= 0) & (image <= 1)).all()):  # NaN fails too
            raise ValueError("image tensor of floats must hold values in [0, 1]")
        pixels = (image.float() * 255).round().to(torch.uint8)  # (C, H, W)
    else:
        raise TypeError(f"image tensor must be uint8 or floating point, got {image.dtype}")
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[image.size(0)]
    array = pixels.detach().cpu().permute(1, 2, 0).contiguous().numpy()  # (H, W, C)
    return Image.fromarray(array[:, :, 0] if mode == "L" else array, mode)


def pad_to_square(picture: Image.Image, size: int, interpolation: TF.InterpolationMode) -> Image.Image:
    """The whole picture scaled so that its longer side is `size`, centred on a white size x size square."""
    scale = size / max(picture.size)
    width, height = (max(1, round(side * scale)) for side in picture.size)
    scaled = TF.resize(picture, [height, width], interpolation=interpolation, antialias=True)
    square = Image.new("RGB", (size, size), WHITE)
    square.paste(scaled, ((size - width) // 2, (size - height) // 2))
    return square


def image_transform(
    size: int,
    resize: int,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
    interpolation: str = "bilinear",
    fit: str = "crop",
) -> Callable[[Image.Image], Tensor]:
    """A picture -> normalised tensor (3, size, size): the shorter side resized to `resize` and the centre cropped
    (fit="crop", as ImageNet models were evaluated), or the whole picture padded to a square on white ("pad")."""
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)}, got {fit!r}")
    mode = TF.InterpolationMode(interpolation)

    def transform(picture: Image.Image) -> Tensor:
        if fit == "crop":
            picture = TF.center_crop(TF.resize(picture, resize, interpolation=mode, antialias=True), size)
        else:
            picture = pad_to_square(picture, size, mode)
        return TF.normalize(TF.to_tensor(picture), mean, std)  # (3, size, size)

    return transform
