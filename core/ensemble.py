"""`Ensemble`: several decoders searched as one, each next-token distribution the mean of theirs.

Independently trained models make different errors; averaging their probabilities at every step (as fairseq
and Marian do with several checkpoints) is the classic way to buy translation quality with decoding time.
The search functions see one decoder and one `Context`: `join` lays the members' contexts side by side
along the feature dimension (h0, c0, memory, and the attention keys `prepare` adds), so expanding or cutting
down rows for beam search works unchanged, and `prepare`/`start`/`step` cut each member's part back out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import torch
from torch import Tensor

from core.context import Context


class EnsembleState(NamedTuple):
    """The members' states, and the mean of their attention weights (B, S) when every member attends."""

    members: tuple
    attn: Tensor | None


class Ensemble:
    """Decoders with `start(ctx)` and `step(tokens, state, ctx)` over one vocabulary, searched together."""

    def __init__(self, decoders: Sequence[Any]):
        if not decoders:
            raise ValueError("an ensemble needs at least one decoder")
        self.decoders = list(decoders)
        self._hidden: list[int] | None = None  # each member's h0 (and c0) size, set by `join`
        self._memory: list[int] | None = None
        self._keys: list[int] | None = None  # each member's attention key size, set by `prepare`

    def join(self, contexts: Sequence[Context]) -> Context:
        """One Context holding every member's context (in the order of the decoders)."""
        if len(contexts) != len(self.decoders):
            raise ValueError(f"{len(self.decoders)} decoders but {len(contexts)} contexts")
        first = contexts[0]
        if any(c.h0.shape[:2] != first.h0.shape[:2] for c in contexts):
            raise ValueError(
                "ensemble members need the same number of layers and the same batch in h0, got "
                + ", ".join(str(tuple(c.h0.shape)) for c in contexts)
            )
        if len({c.h0.dtype for c in contexts}) > 1:
            raise ValueError("ensemble members need one dtype, got " + ", ".join(str(c.h0.dtype) for c in contexts))
        has_memory = {c.memory is not None for c in contexts}
        if len(has_memory) > 1:
            raise ValueError("either every ensemble member attends to a memory or none does")
        # an LSTM member without c0 starts from zeros, as RNNDecoder.start does; a GRU member ignores it
        c0 = None
        if any(c.c0 is not None for c in contexts):
            c0 = torch.cat([c.c0 if c.c0 is not None else torch.zeros_like(c.h0) for c in contexts], dim=2)
        memories = [c.memory for c in contexts if c.memory is not None]  # every member's, or none
        masks = [c.memory_mask for c in contexts]
        if any(m is None or masks[0] is None or not torch.equal(m, masks[0]) for m in masks if m is not masks[0]) or (
            memories and any(m.shape[:2] != memories[0].shape[:2] for m in memories)
        ):
            raise ValueError("ensemble members must read the same source: memory lengths or masks differ")
        keys = [c.keys for c in contexts if c.keys is not None]  # prepared: each member's attention keys
        self._hidden = [c.h0.size(2) for c in contexts]
        self._memory = [m.size(2) for m in memories] if memories else None
        self._keys = [k.size(2) for k in keys] if len(keys) == len(contexts) else None
        return Context(
            torch.cat([c.h0 for c in contexts], dim=2),
            c0,
            torch.cat(memories, dim=2) if memories else None,
            masks[0],
            torch.cat(keys, dim=2) if self._keys else None,
        )

    def split(self, ctx: Context) -> list[Context]:
        """The members' contexts back out of a joined (possibly expanded or cut down) one."""
        if self._hidden is None:
            raise ValueError("call Ensemble.join(contexts) to make the context the search starts from")
        n = len(self.decoders)

        def parts(t: Tensor | None, sizes: list[int] | None) -> list[Tensor | None]:
            return [None] * n if t is None else list(t.split(sizes, dim=2))

        h0s = ctx.h0.split(self._hidden, dim=2)
        rest = zip(parts(ctx.c0, self._hidden), parts(ctx.memory, self._memory), parts(ctx.keys, self._keys))
        return [Context(h0, c0, memory, ctx.memory_mask, keys) for h0, (c0, memory, keys) in zip(h0s, rest)]

    def prepare(self, ctx: Context) -> Context:
        """Each member's prepared context, joined again (their attention keys side by side). A member that
        wants its memory once per sequence makes every member take it so."""
        prepared = [d.prepare(c) for d, c in zip(self.decoders, self.split(ctx))]
        if prepared[0].memory is not None and len({c.memory.size(0) for c in prepared}) > 1:
            prepared = [
                replace(
                    c,
                    **{
                        name: c.per_sequence(getattr(c, name))
                        for name in ("memory", "memory_mask", "keys")
                        if getattr(c, name) is not None
                    },
                )
                for c in prepared
            ]
        return self.join(prepared)

    def start(self, ctx: Context) -> EnsembleState:
        return EnsembleState(tuple(d.start(c) for d, c in zip(self.decoders, self.split(ctx))), None)

    def step(self, tokens: Tensor, state: EnsembleState, ctx: Context) -> tuple[Tensor, EnsembleState]:
        """log of the mean of the members' next-token probabilities (B, V), and the new state."""
        steps = [d.step(tokens, s, c) for d, s, c in zip(self.decoders, state.members, self.split(ctx))]
        logp = torch.stack([lp for lp, _ in steps]).logsumexp(dim=0) - math.log(len(steps))
        members = tuple(s for _, s in steps)
        attns = [a for a in (getattr(s, "attn", None) for s in members) if a is not None]
        attn = torch.stack(attns).mean(dim=0) if len(attns) == len(members) else None
        return logp, EnsembleState(members, attn)
