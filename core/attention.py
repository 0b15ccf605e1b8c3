"""Attention over a memory with a padding mask: Bahdanau (additive) and Luong (multiplicative, "general")."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core import packed


class BahdanauAttention(nn.Module):
    """score(q, m) = v . tanh(W_q q + W_k m). Keys W_k m are computed once per context with `keys`."""

    def __init__(self, query_dim: int, memory_dim: int, attn_dim: int):
        super().__init__()
        self.key_proj = nn.Linear(memory_dim, attn_dim, bias=False)
        self.query_proj = nn.Linear(query_dim, attn_dim, bias=False)
        self.energy = nn.Linear(attn_dim, 1, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        """(B, S, M) -> (B, S, A)."""
        return self.key_proj(memory)

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """query (B, T, Q), keys (B, S, A), memory (B, S, M), mask (B, S) -> context (B, T, M), weights (B, T, S)."""
        energies = (keys.unsqueeze(1) + packed.linear(self.query_proj, query).unsqueeze(2)).tanh_()  # (B, T, S, A)
        return _attend(self.energy(energies).squeeze(3), memory, mask)


class LuongAttention(nn.Module):
    """score(q, m) = q . W m / sqrt(M), computed as (W^T q) . m so the memory needs no projection. The scale
    (as in scaled dot-product attention) keeps the softmax from saturating on long memory vectors."""

    def __init__(self, query_dim: int, memory_dim: int, attn_dim: int = 0):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, memory_dim, bias=False)
        self.scale = memory_dim ** -0.5

    def keys(self, memory: Tensor) -> Tensor:
        return memory

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """query (B, T, Q), keys = memory (B, S, M), mask (B, S) -> context (B, T, M), weights (B, T, S)."""
        scores = torch.bmm(packed.linear(self.query_proj, query), keys.transpose(1, 2)) * self.scale  # (B, T, S)
        return _attend(scores, memory, mask)


def _attend(scores: Tensor, memory: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """scores (B, T, S) -> context (B, T, M), weights (B, T, S)."""
    if mask is not None:
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
    weights = F.softmax(scores, dim=-1)  # padding gets exactly 0
    return torch.bmm(weights, memory), weights


ATTENTIONS = {"bahdanau": BahdanauAttention, "luong": LuongAttention}
