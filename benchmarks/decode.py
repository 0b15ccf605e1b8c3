"""Decoding speed and memory of `core.RNNDecoder` + `core.search` with random weights; prints one JSON object.

Every sentence runs exactly `--steps` steps: search is called with min_len = max_len = steps, which sets EOS's
log-prob to -inf at every step, so no hypothesis can stop early and every figure counts the same work. The
script checks that every returned hypothesis has `steps` tokens and is unfinished.

    python benchmarks/decode.py            # full size (about 5 minutes on 2 cores; most of it batch-1 beam)
    python benchmarks/decode.py --quick    # tiny sizes, a few seconds (smoke test)
    python benchmarks/decode.py --profile  # where greedy and beam search spend their time (JSON too)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import (  # noqa: E402
    add_malloc_flag,
    build,
    check_full_length,
    config_of,
    environment,
    keep_freed_memory_unless_told,
    log,
    median_time,
    run_beam,
    run_greedy,
    timed,
)
from benchmarks.peers_timing import peak_rss_growth  # noqa: E402
from benchmarks.profiling import profile_decode  # noqa: E402
from benchmarks.tricks import disable_from_env  # noqa: E402
from core import Context, RNNDecoder  # noqa: E402
from core.cli import add_dtype_flag  # noqa: E402

# the targets set for this benchmark; the batched / one-at-a-time ratio is reported as information only
TARGETS = {"greedy_sentences_per_s": 80.0, "beam_sentences_per_s": 20.0}
QUICK = dict(
    vocab=500,
    emb=32,
    hidden=32,
    src_len=6,
    memory_dim=48,
    batch=4,
    steps=6,
    beam=3,
    repeats=1,
    memory_beams="1,2",
    no_rss=True,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--emb", type=int, default=512)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--cell", choices=["gru", "lstm"], default="gru")
    p.add_argument("--src-len", type=int, default=30, help="memory positions S (all real)")
    p.add_argument("--memory-dim", type=int, default=1024, help="memory vector size M")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=50, help="decoding steps per sentence (min_len = max_len)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up; the median is reported")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--memory-beams", default="1,2,4,8", help="beam sizes for the peak-memory figures ('' skips)")
    p.add_argument("--seed", type=int, default=0)
    add_dtype_flag(p)
    p.add_argument("--quick", action="store_true", help="tiny sizes so it finishes in a few seconds")
    p.add_argument(
        "--profile", action="store_true", help="where greedy and beam search spend their time, instead of benchmarking"
    )
    p.add_argument("--no-rss", action="store_true", help="skip the fresh-process RSS cross-check of memory")
    add_malloc_flag(p)
    p.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)  # internal: one beam size
    args = p.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    return args


# ---- the model and its inputs ------------------------------------------------------------------------


def tensor_peak_bytes(fn: Callable[[], Any]) -> int:
    """Peak of live CPU tensor bytes allocated while fn runs, above what was live when it started.

    torch.profiler(profile_memory=True) sees every CPU allocator call; its trace's [memory] events carry the
    running 'Total Allocated' of allocations made during profiling, so the maximum is the peak extra memory.
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    memory = [e["args"] for e in events if e.get("name") == "[memory]"]
    if not memory:
        return 0
    base = memory[0]["Total Allocated"] - memory[0]["Bytes"]
    return max(m["Total Allocated"] for m in memory) - base


def rss_child(args: argparse.Namespace) -> dict:
    """Run in a fresh process: how far one cold beam search raises the peak RSS above the RSS before it (VmHWM,
    reset first: `benchmarks.peers_timing.peak_rss_growth`)."""
    decoder, ctx, start = build(args)
    with torch.no_grad():
        _, grown = peak_rss_growth(lambda: run_beam(decoder, ctx, start, args.steps, args.rss_child))
    return {"beam": args.rss_child, "rss_extra_bytes": grown["peak_growth_mb"] * 2**20, "hwm_reset": grown["hwm_reset"]}


def size_flags(args: argparse.Namespace) -> list[str]:
    return [
        "--vocab",
        str(args.vocab),
        "--emb",
        str(args.emb),
        "--hidden",
        str(args.hidden),
        "--cell",
        args.cell,
        "--src-len",
        str(args.src_len),
        "--memory-dim",
        str(args.memory_dim),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
        "--dtype",
        args.dtype,
        *(["--malloc-defaults"] if args.malloc_defaults else []),
    ]


def linear_fit(xs: list[float], ys: list[float]) -> dict:
    """Least-squares line through (beam, MB) with r^2, and each point's ratio to the first."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {
        "slope_mb_per_beam": slope,
        "intercept_mb": intercept,
        "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0,
        "ratio_to_first": {str(int(x)): (y / ys[0] if ys[0] else None) for x, y in zip(xs, ys)},
    }


def measure_memory(
    args: argparse.Namespace, decoder: RNNDecoder, ctx: Context, start: torch.Tensor, beams: list[int], rss: bool
) -> dict:
    per_beam: dict[str, dict] = {}
    for K in beams:
        log(f"memory: beam {K}")
        with torch.no_grad():
            run_beam(decoder, ctx, start, args.steps, K)  # warm: first-call buffers are not the search's
            per_beam[str(K)] = {
                "tensor_peak_mb": tensor_peak_bytes(lambda K=K: run_beam(decoder, ctx, start, args.steps, K)) / 2**20
            }
        if rss:
            out = subprocess.run(
                [sys.executable, __file__, *size_flags(args), "--rss-child", str(K)],
                capture_output=True,
                text=True,
                check=True,
            )
            per_beam[str(K)]["rss_extra_mb"] = json.loads(out.stdout)["rss_extra_bytes"] / 2**20
    result: dict[str, Any] = {
        "memory_method": (
            "tensor_peak_mb: peak of live CPU tensor bytes during one beam_search call (after a "
            "warm-up call), above what was live at its start, from torch.profiler(profile_memory="
            "True): its trace's [memory] events carry the allocator's running 'Total Allocated' of "
            "allocations made while profiling, so their maximum is the peak extra tensor memory. "
            "rss_extra_mb (cross-check, full runs only): in a fresh process per beam size, the peak "
            "RSS (VmHWM, reset just before through /proc/self/clear_refs) during one cold "
            "beam_search minus the RSS just before it; it adds allocator slack, thread pools and "
            "first-call buffers to the tensors."
        ),
        "batch": args.batch,
        "steps": args.steps,
        "per_beam": per_beam,
    }
    if len(beams) >= 2:
        xs = [float(K) for K in beams]
        result["fit_tensor_peak"] = linear_fit(xs, [per_beam[str(K)]["tensor_peak_mb"] for K in beams])
        if rss:
            result["fit_rss_extra"] = linear_fit(xs, [per_beam[str(K)]["rss_extra_mb"] for K in beams])
        result["roughly_linear"] = result["fit_tensor_peak"]["r2"] >= 0.98
    return result


# ---- the benchmark --------------------------------------------------------------------------------------


def rates(seconds: float, all_seconds: list[float], sentences: int, steps: int) -> dict:
    """A timing as the JSON reports it: the median, every run, sentences and tokens per second."""
    return dict(
        seconds=seconds,
        all_seconds=all_seconds,
        sentences_per_s=sentences / seconds,
        tokens_per_s=sentences * steps / seconds,
    )


def benchmark(args: argparse.Namespace) -> dict:
    decoder, ctx, start = build(args)
    B, K, T = args.batch, args.beam, args.steps
    env_before = environment()
    result: dict[str, Any] = {"benchmark": "decode", "config": config_of(args)}
    with torch.no_grad():
        log(f"greedy, batch {B}")
        g, g_all, hyps = median_time(lambda: run_greedy(decoder, ctx, start, T), args.repeats)
        check_full_length(hyps, T, "greedy")
        result["greedy"] = rates(g, g_all, B, T)

        singles = [(ctx.index_select(torch.tensor([i])), start[i : i + 1]) for i in range(B)]  # made untimed

        def one_at_a_time(n: int = B) -> list:
            return [h for c, s in singles[:n] for h in run_beam(decoder, c, s, T, K)]

        # The two are timed in turns (batched, one at a time, batched, ...) so that a slow spell of the
        # machine weighs on both; the speed-up is the median of each turn's ratio.
        log(f"beam {K}: batch {B}, then {B} calls of batch 1 (the slow one), in turns")
        run_beam(decoder, ctx, start, T, K)
        one_at_a_time(min(B, 4))  # a pass over all B takes as long as a timed one
        b_all, o_all = [], []
        for _ in range(args.repeats):
            b_took, hyps = timed(lambda: run_beam(decoder, ctx, start, T, K))
            check_full_length(hyps, T, "beam")
            o_took, hyps = timed(one_at_a_time)
            check_full_length(hyps, T, "beam one at a time")
            b_all.append(b_took)
            o_all.append(o_took)
        b, o = statistics.median(b_all), statistics.median(o_all)
        result["beam"] = dict(beam=K, **rates(b, b_all, B, T), beam_rows_tokens_per_s=B * K * T / b)
        result["beam_one_at_a_time"] = dict(beam=K, **rates(o, o_all, B, T))
        result["batched_over_one_at_a_time"] = statistics.median(x / y for x, y in zip(o_all, b_all))

    beams = [int(x) for x in args.memory_beams.split(",") if x.strip()]
    if beams:
        result["memory"] = measure_memory(args, decoder, ctx, start, beams, rss=not args.no_rss)

    figures = {
        "greedy_sentences_per_s": result["greedy"]["sentences_per_s"],
        "beam_sentences_per_s": result["beam"]["sentences_per_s"],
    }
    result["targets"] = TARGETS
    result["meets"] = {k: figures[k] >= v for k, v in TARGETS.items()}
    env = environment()
    env["load_average_before"] = env_before["load_average"]
    env["cpu_busy_pct_others_before"] = env_before["cpu_busy_pct_others"]
    result["environment"] = env
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.keeps_freed_memory = keep_freed_memory_unless_told(args)
    without = disable_from_env()
    if args.rss_child:
        out = rss_child(args)
    elif args.profile:
        out = profile_decode(args)
    else:
        out = benchmark(args)
    out["without"] = without
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
