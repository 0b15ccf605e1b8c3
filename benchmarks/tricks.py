"""Turn core's CPU speed tricks (core/speedups.py) off, to measure what each buys (benchmarks only: the library
itself has no switch). `SEQGEN_BENCH_WITHOUT=packed,topk python benchmarks/decode.py` runs without those two;
`without("topk")` turns one off for the duration of a `with` block. The malloc settings are turned off with the
benchmarks' own --malloc-defaults."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from core import speedups

# trick -> (attribute of core.speedups, the value that turns it off)
TRICKS = {
    "packed": ("AVAILABLE", False),  # oneDNN with pre-packed weights, and the written-out RNN step using them
    "table": ("MAX_TABLE_VALUES", 0),  # the per-token table of the embedding's share of the input gates
    "topk": ("TOPK_BLOCK", 1 << 62),  # topk over the blocks with the largest maxima: no row has enough blocks
}


@contextmanager
def without(*names: str) -> Iterator[None]:
    """Inside, the named tricks are off."""
    saved = {name: getattr(speedups, TRICKS[name][0]) for name in names}
    for name in names:
        setattr(speedups, TRICKS[name][0], TRICKS[name][1])
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(speedups, TRICKS[name][0], value)


def disable_from_env() -> list[str]:
    """Turn off the tricks named in $SEQGEN_BENCH_WITHOUT (comma-separated) for good; returns their names."""
    names = [n for n in os.environ.get("SEQGEN_BENCH_WITHOUT", "").split(",") if n]
    unknown = [n for n in names if n not in TRICKS]
    if unknown:
        raise SystemExit(f"SEQGEN_BENCH_WITHOUT: unknown trick {unknown[0]!r}; known: {', '.join(TRICKS)}")
    without(*names).__enter__()
    return names
