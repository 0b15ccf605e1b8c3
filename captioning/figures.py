"""Captioning's pictures, as PNG: a grid of pictures with their generated and reference captions, and one caption's
words each with its attention over the picture."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode

from captioning.images import ImageInput, load_image, pad_to_square
from core.plots import pyplot, save_figure

SHOWN = 256  # pixels per picture in the figures


def _square(image: ImageInput) -> Image.Image:
    """The whole picture padded to a square on white, as the captioner saw it (fit "pad")."""
    return pad_to_square(load_image(image), SHOWN, InterpolationMode.BILINEAR)


def save_samples_png(
    path: str | Path,
    images: Sequence[ImageInput],
    captions: dict[str, Sequence[str]],
    references: Sequence[Sequence[str]],
    columns: int = 4,
) -> Path:
    """A grid of pictures, each above its captions: one line per entry of `captions` (label -> one caption per
    picture, e.g. "greedy", "beam 5", "nearest") and its first reference."""
    plt = pyplot()
    rows = -(-len(images) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 5.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, image) in enumerate(zip(axes.flat, images)):
        ax.imshow(_square(image))
        lines = [f"{label}: {texts[i]}" for label, texts in captions.items()] + [f"reference: {references[i][0]}"]
        ax.set_title("\n".join(textwrap.fill(line, 42) for line in lines), fontsize=9, loc="left")
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def save_caption_attention_png(
    path: str | Path, image: ImageInput, words: Sequence[str], maps: Tensor, columns: int = 5
) -> Path:
    """The picture, then one panel per word: the picture under that word's attention map (h, w), upsampled."""
    plt = pyplot()
    picture = _square(image)
    panels = len(words) + 1
    rows = -(-panels // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 2.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    axes.flat[0].imshow(picture)
    axes.flat[0].set_title("picture", fontsize=10)
    grids = F.interpolate(
        maps.detach().float().cpu().unsqueeze(1), size=(SHOWN, SHOWN), mode="bilinear", align_corners=False
    ).squeeze(1)  # (T, SHOWN, SHOWN)
    for ax, word, grid in zip(axes.flat[1:], words, grids):
        ax.imshow(picture)
        ax.imshow(grid / grid.max().clamp_min(1e-12), cmap="inferno", alpha=0.55, vmin=0, vmax=1)
        ax.set_title(word, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)
