"""`Captioner`: a CNN encoder (feature grid -> Context) + the shared attention decoder + a word tokenizer, with
`caption` and `attention` (Show, Attend and Tell)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn

from captioning.backbones import BACKBONES
from captioning.encoder import CNNEncoder
from captioning.images import FITS, ImageInput, load_image
from core.context import Context
from core.decoder import DecoderConfig, build_decoder
from core.errors import UserError, check_int
from core.search import Hypothesis, search_with, seeded
from core.search_config import SearchConfig
from core.task import load_task, save_task, task_payload
from core.tokenizers import BOS, EOS, NOT_GENERATED, PAD, SPECIALS, UNK, Tokenizer, WordTokenizer

TASK = "captioning"
DEFAULT_SEARCH = SearchConfig(method="beam", beam_size=5, max_len=30)
NEVER_WRITTEN = (*NOT_GENERATED, UNK)  # a caption with "<unk>" in it helps no reader


@dataclass
class ImageConfig:
    backbone: str = "efficientnet_lite0"
    image_size: int = 224
    fit: str = "pad"  # the whole picture on white: a centre crop cuts off the ends of wide drawings
    fine_tune: int = 0
    # names the backbone's starting weights (their digest, `Backbone.fingerprint`): what the run began from
    weights_id: str = ""

    CHOICES = {"backbone": list(BACKBONES), "fit": list(FITS)}
    RANGES = {"image_size": (32, 1024), "fine_tune": (0,)}  # core.errors.check_config


def normalise(caption: str) -> str:
    """Captions are learned and scored in lower case, with single spaces."""
    return " ".join(caption.lower().split())


def train_word_tokenizer(captions: Sequence[str], min_count: int = 1) -> WordTokenizer:
    """A word vocabulary of the normalised training captions: every word seen `min_count` times."""
    tokenizer = WordTokenizer.train(" ".join(normalise(c) for c in captions), max_size=1 << 30, min_count=min_count)
    if tokenizer.vocab_size == len(SPECIALS):  # every caption would be <unk>: nothing to learn
        raise UserError(
            f"--min-count {min_count} leaves no word in the vocabulary (no training word is seen "
            f"{min_count} times); lower it"
        )
    return tokenizer


def caption_forward(
    model: Captioner, batch: tuple[Tensor, Tensor, Tensor], carry: Any, attention_penalty: float = 1.0
) -> tuple[Tensor, Tensor, None, Tensor]:
    """Trainer step: (features (B, S, C) or images (B, 3, H, W), tgt_in, tgt_out) -> logits, targets, no carry,
    and Show, Attend and Tell's doubly stochastic penalty: attention_penalty * mean over regions of
    (1 - the region's attention summed over the caption)^2, which keeps every region in sight."""
    inputs, tgt_in, tgt_out = batch
    logits, _, weights = model.decoder.unroll(tgt_in, model.context(inputs))  # weights (B, T, S) or None
    if weights is None or attention_penalty == 0:
        return logits, tgt_out, None, logits.new_zeros(())
    real = (tgt_out != PAD).unsqueeze(2).to(weights.dtype)  # (B, T, 1): no attention counted at padding
    coverage = (weights * real).sum(dim=1)  # (B, S)
    return logits, tgt_out, None, attention_penalty * ((1 - coverage) ** 2).mean()


class Captioner(nn.Module):
    """Picture -> CNNEncoder (feature grid as memory, mean feature as start) -> RNNDecoder -> words."""

    task = TASK

    def __init__(
        self,
        tokenizer: Tokenizer,
        image: ImageConfig,
        decoder: DecoderConfig,
        weights: str | Path | None = "default",
        data_dir: str | Path | None = None,
    ):
        """`weights`: the backbone's starting weights ("default": the pretrained ones this machine can fetch, a
        torchvision state dict file, or None: random)."""
        super().__init__()
        self.encoder = CNNEncoder(
            image.backbone, decoder.hidden_dim, decoder.num_layers, decoder.cell, weights, image.fine_tune, data_dir
        )
        image = replace(image, weights_id=image.weights_id or self.encoder.backbone.fingerprint)  # it started from
        self.decoder = build_decoder(tokenizer.vocab_size, decoder, memory_dim=self.encoder.memory_dim)
        self.tokenizer, self.image_config, self.decoder_config = tokenizer, image, decoder
        self.transform = self.encoder.backbone.spec.transform(image.image_size, image.fit)

    @property
    def device(self) -> torch.device:
        return self.decoder.embedding.weight.device

    # -- data -----------------------------------------------------------------------------------------
    def caption_ids(self, caption: str) -> list[int]:
        with warnings.catch_warnings():  # unknown words are expected in held-out captions: <unk>, quietly
            warnings.simplefilter("ignore")
            return [BOS] + self.tokenizer.encode(normalise(caption)) + [EOS]

    def pictures(self, images: Sequence[ImageInput]) -> Tensor:
        """Pictures (paths, PIL images or tensors) -> the backbone's input (N, 3, S, S)."""
        return torch.stack([self.transform(load_image(image)) for image in images])

    def context(self, inputs: Tensor) -> Context:
        """Regions (B, S, C) as the feature cache keeps them, or pictures (B, 3, H, W) -> Context."""
        if inputs.dim() == 3:
            return self.encoder.context_from_features(inputs)
        return self.encoder(inputs.to(self.encoder.init_h.weight.dtype))

    # -- checkpoints --------------------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        return task_payload(
            TASK, {"image": self.image_config, "decoder": self.decoder_config}, {"captions": self.tokenizer}
        )

    def save(self, path: str | Path) -> Path:
        return save_task(self, path)

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> Captioner:
        """A checkpoint's captioner (backbone weights included) in eval mode on `device`."""

        def build(configs: dict, tokenizers: dict) -> Captioner:
            with warnings.catch_warnings():  # built with random weights, at once replaced by the checkpoint's
                warnings.simplefilter("ignore")
                return cls(tokenizers["captions"], configs["image"], configs["decoder"], weights=None)

        return load_task(path, TASK, {"image": ImageConfig, "decoder": DecoderConfig}, build, device, dtype)

    # -- captioning -----------------------------------------------------------------------------------
    @torch.no_grad()
    def search(
        self,
        images: Sequence[ImageInput] | Tensor,
        config: SearchConfig | None = None,
        *,
        batch_size: int = 32,
        **options: Any,
    ) -> list[list[Hypothesis]]:
        """The n best hypotheses per picture (greedy and sampling give one), as `config` says (default: beam 5)
        with any field overridden by keyword. `images`: paths, PIL images or tensors (3, H, W), or cached regions
        (N, S, C) as one tensor. Sampling draws from one generator seeded by config.seed."""
        config = SearchConfig.of(config, DEFAULT_SEARCH, **options)
        config = replace(config, min_len=max(1, config.min_len))  # a caption has at least one word
        check_int("batch_size", batch_size, 1)
        images = self._pictures_or_regions(images)
        self.eval()
        generator = seeded(config.seed, self.device)
        found: list[list[Hypothesis]] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            inputs = chunk if isinstance(chunk, Tensor) else self.pictures(chunk)
            ctx = self.context(inputs.to(self.device))
            bos = torch.full((len(chunk),), BOS, device=self.device)
            found += search_with(config, self.decoder, ctx, bos, eos=EOS, forbid=NEVER_WRITTEN, generator=generator)
        return found

    def _pictures_or_regions(self, images: Any) -> Sequence[ImageInput] | Tensor:
        """`search`'s images as a list of pictures (any iterable read once) or cached regions (N, S, C); what is
        neither is refused here, naming what it is."""
        if isinstance(images, Tensor):
            if images.dim() != 3 or images.size(2) != self.encoder.memory_dim:
                raise ValueError(
                    f"a tensor of images is taken as cached regions (N, S, {self.encoder.memory_dim}), "
                    f"got shape {tuple(images.shape)}; pass pictures as a list ([picture])"
                )
            return images
        if images is None or isinstance(images, (str, Path, Image.Image)):
            raise TypeError(
                f"images must be a list of pictures, got {type(images).__name__}; for one picture, pass [picture]"
            )
        try:
            return list(images)
        except TypeError:
            raise TypeError(f"images must be a list of pictures, got {type(images).__name__}") from None

    def caption(
        self, images: Sequence[ImageInput] | Tensor, config: SearchConfig | None = None, **options: Any
    ) -> list[str]:
        """One caption per picture: the best hypothesis of `search`."""
        return [self.tokenizer.decode(nbest[0].tokens) for nbest in self.search(images, config, **options)]

    def attention(
        self, image: ImageInput, config: SearchConfig | None = None, **options: Any
    ) -> tuple[list[str], Tensor]:
        """One picture's caption as words, and where each word looked: maps (T, h, w) over the feature grid,
        each summing to 1."""
        if self.decoder.attention is None:
            raise ValueError("this captioner's decoder has no attention (attention 'none')")
        return self.maps_of(self.search([image], config, **options)[0][0])

    def maps_of(self, hypothesis: Hypothesis) -> tuple[list[str], Tensor]:
        """A hypothesis's words and where each looked: maps (T, h, w) over the square feature grid."""
        words = [self.tokenizer.decode([token]) for token in hypothesis.tokens]
        if hypothesis.attention is None:  # no attention, or no word: no map (every backbone has stride 32)
            side = -(-self.image_config.image_size // 32)
            return words, torch.zeros(0, side, side)
        side = math.isqrt(hypothesis.attention.size(1))  # (T, h*w) over the square grid of a square input
        return words, hypothesis.attention.view(len(words), side, side)
