"""`CNNEncoder`: a picture's feature grid as the memory to attend to, its mean feature as the decoder's start."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from captioning.backbones import Backbone, build_backbone
from captioning.backbones import fine_tune as fine_tune_backbone
from core.context import Context
from core.decoder import rnn_class


class CNNEncoder(nn.Module):
    """A backbone (by name, or built) cut before pooling, frozen but for its last `fine_tune` blocks; memory = the
    flattened feature grid (B, h*w, C), h0 = tanh(W mean + b) per decoder layer, and c0 likewise from its own
    layer when the decoder is an LSTM."""

    def __init__(
        self,
        backbone: str | Backbone,
        decoder_hidden: int,
        decoder_layers: int = 1,
        cell: str = "gru",
        weights: str | Path | None = "default",
        fine_tune: int = 0,
        data_dir: str | Path | None = None,
    ):
        super().__init__()
        rnn_class(cell)  # an unknown cell is refused here, not first by the decoder
        if isinstance(backbone, str):
            if weights is None:
                warnings.warn(
                    f"the {backbone} backbone starts from random weights: its last {fine_tune} blocks "
                    "train from scratch"
                    if fine_tune
                    else f"the {backbone} backbone has random weights "
                    "and is frozen: its features stay random (give weights, or fine_tune to train it)"
                )
            backbone = build_backbone(backbone, weights, data_dir=data_dir)
        self.backbone = backbone
        fine_tune_backbone(backbone, fine_tune)
        self.cell, self.decoder_hidden, self.decoder_layers = cell, decoder_hidden, decoder_layers
        self.init_h = nn.Linear(backbone.channels, decoder_layers * decoder_hidden)
        self.init_c = nn.Linear(backbone.channels, decoder_layers * decoder_hidden) if cell == "lstm" else None

    @property
    def memory_dim(self) -> int:
        return self.backbone.channels

    def forward(self, images: Tensor) -> Context:
        """images (B, 3, S, S), normalised as backbone.spec.transform makes them -> Context."""
        frozen = self.backbone.trainable_blocks == 0
        with torch.no_grad() if frozen else contextlib.nullcontext():  # no graph through a frozen backbone
            features = self.backbone(images)  # (B, C, h, w)
        return self.context_from_features(features)

    def context_from_features(self, features: Tensor) -> Context:
        """Feature maps (B, C, h, w), or regions (B, h*w, C) as a feature cache stores them -> Context with memory
        (B, h*w, C), no mask (every region is real), h0 (and c0) (layers, B, H)."""
        features = to_regions(features)  # (B, h*w, C)
        if features.dim() != 3 or features.size(2) != self.memory_dim:
            raise ValueError(
                f"features must be (B, {self.memory_dim}, h, w) or (B, h*w, {self.memory_dim}), "
                f"got {tuple(features.shape)}"
            )
        memory = features.to(self.init_h.weight.dtype)  # (B, S, C); cached features are float16
        mean = memory.mean(dim=1)  # (B, C)
        h0 = self._initial(self.init_h, mean)
        c0 = self._initial(self.init_c, mean) if self.init_c is not None else None
        return Context(h0, c0, memory, None)

    def _initial(self, layer: nn.Linear, mean: Tensor) -> Tensor:
        """mean (B, C) -> tanh(layer(mean)) as (layers, B, H)."""
        state = torch.tanh(layer(mean)).view(mean.size(0), self.decoder_layers, self.decoder_hidden)  # (B, L, H)
        return state.transpose(0, 1).contiguous()  # (L, B, H)


def to_regions(features: Tensor) -> Tensor:
    """Feature maps (N, C, h, w) -> regions (N, h*w, C), as the decoder attends to them; regions stay as they are."""
    return features.flatten(2).transpose(1, 2) if features.dim() == 4 else features
