"""A frozen backbone's feature maps on disk: each picture's (C, h, w) map computed once, then read back.

A picture is known by the sha256 of its file's bytes, inside a folder per backbone, digest of the weights it holds,
input size and fit, so a changed file, other weights or another transform never meet stale features. Maps are
stored as float16 (half the disk and memory; the decoder's projections see no difference at this precision), in
shards: one file per extraction run (at most SHARD pictures), so loading 1,000 pictures is a few memory-mapped
reads and new pictures never rewrite old files. A shard appears by rename once written whole; its records carry
checksums, and one that is damaged or not a shard of this folder is set aside, its pictures extracted again. One
process extracts into a folder at a time; another waits, then reads what it wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from tqdm import tqdm

from captioning.backbones import Backbone
from captioning.images import load_image
from core.checkpoint import CheckpointError, read_tensors
from core.datasets import data_root
from core.files import atomic_file, file_sha256

SHARD = 1024  # pictures per shard: an interrupted extraction keeps all but the last partial shard


class FeatureCache:
    """The feature maps of one (backbone, weights, size, fit) under root/<backbone>-<fingerprint>-<size>px-<fit>/."""

    def __init__(self, root: str | Path, backbone: Backbone, size: int, fit: str):
        self.folder = Path(root) / f"{backbone.spec.name}-{backbone.fingerprint}-{size}px-{fit}"
        self.channels = backbone.channels

    def load(self) -> dict[str, Tensor]:
        """Every stored map (C, h, w) float16 by picture key; memory-mapped, so unread maps cost nothing. A shard
        that is damaged or foreign is set aside (renamed *.bad) with one warning naming it."""
        maps: dict[str, Tensor] = {}
        for shard in sorted(self.folder.glob("shard-*.pt")):
            try:
                keys, features = self._read(shard)
            except CheckpointError as err:
                warnings.warn(f"{err}; set aside as {shard.name}.bad, its pictures are extracted again")
                shard.replace(shard.with_name(shard.name + ".bad"))
                continue
            maps.update(zip(keys, features))
        return maps

    def _read(self, shard: Path) -> tuple[list[str], Tensor]:
        stored = read_tensors(shard, "feature shard", mmap=True)
        keys, features = stored.get("keys") if isinstance(stored, dict) else None, None
        if isinstance(stored, dict) and isinstance(stored.get("features"), Tensor):
            features = stored["features"]
        if (
            not isinstance(keys, list)
            or features is None
            or features.dim() != 4
            or len(keys) != features.size(0)
            or features.size(1) != self.channels
            or shard.name != self._name(keys)
        ):
            raise CheckpointError(f"{shard} is not a feature shard of {self.folder.name}")
        return keys, features

    @staticmethod
    def _name(keys: list[str]) -> str:
        return f"shard-{hashlib.sha256(chr(10).join(keys).encode()).hexdigest()[:16]}.pt"

    def add(self, keys: list[str], features: Tensor) -> None:
        """Store maps (N, C, h, w) for `keys` as one new shard, named by its keys' hash."""
        with atomic_file(self.folder / self._name(keys)) as f:
            torch.save({"keys": keys, "features": features.to(torch.float16).contiguous()}, f)

    @contextlib.contextmanager
    def extracting(self) -> Iterator[None]:
        """One process extracts into the folder at a time: the others wait here (then find its shards)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "extract.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


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
    cache = FeatureCache(cache_dir or data_root() / "features", backbone, size, fit)
    keys = [file_sha256(path) for path in paths]  # a renamed picture is found, an edited one is not
    maps = cache.load()
    if any(key not in maps for key in keys):
        with cache.extracting():
            maps = cache.load()  # what another process extracted while this one waited
            todo = list({key: path for key, path in zip(keys, paths) if key not in maps}.items())  # each once
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
