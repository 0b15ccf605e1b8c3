"""Turn core's CPU speed tricks (core/speedups.py) off, one by one, to measure what each buys (benchmarks only:
the library itself has no switch). `SEQGEN_BENCH_WITHOUT=packed,topk python benchmarks/decode.py` runs
without those two; the malloc settings are turned off with the benchmarks' own --malloc-defaults."""
from __future__ import annotations

import os

import torch

from core import speedups


def _packed() -> None:  # oneDNN with pre-packed weights, and the written-out RNN step that uses them
    speedups.AVAILABLE = False


def _table() -> None:  # the per-token table of the embedding's share of the input gates
    speedups.MAX_TABLE_VALUES = 0


def _topk() -> None:  # topk over the blocks with the largest maxima
    speedups.TOPK_BLOCK = 1 << 62  # no row has 4 m blocks: plain topk


def _argmax() -> None:  # argmax through block maxima
    speedups.ARGMAX_BLOCK = 1 << 62  # no row is long enough: plain argmax


def _chunks() -> None:  # Bahdanau scores as 2 v . sigmoid(2e), in cache-sized chunks
    def plain(queries: torch.Tensor, keys: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.tanh(keys.unsqueeze(1) + queries.unsqueeze(2)) @ v
    speedups.additive_scores = plain


TRICKS = {"packed": _packed, "table": _table, "topk": _topk, "argmax": _argmax, "chunks": _chunks}


def disable_from_env() -> list[str]:
    """Turn off the tricks named in $SEQGEN_BENCH_WITHOUT (comma-separated); returns their names."""
    names = [n for n in os.environ.get("SEQGEN_BENCH_WITHOUT", "").split(",") if n]
    for name in names:
        if name not in TRICKS:
            raise SystemExit(f"SEQGEN_BENCH_WITHOUT: unknown trick {name!r}; known: {', '.join(TRICKS)}")
        TRICKS[name]()
    return names
