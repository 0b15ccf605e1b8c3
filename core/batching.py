"""Sequences of token ids of different lengths as one padded batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from core.tokenizers import PAD


def pad(sequences: Sequence[Sequence[int]], value: int = PAD) -> tuple[Tensor, Tensor]:
    """Right-pad lists of ids: (B, T) tensor and lengths (B,)."""
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    out = torch.full((len(sequences), int(lengths.max())), value, dtype=torch.long)
    for i, s in enumerate(sequences):
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out, lengths
