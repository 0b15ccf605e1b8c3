"""The feature cache: computed once and read back, keyed on file content, backbone, weights and transform, and
never left half written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import captioning.features as features_module
from captioning.backbones import build_backbone, fine_tune
from captioning.features import FeatureCache, extract_features

ROOT = Path(__file__).resolve().parents[1]


def _pictures(folder, n, start=0):
    paths = []
    for i in range(start, start + n):
        path = folder / f"p{i}.png"
        Image.new("RGB", (20 + i, 24), (i * 40 % 256, 100, 200)).save(path)
        paths.append(path)
    return paths


def _frozen(name="mobilenet_v3_small", seed=0):
    backbone = build_backbone(name, None, seed=seed)
    fine_tune(backbone, 0)
    rows = []  # pictures each forward call saw
    backbone.register_forward_hook(lambda module, args, out: rows.append(args[0].size(0)))
    return backbone, rows


def test_second_run_reads_the_cache(tmp_path):
    paths = _pictures(tmp_path, 5)
    backbone, rows = _frozen()
    first = extract_features(backbone, paths, size=32, cache_dir=tmp_path / "cache", batch_size=2, progress=False)
    assert first.shape == (5, 576, 1, 1) and first.dtype == torch.float16 and rows == [2, 2, 1]
    with torch.no_grad():
        direct = backbone(torch.stack([backbone.spec.transform(32)(Image.open(p).convert("RGB")) for p in paths]))
    assert torch.allclose(first.float(), direct, atol=1e-2, rtol=1e-2)
    rows.clear()
    again = extract_features(backbone, paths, size=32, cache_dir=tmp_path / "cache", progress=False)
    assert rows == [] and torch.equal(again, first)
    reverse = extract_features(backbone, paths[::-1], size=32, cache_dir=tmp_path / "cache", progress=False)
    assert torch.equal(reverse, first.flip(0))  # in the order asked for
    assert len(list((tmp_path / "cache").rglob("shard-*.pt"))) == 1


def test_changed_content_or_another_backbone_weights_or_transform_miss(tmp_path):
    paths = _pictures(tmp_path, 3)
    cache = tmp_path / "cache"
    backbone, rows = _frozen()
    extract_features(backbone, paths, size=32, cache_dir=cache, progress=False)
    Image.new("RGB", (9, 9), "black").save(paths[1])  # same name, new content
    (tmp_path / "copy.png").write_bytes(paths[0].read_bytes())  # new name, known content
    rows.clear()
    extract_features(backbone, paths + [tmp_path / "copy.png"], size=32, cache_dir=cache, progress=False)
    assert rows == [1]  # only the edited picture
    rows.clear()
    extract_features(backbone, paths, size=32, fit="pad", cache_dir=cache, progress=False)
    extract_features(backbone, paths, size=64, cache_dir=cache, progress=False)
    assert rows == [3, 3]
    for other, _ in (_frozen(seed=1), _frozen("resnet18")):
        other_rows = []
        other.register_forward_hook(lambda module, args, out, seen=other_rows: seen.append(args[0].size(0)))
        extract_features(other, paths, size=32, cache_dir=cache, progress=False)
        assert other_rows == [3]
    mobile, other_seed, resnet = (b.fingerprint for b, _ in (_frozen(), _frozen(seed=1), _frozen("resnet18")))
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [
            f"mobilenet_v3_small-{mobile}-32px-crop",
            f"mobilenet_v3_small-{mobile}-32px-pad",
            f"mobilenet_v3_small-{mobile}-64px-crop",
            f"mobilenet_v3_small-{other_seed}-32px-crop",
            f"resnet18-{resnet}-32px-crop",
        ]
    )


def test_an_interrupted_write_leaves_no_partial_cache(tmp_path, monkeypatch):
    paths = _pictures(tmp_path, 3)
    backbone, rows = _frozen()
    real_save = torch.save

    def save_half_then_fail(obj, f):
        real_save(obj, f)
        f.truncate(f.tell() // 2)
        raise KeyboardInterrupt  # as if killed while writing

    monkeypatch.setattr(features_module.torch, "save", save_half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        extract_features(backbone, paths, size=32, cache_dir=tmp_path / "cache", progress=False)
    left = [p.name for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert left == ["extract.lock"]  # no shard, no temporary file: only the (empty) lock of the folder
    monkeypatch.setattr(features_module.torch, "save", real_save)
    rows.clear()
    extract_features(backbone, paths, size=32, cache_dir=tmp_path / "cache", progress=False)
    assert sum(rows) == 3


def test_full_shards_survive_an_interruption(tmp_path, monkeypatch):
    paths = _pictures(tmp_path, 5)
    backbone, rows = _frozen()
    monkeypatch.setattr(features_module, "SHARD", 2)
    (tmp_path / "p4.png").write_bytes(b"")  # the last picture stops the run
    with pytest.raises(Exception, match="empty"):
        extract_features(backbone, paths, size=32, cache_dir=tmp_path / "cache", batch_size=2, progress=False)
    cache = FeatureCache(tmp_path / "cache", backbone, 32, "crop")
    assert len(cache.load()) == 4 and len(list(cache.folder.glob("shard-*.pt"))) == 2


def test_a_trainable_backbone_is_refused(tmp_path):
    backbone = build_backbone("mobilenet_v3_small", None)
    fine_tune(backbone, 1)
    with pytest.raises(ValueError, match="frozen"):
        extract_features(backbone, _pictures(tmp_path, 1), size=32, cache_dir=tmp_path, progress=False)


def test_a_damaged_or_foreign_shard_is_named_set_aside_and_extracted_again(tmp_path):
    paths = _pictures(tmp_path, 4)
    backbone, rows = _frozen()
    first = extract_features(backbone, paths, size=32, cache_dir=tmp_path / "cache", progress=False)
    cache = FeatureCache(tmp_path / "cache", backbone, 32, "crop")
    (shard,) = cache.folder.glob("shard-*.pt")
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one bit pattern flipped inside the features
    shard.write_bytes(bytes(data))
    rows.clear()
    with pytest.warns(UserWarning, match=f"{shard.name} is damaged.*set aside as {shard.name}.bad"):
        again = extract_features(backbone, paths, size=32, cache_dir=tmp_path / "cache", progress=False)
    assert rows == [4] and torch.equal(again, first) and (cache.folder / f"{shard.name}.bad").exists()
    torch.save({"keys": ["not", "these"], "features": torch.zeros(2, 576, 1, 1)}, cache.folder / "shard-0.pt")
    with pytest.warns(UserWarning, match="shard-0.pt is not a feature shard of"):
        assert torch.equal(
            extract_features(backbone, paths, size=32, cache_dir=tmp_path / "cache", progress=False), first
        )


def test_two_processes_extracting_into_one_folder_wait_for_each_other(tmp_path):
    """The second waits on the folder's lock, then finds the first's shard instead of writing its own."""
    import subprocess
    import sys

    paths = _pictures(tmp_path, 6)
    script = (
        f"import sys; sys.path[:0] = {[str(ROOT), str(ROOT / 'tests')]!r}\n"
        "from test_captioning_features import _frozen\n"
        "from captioning.features import extract_features\n"
        f"extract_features(_frozen()[0], {[str(p) for p in paths]!r}, size=32, cache_dir={str(tmp_path / 'c')!r},"
        " batch_size=1, progress=False)\n"
    )
    runs = [subprocess.Popen([sys.executable, "-c", script]) for _ in range(2)]
    assert [run.wait(timeout=120) for run in runs] == [0, 0]
    shards = list((tmp_path / "c").rglob("shard-*.pt"))
    assert len(shards) == 1, shards
