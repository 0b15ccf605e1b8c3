"""Training batches of sentence pairs: `BucketBatches` groups sentences of similar length under a token budget so
that padding stays small, with a deterministic `batch(epoch, index)` so that a resumed run sees the same data;
`SampledSubwords` draws a fresh segmentation of every sentence each time (subword regularisation)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import sentencepiece as spm
import torch
from torch import Tensor

from core.errors import UserError
from core.tokenizers import BOS, EOS, SentencePieceTokenizer
from seq2seq.encoded import EncodedPairs, Examples
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
        lengths: np.ndarray | None = None,
    ):
        """`lengths`: `length` of every example, when the caller has them at hand (millions of examples)."""
        if not len(examples):
            raise UserError("no examples to batch")
        self.examples, self.collate, self.seed, self.shuffle = examples, collate, seed, shuffle
        if lengths is None:
            lengths = np.fromiter((length(e) for e in examples), dtype=np.int64, count=len(examples))
        self.order = np.argsort(lengths, kind="stable")  # stable: examples of one length keep their order
        # batch k is examples order[starts[k] : starts[k + 1]]
        self.starts = np.array(_cut(lengths[self.order].tolist(), max_tokens) + [len(examples)], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def batch(self, epoch: int, index: int) -> Any:
        if self.shuffle:
            order = torch.randperm(len(self), generator=torch.Generator().manual_seed(self.seed + epoch))
            index = int(order[index])
        rows = self.order[self.starts[index] : self.starts[index + 1]].tolist()
        return self.collate([self.examples[i] for i in rows])


def _cut(lengths: list[int], max_tokens: int) -> list[int]:
    """Where each batch starts among examples sorted by length: the next example joins the batch while the batch
    stays within `max_tokens` padded tokens (one example alone may be longer)."""
    starts, start = [0], 0
    for i, n in enumerate(lengths):
        if i > start and n * (i - start + 1) > max_tokens:  # n is the batch's longest: the lengths ascend
            starts.append(i)
            start = i
    return starts


def pair_batches(
    model: Translator, pairs: Sequence[tuple[str, str]], max_tokens: int, seed: int = 0, shuffle: bool = True
) -> BucketBatches:
    """(source, target) sentences encoded by `model`, in batches of at most `max_tokens` padded target tokens."""
    encoded = [(model.source_ids(s), model.target_ids(t)) for s, t in pairs]
    return BucketBatches(encoded, lambda e: len(e[1]), model.collate, max_tokens, seed=seed, shuffle=shuffle)


def encoded_batches(
    model: Translator, encoded: EncodedPairs, indices: np.ndarray, max_tokens: int, seed: int = 0
) -> BucketBatches:
    """The batches `pair_batches` makes of the same pairs, from their token ids (`seq2seq.encoded`): the pairs
    `indices` of `encoded`, encoded as `model` reads and writes them."""
    examples = Examples(encoded, indices, model.right_to_left)
    return BucketBatches(
        examples, lambda e: len(e[1]), model.collate, max_tokens, seed=seed, lengths=examples.target_lengths()
    )


class SampledSubwords(BucketBatches):
    """Training batches in which every sentence gets a fresh random segmentation each time it is seen
    (subword regularisation: `SentencePieceTokenizer.sample`). Batches are cut by the lengths of the usual
    segmentation; sentencepiece's generator is seeded from (seed, epoch, index) before each batch, so a resumed
    run draws the same segmentations as an uninterrupted one."""

    def __init__(
        self,
        model: Translator,
        pairs: list[tuple[str, str]],
        max_tokens: int,
        alpha: float,
        seed: int = 0,
        lengths: np.ndarray | None = None,
    ):
        for side in (model.src_tokenizer, model.tgt_tokenizer):
            if not isinstance(side, SentencePieceTokenizer):
                raise ValueError(f"sampled segmentations need sentencepiece tokenizers, not {side.kind}")
        if not 0 < alpha < 1:
            raise ValueError(f"the sampling alpha must be in (0, 1), got {alpha}")
        self.model, self.alpha = model, alpha
        length = lambda pair: len(model.target_ids(pair[1]))  # noqa: E731
        super().__init__(pairs, length, self._collate, max_tokens, seed=seed, lengths=lengths)

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
