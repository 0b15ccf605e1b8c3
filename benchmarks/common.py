"""What the benchmarks share: timing, the machine's state, the malloc flag, and the decode benchmark's model."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from core import BOS, EOS, Context, RNNDecoder, beam_search, greedy
from core.cli import DTYPES
from core.console import keep_freed_memory


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def add_malloc_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--malloc-defaults",
        action="store_true",
        help="leave glibc's malloc as it is, instead of keeping freed blocks as the decoding "
        "commands do (core/allocator.py)",
    )


def keep_freed_memory_unless_told(args: argparse.Namespace) -> bool:
    """Keep freed blocks as the decoding commands do, unless --malloc-defaults; whether that took effect."""
    return not args.malloc_defaults and keep_freed_memory()


def build(args: argparse.Namespace) -> tuple[RNNDecoder, Context, torch.Tensor]:
    """A random Bahdanau decoder in eval mode, a context of random memory (mask all True) and start tokens,
    all in --dtype (the random numbers are drawn in float32 first, so both dtypes start from the same values)."""
    torch.manual_seed(args.seed)
    decoder = RNNDecoder(
        args.vocab,
        args.emb,
        args.hidden,
        1,
        cell=args.cell,
        attention="bahdanau",
        memory_dim=args.memory_dim,
        dropout=0.0,
    ).eval()
    B, S, M, H = args.batch, args.src_len, args.memory_dim, args.hidden
    h0 = torch.tanh(torch.randn(1, B, H))  # (1, B, H)
    c0 = torch.zeros(1, B, H) if args.cell == "lstm" else None
    memory = torch.randn(B, S, M)  # (B, S, M)
    mask = torch.ones(B, S, dtype=torch.bool)  # (B, S): every position real
    dtype = DTYPES[args.dtype]
    ctx = Context(h0.to(dtype), None if c0 is None else c0.to(dtype), memory.to(dtype), mask)
    return decoder.to(dtype), ctx, torch.full((B,), BOS, dtype=torch.long)


def run_greedy(decoder: RNNDecoder, ctx: Context, start: torch.Tensor, steps: int) -> list:
    return greedy(decoder, ctx, start, max_len=steps, min_len=steps, eos=EOS)


def run_beam(decoder: RNNDecoder, ctx: Context, start: torch.Tensor, steps: int, beam: int) -> list:
    return [
        nbest[0] for nbest in beam_search(decoder, ctx, start, max_len=steps, min_len=steps, eos=EOS, beam_size=beam)
    ]


def check_full_length(hyps: list, steps: int, what: str) -> None:
    """Every hypothesis must have run all `steps` steps, or the figures would not be comparable."""
    bad = [len(h.tokens) for h in hyps if len(h.tokens) != steps or h.finished]
    if bad:
        raise SystemExit(f"{what}: {len(bad)} hypotheses stopped early (lengths {bad[:5]}); figures invalid")


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float], Any]:
    """One untimed warm-up call, then the median wall time of `repeats` calls of fn; also returns the last
    call's result."""
    fn()
    times, out = [], None
    for _ in range(repeats):
        took, out = timed(fn)
        times.append(took)
    return statistics.median(times), times, out


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """Wall seconds of one call of fn, and its result."""
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def cpu_busy_pct(seconds: float = 1.0) -> float | None:
    """Percent of all CPUs busy over `seconds` while this process sleeps: the load from everything else."""

    def snap() -> tuple[int, int]:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # total, idle + iowait

    try:
        total0, idle0 = snap()
        time.sleep(seconds)
        total1, idle1 = snap()
    except OSError:
        return None
    return round(100 * (1 - (idle1 - idle0) / max(1, total1 - total0)), 1)


def environment() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpu_busy_pct_others": cpu_busy_pct(),
    }


def config_of(args: argparse.Namespace) -> dict:
    return {
        "vocab": args.vocab,
        "emb": args.emb,
        "hidden": args.hidden,
        "layers": 1,
        "cell": args.cell,
        "attention": "bahdanau",
        "input_feeding": True,
        "dtype": args.dtype,
        "src_len": args.src_len,
        "memory_dim": args.memory_dim,
        "batch": args.batch,
        "steps": args.steps,
        "beam": args.beam,
        "repeats": args.repeats,
        "full_length": "min_len = max_len = steps (EOS masked every step); lengths checked",
        "quick": args.quick,
        "keeps_freed_memory": args.keeps_freed_memory,
    }
