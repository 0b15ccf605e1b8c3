"""`Context`: everything a provider hands to the decoder, made once per batch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from core.errors import check_device


@dataclass(frozen=True)
class Context:
    """Initial state and optional memory for the decoder, in two kinds of rows:

    - one row per sequence decoded: h0 (layers, N, H), c0 (layers, N, H) or None (an LSTM then starts at zero);
    - one row per example: memory (B, S, M) to attend to, memory_mask (B, S) True on real positions, and keys
      (B, S, A), the attention keys a decoder makes from the memory once (`prepare`).

    N is a multiple of B: beam search decodes K sequences per example (`expand`), rows b*K .. b*K+K-1 of h0
    belonging to example b, and all K read that example's one row of memory (a memory of one row serves every
    example). A decoder that reads the memory row by row takes `per_sequence(ctx.memory)`.
    """

    h0: Tensor
    c0: Tensor | None = None
    memory: Tensor | None = None
    memory_mask: Tensor | None = None
    keys: Tensor | None = None

    def __post_init__(self):
        """Each field's kind and number of dimensions, and a mask that fits its memory (checked where a context
        is made, not deep inside torch)."""
        for name, dims in (("h0", 3), ("c0", 3), ("memory", 3), ("memory_mask", 2), ("keys", 3)):
            t = getattr(self, name)
            if t is not None and not isinstance(t, Tensor):
                raise TypeError(f"Context.{name} must be a tensor, got {type(t).__name__}")
            if t is not None and t.dim() != dims:
                raise ValueError(f"Context.{name} must have {dims} dimensions, got shape {tuple(t.shape)}")
        if self.memory_mask is not None:
            if self.memory is None or self.memory_mask.shape != self.memory.shape[:2]:
                raise ValueError(
                    f"Context.memory_mask has shape {tuple(self.memory_mask.shape)}; it needs the "
                    "memory's first two, (B, S)" + ("" if self.memory is not None else ": no memory")
                )
            if self.memory_mask.dtype != torch.bool:
                raise TypeError(
                    f"Context.memory_mask must be a bool tensor (True on real positions), got {self.memory_mask.dtype}"
                )

    @property
    def rows(self) -> int:
        """Sequences decoded (examples x beams after `expand`): rows of h0."""
        return self.h0.size(1)

    def per_sequence(self, t: Tensor) -> Tensor:
        """A tensor with one row per example (memory, mask, keys) repeated to one row per sequence."""
        return t.repeat_interleave(self.rows // t.size(0), dim=0)

    def expand(self, k: int) -> Context:
        """k sequences per example (rows b*k .. b*k+k-1 for example b), for beam search; the memory stays."""

        c0 = None if self.c0 is None else self.c0.repeat_interleave(k, dim=1)
        return replace(self, h0=self.h0.repeat_interleave(k, dim=1), c0=c0)

    def index_select(self, examples: Tensor) -> Context:
        """The examples `examples` (E,), in that order, of a context with one sequence per example."""
        return self.keep_examples(examples, 1)

    def keep_examples(self, examples: Tensor, k: int) -> Context:
        """Keep the examples `examples` (E,), in that order, of a context with k sequences per example: their
        k rows of h0 and c0, and their rows of the memory, mask and keys (one each, or k each when a decoder
        repeated them per sequence). A memory of one row that every example reads stays as it is."""
        n = self.rows // k
        rows: dict[str, Any] = {name: _keep(getattr(self, name), examples, k, n, dim) for name, dim in ROW_DIMS.items()}
        return replace(self, **rows)

    def to(self, device: torch.device | str) -> Context:
        device = check_device("device", device)
        moved: dict[str, Any] = {n: None if getattr(self, n) is None else getattr(self, n).to(device) for n in ROW_DIMS}
        return replace(self, **moved)


ROW_DIMS = {"h0": 1, "c0": 1, "memory": 0, "memory_mask": 0, "keys": 0}  # each field's batch dimension


def _keep(t: Tensor | None, examples: Tensor, k: int, n: int, dim: int) -> Tensor | None:
    """`t` cut down along `dim` to the examples `examples` of n: k rows each (n*k rows), one each (n rows), or
    t as it is (one row for every example)."""
    if t is None or t.size(dim) not in (n, n * k):
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


def reorder(state: Any, rows: Tensor) -> Any:
    """Every tensor of a (nested) state indexed by `rows` on dimension 0."""
    return map_tensors(state, lambda t: t.index_select(0, rows))
