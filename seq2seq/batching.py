"""Training batches of sentence pairs: `BucketBatches` groups sentences of similar length under a token budget so
that padding stays small, with a deterministic `batch(epoch, index)` so that a resumed run sees the same data;
`SampledSubwords` draws a fresh segmentation of every sentence each time (subword regularisation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sentencepiece as spm
import torch
from torch import Tensor

from core.errors import UserError
from core.tokenizers import BOS, EOS, SentencePieceTokenizer
from seq2seq.translator import Translator


class BucketBatches:
    """Examples sorted by length and cut into batches of at most `max_tokens` (padded) tokens; the order of
    the batches is shuffled anew each epoch from `seed` and the epoch number."""

    carries_state = False

    def __init__(
        self,
        examples: Sequence[Any],
        length: Callable[[Any], int],
        collate: Callable[[list], Any],
        max_tokens: int,
        seed: int = 0,
        shuffle: bool = True,
    ):
        if not examples:
            raise UserError("no examples to batch")
        self.examples, self.collate, self.seed, self.shuffle = examples, collate, seed, shuffle
        self.batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in sorted(range(len(examples)), key=lambda i: length(examples[i])):
            n = length(examples[i])
            if current and max(longest, n) * (len(current) + 1) > max_tokens:
                self.batches.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, n)
        self.batches.append(current)

    def __len__(self) -> int:
        return len(self.batches)

    def batch(self, epoch: int, index: int) -> Any:
        if self.shuffle:
            order = torch.randperm(len(self.batches), generator=torch.Generator().manual_seed(self.seed + epoch))
            index = int(order[index])
        return self.collate([self.examples[i] for i in self.batches[index]])


def pair_batches(
    model: Translator, pairs: Sequence[tuple[str, str]], max_tokens: int, seed: int = 0, shuffle: bool = True
) -> BucketBatches:
    """(source, target) sentences encoded by `model`, in batches of at most `max_tokens` padded target tokens."""
    encoded = [(model.source_ids(s), model.target_ids(t)) for s, t in pairs]
    return BucketBatches(encoded, lambda e: len(e[1]), model.collate, max_tokens, seed=seed, shuffle=shuffle)


class SampledSubwords(BucketBatches):
    """Training batches in which every sentence gets a fresh random segmentation each time it is seen
    (subword regularisation: `SentencePieceTokenizer.sample`). Batches are cut by the lengths of the usual
    segmentation; sentencepiece's generator is seeded from (seed, epoch, index) before each batch, so a resumed
    run draws the same segmentations as an uninterrupted one."""

    def __init__(self, model: Translator, pairs: list[tuple[str, str]], max_tokens: int, alpha: float, seed: int = 0):
        for side in (model.src_tokenizer, model.tgt_tokenizer):
            if not isinstance(side, SentencePieceTokenizer):
                raise ValueError(f"sampled segmentations need sentencepiece tokenizers, not {side.kind}")
        if not 0 < alpha < 1:
            raise ValueError(f"the sampling alpha must be in (0, 1), got {alpha}")
        self.model, self.alpha = model, alpha
        super().__init__(pairs, lambda pair: len(model.target_ids(pair[1])), self._collate, max_tokens, seed=seed)

    def batch(self, epoch: int, index: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        spm.set_random_generator_seed((self.seed * 1_000_003 + epoch * 100_003 + index) % 2**31)
        return super().batch(epoch, index)

    def _collate(self, pairs: list[tuple[str, str]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        src_tok, tgt_tok = self.model.src_tokenizer, self.model.tgt_tokenizer
        assert isinstance(src_tok, SentencePieceTokenizer) and isinstance(tgt_tok, SentencePieceTokenizer)  # (init)
        return self.model.collate(
            [
                (
                    src_tok.sample(src, self.alpha) + [EOS],
                    [BOS] + self.model.in_target_order(tgt_tok.sample(tgt, self.alpha)) + [EOS],
                )
                for src, tgt in pairs
            ]
        )
