"""Attention over a memory with a padding mask: Bahdanau (additive) and Luong (multiplicative, "general")."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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
        """query (B, Q), keys (B, S, A), memory (B, S, M), mask (B, S) -> context (B, M), weights (B, S)."""
        scores = self.energy(torch.tanh(keys + self.query_proj(query).unsqueeze(1))).squeeze(2)  # (B, S)
        return _attend(scores, memory, mask)


class LuongAttention(nn.Module):
    """score(q, m) = q . W m, computed as (W^T q) . m so the memory needs no projection."""

    def __init__(self, query_dim: int, memory_dim: int, attn_dim: int = 0):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, memory_dim, bias=False)

    def keys(self, memory: Tensor) -> Tensor:
        return memory

    def forward(self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """query (B, Q), keys = memory (B, S, M), mask (B, S) -> context (B, M), weights (B, S)."""
        scores = torch.bmm(keys, self.query_proj(query).unsqueeze(2)).squeeze(2)  # (B, S)
        return _attend(scores, memory, mask)


def _attend(scores: Tensor, memory: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores, dim=-1)  # (B, S); padding gets exactly 0
    return torch.bmm(weights.unsqueeze(1), memory).squeeze(1), weights  # (B, M), (B, S)


ATTENTIONS = {"bahdanau": BahdanauAttention, "luong": LuongAttention}
