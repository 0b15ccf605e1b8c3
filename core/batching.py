"""Batch sources for the trainer: deterministic `batch(epoch, index)` so a resumed run sees the same data.

`TokenStream` cuts one continuous token stream for truncated back-propagation through time (the hidden state
is carried from one chunk to the next, as char-rnn does); `BucketBatches` groups sentences of similar length
under a token budget so padding stays small.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor

from core.errors import UserError
from core.tokenizers import PAD


class TokenStream:
    """B parallel rows of a token stream, read in chunks of `bptt` tokens; the state carries across chunks."""

    carries_state = True

    def __init__(self, ids: Sequence[int] | Tensor, batch_size: int, bptt: int):
        ids = torch.as_tensor(ids, dtype=torch.long)
        per_row = ids.numel() // batch_size
        if per_row < 2:
            raise UserError(f"the text has {ids.numel()} tokens, too few for batch size {batch_size} "
                            "(use a smaller --batch-size or a longer corpus)")
        self.rows = ids[: per_row * batch_size].view(batch_size, per_row)  # (B, N)
        self.bptt = bptt

    def __len__(self) -> int:
        return -(-(self.rows.size(1) - 1) // self.bptt)

    def batch(self, epoch: int, index: int) -> tuple[Tensor, Tensor]:
        """Inputs and next-token targets, each (B, <= bptt); the same for every epoch."""
        start = index * self.bptt
        end = min(start + self.bptt, self.rows.size(1) - 1)
        return self.rows[:, start:end], self.rows[:, start + 1:end + 1]


class BucketBatches:
    """Examples sorted by length and cut into batches of at most `max_tokens` (padded) tokens; the order of
    the batches is shuffled anew each epoch from `seed` and the epoch number."""

    carries_state = False

    def __init__(self, examples: Sequence[Any], length: Callable[[Any], int], collate: Callable[[list], Any],
                 max_tokens: int, seed: int = 0, shuffle: bool = True):
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


def pad(sequences: Sequence[Sequence[int]], value: int = PAD) -> tuple[Tensor, Tensor]:
    """Right-pad lists of ids: (B, T) tensor and lengths (B,)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    out = torch.full((len(sequences), int(lengths.max())), value, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out, lengths
