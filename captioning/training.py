"""What training a captioner needs beyond core's Trainer: batches of (picture, caption) pairs whose pictures come as
cached features (a frozen backbone) or as pixels (a fine-tuned one), the validation score that picks the best
checkpoint (CIDEr-D of greedy captions), and self-critical training's pieces: batches of pictures with all their
references, and CIDEr-D as the reward."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from captioning.backbones import Backbone
from captioning.captioner import NEVER_WRITTEN, Captioner, ImageConfig
from captioning.cider import CiderD
from captioning.data import ImageCaptions
from captioning.encoder import to_regions
from captioning.evaluation import caption_scores, tokenized
from captioning.features import extract_features
from core.batching import pad
from core.errors import UserError
from core.self_critical import Episode, Reward
from core.tokenizers import BOS, EOS

Example = tuple[int, list[int]]  # (picture's row, caption ids with BOS and EOS)


class CaptionBatches:
    """Every (picture, caption) pair once per epoch, shuffled anew each epoch from `seed` and the epoch, in batches
    of `batch_size`: (inputs of the pictures, tgt_in (B, T), tgt_out (B, T)). `inputs(rows)` gives the pictures'
    regions (B, S, C) or pixels (B, 3, H, W)."""

    carries_state = False

    def __init__(
        self,
        examples: Sequence[Example],
        inputs: Callable[[list[int]], Tensor],
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
    ):
        self.examples, self.inputs, self.batch_size, self.seed, self.shuffle = (
            examples,
            inputs,
            batch_size,
            seed,
            shuffle,
        )

    def __len__(self) -> int:
        return -(-len(self.examples) // self.batch_size)

    def batch(self, epoch: int, index: int) -> tuple[Tensor, Tensor, Tensor]:
        order = (
            torch.randperm(len(self.examples), generator=torch.Generator().manual_seed(self.seed + epoch))
            if self.shuffle
            else torch.arange(len(self.examples))
        )
        chosen = [self.examples[int(i)] for i in order[index * self.batch_size : (index + 1) * self.batch_size]]
        tgt_in, _ = pad([ids[:-1] for _, ids in chosen])
        tgt_out, _ = pad([ids[1:] for _, ids in chosen])
        return self.inputs([row for row, _ in chosen]), tgt_in, tgt_out


def examples_of(model: Captioner, records: Sequence[ImageCaptions], max_words: int | None = None) -> list[Example]:
    """One example per reference caption, its picture named by the record's row; captions of more than `max_words`
    words (training's bound on a batch, and so on memory) are set aside, with one warning that counts them."""
    examples = [(row, model.caption_ids(caption)) for row, record in enumerate(records) for caption in record.captions]
    if max_words is None:
        return examples
    kept = [(row, ids) for row, ids in examples if len(ids) - 2 <= max_words]
    if len(kept) < len(examples):
        warnings.warn(
            f"{len(examples) - len(kept)} of the {len(examples)} training captions are set aside: more "
            f"than --max-caption-len {max_words} words"
        )
    if not kept:
        raise UserError(f"no training caption is within --max-caption-len {max_words} words")
    return kept


def cached_regions(
    backbone: Backbone,
    config: ImageConfig,
    paths: Sequence[Path],
    cache_dir: str | Path | None = None,
    batch_size: int = 32,
) -> Tensor:
    """The pictures' feature regions (N, S, C) float16 under a frozen backbone, at the config's size and fit, from
    the feature cache (computed and stored on first use, with a progress bar)."""
    return to_regions(extract_features(backbone, paths, config.image_size, config.fit, cache_dir, batch_size))


def regions_by_split(
    backbone: Backbone,
    config: ImageConfig,
    splits: dict[str, Sequence[ImageCaptions]],
    cache_dir: str | Path | None = None,
) -> dict[str, Tensor]:
    """cached_regions of every split's pictures, read from the cache in one pass and handed back per split."""
    paths = [record.image for records in splits.values() for record in records]
    regions = cached_regions(backbone, config, paths, cache_dir)
    found, start = {}, 0
    for name, records in splits.items():
        found[name], start = regions[start : start + len(records)], start + len(records)
    return found


def picture_inputs(
    model: Captioner, records: Sequence[ImageCaptions], regions: Tensor | None
) -> Callable[[list[int]], Tensor]:
    """rows -> the batch's regions (from `regions`), or its pictures' pixels when there are none (fine-tuning)."""
    if regions is not None:
        return lambda rows: regions[rows]
    return lambda rows: model.pictures([records[row].image for row in rows])


def validation_cider(
    inputs: Tensor | Sequence[Path], references: Sequence[Sequence[str]], batch_size: int = 64
) -> Callable[[Captioner], dict[str, float]]:
    """Trainer metrics_fn: CIDEr-D (and BLEU-4) of the greedy captions of the validation pictures."""

    def metrics(model: Captioner) -> dict[str, float]:
        captions = model.caption(inputs, method="greedy", batch_size=batch_size)
        scores = caption_scores(captions, references)
        return {"valid_cider_d": float(scores["cider_d"]), "valid_bleu4": float(scores["bleu4"])}

    return metrics


class PictureBatches:
    """Every picture once per epoch with all its references (tokenized as CIDEr-D reads them), shuffled anew each
    epoch from `seed` and the epoch, in batches of `batch_size`: (inputs of the pictures, their references)."""

    carries_state = False

    def __init__(
        self, records: Sequence[ImageCaptions], inputs: Callable[[list[int]], Tensor], batch_size: int, seed: int
    ):
        self.references = [[tokenized(caption) for caption in record.captions] for record in records]
        self.inputs, self.batch_size, self.seed = inputs, batch_size, seed

    def __len__(self) -> int:
        return -(-len(self.references) // self.batch_size)

    def batch(self, epoch: int, index: int) -> tuple[Tensor, list[list[str]]]:
        order = torch.randperm(len(self.references), generator=torch.Generator().manual_seed(self.seed + epoch))
        rows = order[index * self.batch_size : (index + 1) * self.batch_size].tolist()
        return self.inputs(rows), [self.references[row] for row in rows]


def caption_episode(model: Captioner, batch: tuple[Tensor, list[list[str]]]) -> Episode:
    """A batch of `PictureBatches` as self-critical training reads it: a caption has at least one word."""
    inputs, references = batch
    starts = torch.full((len(references),), BOS, device=model.device)
    return Episode(model.decoder, model.context(inputs), starts, references, EOS, forbid=NEVER_WRITTEN, min_len=1)


def cider_reward(model: Captioner, train_references: Sequence[Sequence[str]]) -> Reward:
    """Each caption's CIDEr-D (x1, as Rennie et al. use it) against its picture's references, with the document
    frequencies of the training references (tokenized, as `PictureBatches.references` holds them)."""
    scorer = CiderD(train_references)

    def reward(hypotheses: list[list[int]], references: list) -> Tensor:
        captions = [tokenized(model.tokenizer.decode(tokens)) for tokens in hypotheses]
        return torch.tensor(scorer.scores(captions, references))

    return reward
