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
import cProfile
import json
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.tricks import disable_from_env  # noqa: E402

import core.attention  # noqa: E402
import core.search  # noqa: E402
from core import packed  # noqa: E402
from core.allocator import keep_freed_memory  # noqa: E402
from core.attention import per_example  # noqa: E402
from core.cli import DTYPES, add_dtype_flag  # noqa: E402
from core import BOS, EOS, Context, RNNDecoder, beam_search, greedy  # noqa: E402

TARGETS = {"greedy_sentences_per_s": 80.0, "beam_sentences_per_s": 20.0, "batched_over_one_at_a_time": 5.0}
QUICK = dict(vocab=500, emb=32, hidden=32, src_len=6, memory_dim=48, batch=4, steps=6, beam=3, repeats=1,
             memory_beams="1,2", no_rss=True)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
    p.add_argument("--profile", action="store_true",
                   help="where greedy and beam search spend their time, instead of benchmarking")
    p.add_argument("--no-rss", action="store_true", help="skip the fresh-process RSS cross-check of memory")
    add_malloc_flag(p)
    p.add_argument("--rss-child", type=int, default=0, help=argparse.SUPPRESS)  # internal: one beam size
    args = p.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    return args


# ---- the model and its inputs ------------------------------------------------------------------------

def add_malloc_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--malloc-defaults", action="store_true",
                        help="leave glibc's malloc as it is, instead of keeping freed blocks as the decoding "
                             "commands do (core/allocator.py)")


def keep_freed_memory_unless_told(args: argparse.Namespace) -> bool:
    """Keep freed blocks as the decoding commands do, unless --malloc-defaults; whether that took effect."""
    return not args.malloc_defaults and keep_freed_memory()


def build(args: argparse.Namespace) -> tuple[RNNDecoder, Context, torch.Tensor]:
    """A random Bahdanau decoder in eval mode, a context of random memory (mask all True) and start tokens,
    all in --dtype (the random numbers are drawn in float32 first, so both dtypes start from the same values)."""
    torch.manual_seed(args.seed)
    decoder = RNNDecoder(args.vocab, args.emb, args.hidden, 1, cell=args.cell, attention="bahdanau",
                         memory_dim=args.memory_dim, dropout=0.0).eval()
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
    return [nbest[0] for nbest in beam_search(decoder, ctx, start, max_len=steps, min_len=steps, eos=EOS,
                                              beam_size=beam)]


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


# ---- memory: tensor peak in this process, RSS in a fresh one --------------------------------------------

def _status_bytes(field: str) -> int:
    """VmRSS or VmHWM (peak RSS of this process image) from /proc/self/status, in bytes."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


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
    """Run in a fresh process: how far one cold beam search raises the peak RSS above the RSS before it.

    VmHWM rather than ru_maxrss: after fork + exec, ru_maxrss keeps the parent's high-water mark. Writing 5 to
    /proc/self/clear_refs resets VmHWM to the current RSS, so the model build's own peak does not hide ours."""
    decoder, ctx, start = build(args)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        reset = False
    with torch.no_grad():
        rss_before = _status_bytes("VmRSS")
        peak_before = _status_bytes("VmHWM")
        run_beam(decoder, ctx, start, args.steps, args.rss_child)
        peak_after = _status_bytes("VmHWM")
    return {"beam": args.rss_child, "rss_extra_bytes": peak_after - max(rss_before, peak_before) if not reset
            else peak_after - rss_before, "hwm_reset": reset}


def size_flags(args: argparse.Namespace) -> list[str]:
    return ["--vocab", str(args.vocab), "--emb", str(args.emb), "--hidden", str(args.hidden), "--cell", args.cell,
            "--src-len", str(args.src_len), "--memory-dim", str(args.memory_dim), "--batch", str(args.batch),
            "--steps", str(args.steps), "--threads", str(args.threads), "--seed", str(args.seed),
            "--dtype", args.dtype, *(["--malloc-defaults"] if args.malloc_defaults else [])]


def linear_fit(xs: list[float], ys: list[float]) -> dict:
    """Least-squares line through (beam, MB) with r^2, and each point's ratio to the first."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0
    intercept = my - slope * mx
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    return {"slope_mb_per_beam": slope, "intercept_mb": intercept, "r2": 1.0 - ss_res / ss_tot if ss_tot else 1.0,
            "ratio_to_first": {str(int(x)): (y / ys[0] if ys[0] else None) for x, y in zip(xs, ys)}}


def measure_memory(args: argparse.Namespace, decoder: RNNDecoder, ctx: Context, start: torch.Tensor,
                   beams: list[int], rss: bool) -> dict:
    per_beam: dict[str, dict] = {}
    for K in beams:
        log(f"memory: beam {K}")
        with torch.no_grad():
            run_beam(decoder, ctx, start, args.steps, K)  # warm: first-call buffers are not the search's
            per_beam[str(K)] = {"tensor_peak_mb": tensor_peak_bytes(
                lambda: run_beam(decoder, ctx, start, args.steps, K)) / 2**20}
        if rss:
            out = subprocess.run([sys.executable, __file__, *size_flags(args), "--rss-child", str(K)],
                                 capture_output=True, text=True, check=True)
            per_beam[str(K)]["rss_extra_mb"] = json.loads(out.stdout)["rss_extra_bytes"] / 2**20
    result: dict[str, Any] = {
        "memory_method": ("tensor_peak_mb: peak of live CPU tensor bytes during one beam_search call (after a "
                          "warm-up call), above what was live at its start, from torch.profiler(profile_memory="
                          "True): its trace's [memory] events carry the allocator's running 'Total Allocated' of "
                          "allocations made while profiling, so their maximum is the peak extra tensor memory. "
                          "rss_extra_mb (cross-check, full runs only): in a fresh process per beam size, the peak "
                          "RSS (VmHWM, reset just before through /proc/self/clear_refs) during one cold "
                          "beam_search minus the RSS just before it; it adds allocator slack, thread pools and "
                          "first-call buffers to the tensors."),
        "batch": args.batch, "steps": args.steps, "per_beam": per_beam}
    if len(beams) >= 2:
        xs = [float(K) for K in beams]
        result["fit_tensor_peak"] = linear_fit(xs, [per_beam[str(K)]["tensor_peak_mb"] for K in beams])
        if rss:
            result["fit_rss_extra"] = linear_fit(xs, [per_beam[str(K)]["rss_extra_mb"] for K in beams])
        result["roughly_linear"] = result["fit_tensor_peak"]["r2"] >= 0.98
    return result


# ---- profiling ------------------------------------------------------------------------------------------

def _label(name: str, fn: Callable) -> Callable:
    def wrapped(*a: Any, **kw: Any) -> Any:
        with torch.profiler.record_function(name):
            return fn(*a, **kw)
    return wrapped


REGIONS = {"reorder_state": "reorder_state (index_select of the state tensors that differ between beams)",
           "_process": "_process (log-prob processors; greedy's min_len EOS mask)",
           "step": "decoder.step (all of it)", "_input_gates": "rnn input gates (per-token table + feed product)",
           "_cell_step": "rnn step (written-out GRU/LSTM cell)",
           "attention": "attention (Bahdanau scores, softmax, context)", "combine": "combine (attentional vector)",
           "output": "output projection (H x V)"}


def profile_run(decoder: RNNDecoder, run: Callable[[], Any]) -> dict:
    """One call of `run` under cProfile and under torch.profiler, with labelled regions around core functions
    and decoder submodules (wrapped for the duration, never edited); percentages of the whole call."""
    prof_py = cProfile.Profile()
    prof_py.enable()
    run()
    prof_py.disable()
    stats = pstats.Stats(prof_py).stats
    total_py = max(v[3] for v in stats.values())  # the largest cumulative time: the whole call
    rows = [{"function": f"{Path(file).parent.name}/{Path(file).name}:{line}({func})" if line else func,
             "calls": nc, "self_pct": round(100 * tt / total_py, 1), "cumulative_pct": round(100 * ct / total_py, 1)}
            for (file, line, func), (_, nc, tt, ct, _) in stats.items()]
    top_self = sorted(rows, key=lambda r: -r["self_pct"])[:12]
    ours = {r["function"]: r["cumulative_pct"] for r in rows
            if r["function"].startswith(("core/", "modules/")) and r["cumulative_pct"] >= 0.5}

    from torch.profiler import ProfilerActivity, profile
    saved = core.search.reorder_state, core.search._process
    core.search.reorder_state = _label(REGIONS["reorder_state"], saved[0])
    core.search._process = _label(REGIONS["_process"], saved[1])
    for name in ("step", "_input_gates", "_cell_step"):
        setattr(decoder, name, _label(REGIONS[name], getattr(decoder, name)))
    for name in ("attention", "combine", "output"):
        module = getattr(decoder, name)
        module.forward = _label(REGIONS[name], module.forward)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with torch.profiler.record_function("whole call"):
                run()
    finally:
        core.search.reorder_state, core.search._process = saved
        for name in ("step", "_input_gates", "_cell_step"):
            decoder.__dict__.pop(name, None)
        for obj in (decoder.attention, decoder.combine, decoder.output):
            obj.__dict__.pop("forward", None)
    averages = prof.key_averages()
    total_us = next(e.cpu_time_total for e in averages if e.key == "whole call")
    labels = set(REGIONS.values()) | {"whole call"}
    regions = {e.key: round(100 * e.cpu_time_total / total_us, 1) for e in averages if e.key in labels}
    ops = sorted((e for e in averages if e.key not in labels), key=lambda e: -e.self_cpu_time_total)
    return {"regions_pct (torch.profiler)": dict(sorted(regions.items(), key=lambda kv: -kv[1])),
            "top_ops_self_pct (torch.profiler)": {e.key: round(100 * e.self_cpu_time_total / total_us, 1)
                                                  for e in ops[:12]},
            "core_functions_cumulative_pct (cProfile)": dict(sorted(ours.items(), key=lambda kv: -kv[1])),
            "top_self_pct (cProfile)": top_self}


def step_parts(decoder: RNNDecoder, ctx: Context, start: torch.Tensor, K: int) -> dict:
    """Isolated per-step milliseconds of each part of one decoding step at B*K rows (median of 20), plus
    what-if variants of the costly parts. Inputs are real: the state after one step of the decoder, in the
    layout beam search uses (the K beams of an example read one copy of its memory and keys)."""
    B, V = start.size(0), decoder.vocab_size
    ctx_k = ctx.repeat_interleave(K, memory=not decoder.beams_share_memory)
    state = decoder.start(ctx_k)
    tokens = start.repeat_interleave(K)  # (N,)
    _, state = decoder.step(tokens, state, ctx_k)
    N, H = tokens.size(0), decoder.hidden_dim
    att = decoder.attention
    emb = torch.cat([decoder.embedding(tokens.unsqueeze(1)), state.feed.unsqueeze(1)], dim=2)  # (N, 1, E + H)
    h = state.h.transpose(0, 1).contiguous()  # (1, N, H)
    query = state.feed.unsqueeze(1)  # (N, 1, H): any such tensor will do
    context, _ = att(query, state.keys, ctx_k.memory, ctx_k.memory_mask)  # (N, 1, M)
    logp = torch.log_softmax(torch.randn(N, V), dim=-1)  # (N, V)
    beam_logp = torch.randn(B, K)

    def make_candidates() -> torch.Tensor:  # (B, K*V): what beam search picks its top 2K from
        return (beam_logp.unsqueeze(2) + logp.view(B, K, V)).view(B, K * V)
    candidates = make_candidates()
    rows = torch.arange(N).view(B, K).flip(1).reshape(-1)  # a reordering within each example

    def keys_plus_queries() -> torch.Tensor:  # (B, K, S, A): the sum the Bahdanau energies start from
        return state.keys.unsqueeze(1) + per_example(att.query_proj(query), ctx_k.memory).unsqueeze(2)
    energies = keys_plus_queries()

    def ms(fn: Callable[[], Any]) -> float:
        return round(1e3 * median_time(fn, 20)[0], 2)

    parts = {
        "output projection (core.packed: oneDNN, packed weight)": ms(lambda: packed.linear(decoder.output, query)),
        "  the same with plain nn.Linear (MKL)": ms(lambda: decoder.output(query)),
        "rnn input gates (per-token table + feed product)": ms(lambda: decoder._input_gates(tokens, state.feed)),
        "rnn step (written-out cell, packed weights)": ms(
            lambda: decoder._cell_step(decoder._input_gates(tokens, state.feed), state)),
        "  the same with nn.GRU/LSTM's own step": ms(lambda: decoder.rnn(emb, h) if decoder.cell == "gru"
                                                     else decoder.rnn(emb, (h, h))),
        "attention (all; scores in cache-sized chunks)": ms(
            lambda: att(query, state.keys, ctx_k.memory, ctx_k.memory_mask)),
        f"  attention: keys + query_proj(q) {tuple(energies.shape)}": ms(keys_plus_queries),
        "  attention: tanh of that": ms(lambda: torch.tanh(energies)),
        "  attention: weights @ memory (bmm, one memory copy per example)": ms(
            lambda: torch.bmm(per_example(state.attn.unsqueeze(1), ctx_k.memory), ctx_k.memory)),
        "combine (cat + packed Linear with tanh)": ms(
            lambda: packed.linear(decoder.combine, torch.cat([query, context], 2), "tanh")),
        "log_softmax": ms(lambda: torch.log_softmax(logp, dim=-1)),
        "min_len EOS mask (greedy: an index_fill copy; beam: in place, in the candidates)": ms(
            (lambda: logp.index_fill(1, torch.tensor([EOS]), float("-inf"))) if K == 1 else
            (lambda: candidates.view(B, K, V)[:, :, EOS].fill_(float("-inf")))),
        "candidates + top 2K over K*V (ties by lowest index)": ms(
            lambda: core.search._top_candidates(make_candidates(), 2 * K)),
        "reorder_state (as beam search calls it: the keys, one per example, stay)": ms(
            lambda: core.search.reorder_state(state, rows, core.search.shared_by_beams(state, K, B))),
    }
    for name in state._fields:
        t = getattr(state, name)
        if t is not None and t.size(0) == N:
            parts[f"  reorder_state: {name} {tuple(t.shape)} {t.numel() * t.element_size() / 2**20:.2f} MB"] = ms(
                lambda t=t: t.index_select(0, rows))

    def attention_in_one_chunk() -> tuple[torch.Tensor, torch.Tensor]:
        saved = core.attention.CHUNK_VALUES
        core.attention.CHUNK_VALUES = 1 << 40  # all energies as one tensor
        try:
            return att(query, state.keys, ctx_k.memory, ctx_k.memory_mask)
        finally:
            core.attention.CHUNK_VALUES = saved
    what_if = {  # the same results computed another way, to size possible changes
        "attention with all energies in one tensor (no chunks)": ms(attention_in_one_chunk),
    }
    return {"rows": N, "ms_per_step": parts, "what_if_ms_per_step": what_if}


def profile_decode(args: argparse.Namespace) -> dict:
    """Where greedy (batch B) and beam search (beam K, batch B) spend their time."""
    decoder, ctx, start = build(args)
    K, T = args.beam, args.steps
    out: dict[str, Any] = {"benchmark": "decode --profile", "config": config_of(args)}
    with torch.no_grad():
        for name, run in (("beam", lambda: run_beam(decoder, ctx, start, T, K)),
                          ("greedy", lambda: run_greedy(decoder, ctx, start, T))):
            log(f"profile: {name}")
            seconds, _, _ = median_time(run, args.repeats)
            out[name] = {"seconds_unprofiled": seconds, "ms_per_step_unprofiled": 1e3 * seconds / T,
                         **profile_run(decoder, run)}
        log("profile: isolated step parts")
        out["beam"]["step_parts"] = step_parts(decoder, ctx, start, K)
        out["greedy"]["step_parts"] = step_parts(decoder, ctx, start, 1)
        hyp = run_beam(decoder, ctx, start, T, K)[0]
        if hyp.attention is not None:
            out["beam"]["hypothesis_attention_bytes"] = {
                "own": hyp.attention.numel() * hyp.attention.element_size(),
                "storage_kept_alive": hyp.attention.untyped_storage().nbytes()}
    out["note"] = ("torch.profiler and cProfile add overhead to every op and call, inflating small ones; "
                   "the unprofiled seconds and the isolated step_parts (median of 20) are the honest figures.")
    out["environment"] = environment()
    return out


# ---- the benchmark --------------------------------------------------------------------------------------

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
    return {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpu": cpu, "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "python": platform.python_version(), "threads": torch.get_num_threads(),
            "load_average": [round(x, 2) for x in os.getloadavg()], "cpu_busy_pct_others": cpu_busy_pct()}


def config_of(args: argparse.Namespace) -> dict:
    return {"vocab": args.vocab, "emb": args.emb, "hidden": args.hidden, "layers": 1, "cell": args.cell,
            "attention": "bahdanau", "input_feeding": True, "dtype": args.dtype, "src_len": args.src_len,
            "memory_dim": args.memory_dim,
            "batch": args.batch, "steps": args.steps, "beam": args.beam, "repeats": args.repeats,
            "full_length": "min_len = max_len = steps (EOS masked every step); lengths checked", "quick": args.quick,
            "keeps_freed_memory": args.keeps_freed_memory}


def benchmark(args: argparse.Namespace) -> dict:
    decoder, ctx, start = build(args)
    B, K, T = args.batch, args.beam, args.steps
    env_before = environment()
    result: dict[str, Any] = {"benchmark": "decode", "config": config_of(args)}
    with torch.no_grad():
        log(f"greedy, batch {B}")
        g, g_all, hyps = median_time(lambda: run_greedy(decoder, ctx, start, T), args.repeats)
        check_full_length(hyps, T, "greedy")
        result["greedy"] = {"seconds": g, "all_seconds": g_all, "sentences_per_s": B / g, "tokens_per_s": B * T / g}

        singles = [(ctx.index_select(torch.tensor([i])), start[i:i + 1]) for i in range(B)]  # made untimed

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
        result["beam"] = {"beam": K, "seconds": b, "all_seconds": b_all, "sentences_per_s": B / b,
                          "tokens_per_s": B * T / b, "beam_rows_tokens_per_s": B * K * T / b}
        result["beam_one_at_a_time"] = {"beam": K, "seconds": o, "all_seconds": o_all, "sentences_per_s": B / o,
                                        "tokens_per_s": B * T / o}
        result["batched_over_one_at_a_time"] = statistics.median(x / y for x, y in zip(o_all, b_all))

    beams = [int(x) for x in args.memory_beams.split(",") if x.strip()]
    if beams:
        result["memory"] = measure_memory(args, decoder, ctx, start, beams, rss=not args.no_rss)

    figures = {"greedy_sentences_per_s": result["greedy"]["sentences_per_s"],
               "beam_sentences_per_s": result["beam"]["sentences_per_s"],
               "batched_over_one_at_a_time": result["batched_over_one_at_a_time"]}
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
