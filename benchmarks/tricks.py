"""Turn core's CPU speed tricks off, one by one, to measure what each buys (benchmarks only: the library itself
has no switch). `SEQGEN_BENCH_WITHOUT=packed,topk python benchmarks/decode.py` runs without those two."""
from __future__ import annotations

import os

import torch


def _packed() -> None:  # oneDNN with pre-packed weights, and the written-out RNN step that uses them
    import core.packed
    core.packed.AVAILABLE = False


def _table() -> None:  # the per-token table of the embedding's share of the input gates
    import core.decoder
    core.decoder.MAX_TABLE_VALUES = 0


def _topk() -> None:  # topk over the blocks with the largest maxima
    import core.search
    core.search._topk = lambda candidates, m: candidates.topk(m, dim=1)


def _argmax() -> None:  # argmax through block maxima
    import core.search
    core.search._argmax = lambda logp: logp.argmax(dim=1)


def _chunks() -> None:  # Bahdanau scores as 2 v . sigmoid(2e), in cache-sized chunks
    import core.attention

    def plain(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        return self.energy((keys.unsqueeze(1) + queries.unsqueeze(2)).tanh()).squeeze(3)
    core.attention.BahdanauAttention._scores_in_chunks = plain


TRICKS = {"packed": _packed, "table": _table, "topk": _topk, "argmax": _argmax, "chunks": _chunks}


def disable_from_env() -> list[str]:
    """Turn off the tricks named in $SEQGEN_BENCH_WITHOUT (comma-separated); returns their names."""
    names = [n for n in os.environ.get("SEQGEN_BENCH_WITHOUT", "").split(",") if n]
    for name in names:
        if name not in TRICKS:
            raise SystemExit(f"SEQGEN_BENCH_WITHOUT: unknown trick {name!r}; known: {', '.join(TRICKS)}")
        TRICKS[name]()
    return names
