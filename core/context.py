"""`Context`: everything a provider hands to the decoder, made once per batch."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor


@dataclass(frozen=True)
class Context:
    """Initial state and optional memory for the decoder.

    h0: (layers, B, H) initial hidden state; c0: (layers, B, H) initial cell state (LSTM) or None.
    memory: (B, S, M) vectors to attend to, or None; memory_mask: (B, S), True on real positions.
    In beam search the memory may keep one row per example while h0 has k rows per example (rows b*k ..
    b*k+k-1 are example b's beams), for decoders that say `beams_share_memory`.
    """

    h0: Tensor
    c0: Tensor | None = None
    memory: Tensor | None = None
    memory_mask: Tensor | None = None

    @property
    def batch_size(self) -> int:
        """Rows of h0 (k per example in a context made with repeat_interleave(k, memory=False))."""
        return self.h0.size(1)

    def repeat_interleave(self, k: int, memory: bool = True) -> "Context":
        """Repeat each example k times in a row (example b becomes rows b*k .. b*k+k-1), for beam search.
        memory=False repeats h0 and c0 only, for decoders whose attention takes k queries per memory row."""
        def rep(t: Tensor | None, dim: int) -> Tensor | None:
            return None if t is None else t.repeat_interleave(k, dim=dim)
        if not memory:
            return Context(rep(self.h0, 1), rep(self.c0, 1), self.memory, self.memory_mask)
        return Context(rep(self.h0, 1), rep(self.c0, 1), rep(self.memory, 0), rep(self.memory_mask, 0))

    def index_select(self, rows: Tensor) -> "Context":
        """Keep the examples `rows` (B',), in that order (h0 and memory with one row per example)."""
        def sel(t: Tensor | None, dim: int) -> Tensor | None:
            return None if t is None else t.index_select(dim, rows)
        return Context(sel(self.h0, 1), sel(self.c0, 1), sel(self.memory, 0), sel(self.memory_mask, 0))

    def keep_examples(self, examples: Tensor, k: int) -> "Context":
        """Keep the examples `examples` (E,), in that order, of a context made with repeat_interleave(k, ...):
        their k rows of h0 and c0, and their k rows of the memory, or their one row if it was not repeated. A
        memory with neither (one row that every example reads) stays as it is."""
        n = self.h0.size(1) // k
        return Context(*(keep_examples_of(t, examples, k, n, dim)
                         for t, dim in ((self.h0, 1), (self.c0, 1), (self.memory, 0), (self.memory_mask, 0))))

    def to(self, device: torch.device | str) -> "Context":
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)
        return Context(move(self.h0), move(self.c0), move(self.memory), move(self.memory_mask))


def keep_examples_of(t: Tensor | None, examples: Tensor, k: int, n: int, dim: int = 0) -> Tensor | None:
    """`t` cut down along `dim` to the examples `examples` of n: with n*k entries there (k per example, rows
    b*k .. b*k+k-1), their k each; with n, their one each; with any other number (say, one row that every
    example reads), t as it is."""
    if t is None or not t.dim() or t.size(dim) not in (n, n * k):
        return t
    if t.size(dim) == n:
        return t.index_select(dim, examples)
    return t.index_select(dim, (examples.unsqueeze(1) * k + torch.arange(k, device=examples.device)).view(-1))


def map_tensors(obj: Any, fn: Callable[[Tensor], Tensor]) -> Any:
    """Apply `fn` to every tensor in a nested structure of tuples, named tuples, lists and dicts."""
    if isinstance(obj, Tensor):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(map_tensors(o, fn) for o in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(map_tensors(o, fn) for o in obj)
    if isinstance(obj, dict):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj
