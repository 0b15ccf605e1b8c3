"""Attention over a memory with a padding mask: Bahdanau (additive) and Luong (multiplicative, "general")."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core import speedups
from core.step_weights import DecoderLoop


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

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor | None, loop: DecoderLoop | None = None
    ) -> tuple[Tensor, Tensor]:
        """query (N, T, Q), keys (B, S, A), memory (B, S, M), mask (B, S) -> context (N, T, M), weights (N, T, S);
        N = B, or k * B for k beams per example (`per_example`)."""
        queries = per_example(self.query_proj(query) if loop is None else loop.query.linear(query), memory)
        scores = speedups.additive_scores(self, queries, keys, self.energy.weight.view(-1))  # (B, kT, S)
        return _attend(scores, memory, mask, query.size(0), loop)


class LuongAttention(nn.Module):
    """score(q, m) = q . W m / sqrt(M), computed as (W^T q) . m so the memory needs no projection. The scale
    (as in scaled dot-product attention) keeps the softmax from saturating on long memory vectors."""

    def __init__(self, query_dim: int, memory_dim: int, attn_dim: int = 0):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, memory_dim, bias=False)
        self.scale = memory_dim**-0.5

    def keys(self, memory: Tensor) -> Tensor:
        return memory

    def forward(
        self, query: Tensor, keys: Tensor, memory: Tensor, mask: Tensor | None, loop: DecoderLoop | None = None
    ) -> tuple[Tensor, Tensor]:
        """query (N, T, Q), keys = memory (B, S, M), mask (B, S) -> context (N, T, M), weights (N, T, S);
        N = B, or k * B for k beams per example (`per_example`)."""
        queries = per_example(self.query_proj(query) if loop is None else loop.query.linear(query), memory)
        scores = torch.bmm(queries, keys.transpose(1, 2)) if loop is None else loop.memory.scores(queries)
        return _attend(scores * self.scale, memory, mask, query.size(0), loop)  # (B, kT, S)


def per_example(queries: Tensor, memory: Tensor) -> Tensor:
    """Queries (N, T, D) for a memory (B, S, M) with N = k * B, rows b*k .. b*k+k-1 belonging to example b
    (beam search's layout) -> (B, k*T, D): each example's queries side by side, so that its k beams read one
    copy of the memory instead of k (less memory, and less of it to stream at every step)."""
    N, T, D = queries.shape
    B = memory.size(0)
    if N == B:
        return queries
    if N % B:
        raise ValueError(f"{N} query rows for a memory of {B} rows: the query rows must be a multiple")
    return queries.reshape(B, N // B * T, D)


def _attend(
    scores: Tensor, memory: Tensor, mask: Tensor | None, rows: int, loop: DecoderLoop | None = None
) -> tuple[Tensor, Tensor]:
    """scores (B, kT, S) -> context (rows, T, M), weights (rows, T, S), rows = k * B."""
    if mask is not None:
        scores = scores.masked_fill(~mask.unsqueeze(1), float("-inf"))
    weights = F.softmax(scores, dim=-1)  # padding gets exactly 0
    context = torch.bmm(weights, memory) if loop is None else loop.memory.read(weights)
    return context.view(rows, -1, context.size(2)), weights.view(rows, -1, weights.size(2))


ATTENTIONS = {"bahdanau": BahdanauAttention, "luong": LuongAttention}
