"""A frozen backbone's feature maps on disk: each picture's (C, h, w) map computed once, then read back.

A picture is known by the sha256 of its file's bytes, inside a folder per backbone, weights fingerprint, input
size and fit, so a changed file, other weights or another transform never meet stale features. Maps are stored
as float16 (half the disk and memory; the decoder's projections see no difference at this precision), in shards:
one file per extraction run (at most SHARD pictures), so loading 1,000 pictures is a few memory-mapped reads and
new pictures never rewrite old files. A shard appears by rename once written whole.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from captioning.backbones import Backbone
from captioning.images import load_image
from core.datasets import data_root
from core.files import atomic_file, file_sha256

SHARD = 1024  # pictures per shard: an interrupted extraction keeps all but the last partial shard


class FeatureCache:
    """The feature maps of one (backbone, weights, size, fit) under root/<backbone>-<fingerprint>-<size>px-<fit>/."""

    def __init__(self, root: str | Path, backbone: str, fingerprint: str, size: int, fit: str):
        self.folder = Path(root) / f"{backbone}-{fingerprint}-{size}px-{fit}"

    def load(self) -> dict[str, Tensor]:
        """Every stored map (C, h, w) float16 by picture key; memory-mapped, so unread maps cost nothing."""
        maps: dict[str, Tensor] = {}
        for shard in sorted(self.folder.glob("shard-*.pt")):
            stored = torch.load(shard, map_location="cpu", weights_only=True, mmap=True)
            maps.update(zip(stored["keys"], stored["features"]))
        return maps

    def add(self, keys: list[str], features: Tensor) -> None:
        """Store maps (N, C, h, w) for `keys` as one new shard, named by its keys' hash."""
        name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
        with atomic_file(self.folder / f"shard-{name}.pt") as f:
            torch.save({"keys": keys, "features": features.to(torch.float16).contiguous()}, f)


def extract_features(
    backbone: Backbone,
    paths: Sequence[str | Path],
    size: int | None = None,
    fit: str = "crop",
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> Tensor:
    """Feature maps (N, C, h, w) float16 of the pictures `paths` under a frozen backbone, computed only for those
    not yet in the cache (default: features/ in the data folder) and stored there; a second call reads them."""
    if backbone.trainable_blocks:
        raise ValueError("a feature cache needs a frozen backbone (fine_tune 0): a trained one changes its features")
    size = size or backbone.spec.size
    cache = FeatureCache(cache_dir or data_root() / "features", backbone.spec.name, backbone.fingerprint, size, fit)
    keys = [file_sha256(path) for path in paths]  # a renamed picture is found, an edited one is not
    maps = cache.load()
    todo = list({key: path for key, path in zip(keys, paths) if key not in maps}.items())  # each picture once
    if todo:
        maps.update(_compute(backbone, todo, backbone.spec.transform(size, fit), cache, batch_size, progress))
    return torch.stack([maps[key] for key in keys])  # (N, C, h, w)


def _compute(
    backbone: Backbone,
    todo: list[tuple[str, str | Path]],
    transform: Callable[[Image.Image], Tensor],
    cache: FeatureCache,
    batch_size: int,
    progress: bool,
) -> dict[str, Tensor]:
    """Run the backbone over the pictures `todo` (key, path) in batches, storing a shard every SHARD pictures."""
    device = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    computed: dict[str, Tensor] = {}
    pending_keys: list[str] = []
    pending: list[Tensor] = []
    try:
        with tqdm(total=len(todo), desc=f"{backbone.spec.name} features", unit="picture", disable=not progress) as bar:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                images = torch.stack([transform(load_image(path)) for _, path in batch]).to(device)  # (B, 3, S, S)
                with torch.no_grad():
                    features = backbone(images).to("cpu", torch.float16)  # (B, C, h, w)
                pending_keys += [key for key, _ in batch]
                pending += list(features)
                bar.update(len(batch))
                if len(pending) >= SHARD or start + batch_size >= len(todo):
                    cache.add(pending_keys, torch.stack(pending))
                    computed.update(zip(pending_keys, pending))
                    pending_keys, pending = [], []
    finally:
        backbone.train(was_training)
    return computed
