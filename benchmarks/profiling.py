"""`python benchmarks/decode.py --profile`: where greedy and beam search spend their time, as JSON: cProfile
and torch.profiler over whole searches (labelled regions around core's functions), and isolated per-step
milliseconds of each part of a step, with what-if variants of the costly parts."""

from __future__ import annotations

import argparse
import cProfile
import pstats
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import core.context
import core.search
import core.search_rules
from benchmarks.common import build, config_of, environment, log, median_time, run_beam, run_greedy
from core import EOS, Context, RNNDecoder, speedups
from core.attention import per_example

REGIONS = {
    "reorder": "context.reorder (index_select of every state tensor)",
    "apply": "search rules (log-prob processors, banned tokens)",
    "step": "decoder.step (all of it)",
    "rnn_step": "rnn step (core.speedups: written-out GRU/LSTM cell, packed weights)",
    "linear": "linear maps (core.speedups.linear: combine, output, rnn gates)",
    "attention": "attention (scores, softmax, context)",
    "top_candidates": "beam candidates: top 2K",
}


def _label(name: str, fn: Callable) -> Callable:
    def wrapped(*a: Any, **kw: Any) -> Any:
        with torch.profiler.record_function(name):
            return fn(*a, **kw)

    return wrapped


def _cprofile(run: Callable[[], Any]) -> dict:
    prof_py = cProfile.Profile()
    prof_py.enable()
    run()
    prof_py.disable()
    stats = pstats.Stats(prof_py).stats
    total_py = max(v[3] for v in stats.values())  # the largest cumulative time: the whole call
    rows = [
        {
            "function": f"{Path(file).parent.name}/{Path(file).name}:{line}({func})" if line else func,
            "calls": nc,
            "self_pct": round(100 * tt / total_py, 1),
            "cumulative_pct": round(100 * ct / total_py, 1),
        }
        for (file, line, func), (_, nc, tt, ct, _) in stats.items()
    ]
    ours = {
        r["function"]: r["cumulative_pct"]
        for r in rows
        if r["function"].startswith(("core/", "modules/")) and r["cumulative_pct"] >= 0.5
    }
    return {
        "core_functions_cumulative_pct (cProfile)": dict(sorted(ours.items(), key=lambda kv: -kv[1])),
        "top_self_pct (cProfile)": sorted(rows, key=lambda r: -r["self_pct"])[:12],
    }


def profile_run(decoder: RNNDecoder, run: Callable[[], Any]) -> dict:
    """One call of `run` under cProfile and under torch.profiler, with labelled regions around core functions
    (wrapped for the duration, never edited); percentages of the whole call."""
    from torch.profiler import ProfilerActivity, profile

    out = _cprofile(run)
    patched = [
        (core.search, "reorder"),
        (core.search_rules.Rules, "apply"),
        (core.search, "top_candidates"),
        (speedups, "rnn_step"),
        (speedups, "linear"),
        (decoder, "step"),
        (decoder.attention, "forward"),
    ]
    saved = [(obj, name, obj.__dict__.get(name)) for obj, name in patched]
    for obj, name in patched:
        setattr(obj, name, _label(REGIONS[name if name != "forward" else "attention"], getattr(obj, name)))
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with torch.profiler.record_function("whole call"):
                run()
    finally:
        for obj, name, value in saved:
            if value is None:
                delattr(obj, name)
            else:
                setattr(obj, name, value)
    averages = prof.key_averages()
    total_us = next(e.cpu_time_total for e in averages if e.key == "whole call")
    labels = set(REGIONS.values()) | {"whole call"}
    regions = {e.key: round(100 * e.cpu_time_total / total_us, 1) for e in averages if e.key in labels}
    ops = sorted((e for e in averages if e.key not in labels), key=lambda e: -e.self_cpu_time_total)
    return {
        "regions_pct (torch.profiler)": dict(sorted(regions.items(), key=lambda kv: -kv[1])),
        "top_ops_self_pct (torch.profiler)": {
            e.key: round(100 * e.self_cpu_time_total / total_us, 1) for e in ops[:12]
        },
        **out,
    }


def step_parts(decoder: RNNDecoder, ctx: Context, start: torch.Tensor, K: int) -> dict:
    """Isolated per-step milliseconds of each part of one decoding step at B*K rows (median of 20), plus
    what-if variants. Inputs are real: the state after one step, in beam search's layout (the K beams of an
    example read one copy of its memory and keys)."""
    B, V = start.size(0), decoder.vocab_size
    ctx_k = decoder.prepare(ctx.expand(K))
    tokens = start.repeat_interleave(K)  # (N,)
    _, state = decoder.step(tokens, decoder.start(ctx_k), ctx_k)
    N = tokens.size(0)
    att, rnn, emb_layer = decoder.attention, decoder.rnn, decoder.embedding
    emb = torch.cat([emb_layer(tokens.unsqueeze(1)), state.feed.unsqueeze(1)], dim=2)  # (N, 1, E + H)
    h = state.h.transpose(0, 1).contiguous()  # (1, N, H)
    query = state.feed.unsqueeze(1)  # (N, 1, H): any such tensor will do
    context, _ = att(query, ctx_k.keys, ctx_k.memory, ctx_k.memory_mask)  # (N, 1, M)
    logp = torch.log_softmax(torch.randn(N, V), dim=-1)  # (N, V)
    scores = torch.randn(B, K)
    rows = torch.arange(N).view(B, K).flip(1).reshape(-1)  # a reordering within each example
    energies = ctx_k.keys.unsqueeze(1) + per_example(att.query_proj(query), ctx_k.memory).unsqueeze(2)

    def ms(fn: Callable[[], Any]) -> float:
        return round(1e3 * median_time(fn, 20)[0], 2)

    parts = {
        "output projection (core.speedups.linear: oneDNN, packed weight)": ms(
            lambda: speedups.linear(decoder.output, query)
        ),
        "  the same with plain nn.Linear (MKL)": ms(lambda: decoder.output(query)),
        "rnn step (core.speedups.rnn_step)": ms(
            lambda: speedups.rnn_step(rnn, emb_layer, tokens, state.feed, state.h, state.c)
        ),
        "  the same with nn.GRU/LSTM's own step": ms(
            lambda: rnn(emb, h) if decoder.cell == "gru" else rnn(emb, (h, h))
        ),
        "attention (all)": ms(lambda: att(query, ctx_k.keys, ctx_k.memory, ctx_k.memory_mask)),
        f"  attention: keys + query_proj(q) {tuple(energies.shape)}": ms(
            lambda: ctx_k.keys.unsqueeze(1) + per_example(att.query_proj(query), ctx_k.memory).unsqueeze(2)
        ),
        "  attention: tanh of that": ms(lambda: torch.tanh(energies)),
        "  attention: weights @ memory (bmm, one memory copy per example)": ms(
            lambda: torch.bmm(per_example(state.attn.unsqueeze(1), ctx_k.memory), ctx_k.memory)
        ),
        "combine (cat + linear + tanh)": ms(
            lambda: torch.tanh(speedups.linear(decoder.combine, torch.cat([query, context], 2)))
        ),
        "log_softmax": ms(lambda: torch.log_softmax(logp, dim=-1)),
        "min_len EOS mask": ms(lambda: logp.clone().index_fill_(1, torch.tensor([EOS]), float("-inf"))),
        "beam_step (candidates + top 2K, ties by lowest index)": ms(
            lambda: core.search.beam_step(scores, logp.view(B, K, V), 2 * K)
        ),
        "reorder (every state tensor)": ms(lambda: core.context.reorder(state, rows)),
    }
    for name in state._fields:
        t = getattr(state, name)
        if t is not None and t.size(0) == N:
            parts[f"  reorder: {name} {tuple(t.shape)} {t.numel() * t.element_size() / 2**20:.2f} MB"] = ms(
                lambda t=t: t.index_select(0, rows)
            )

    return {"rows": N, "ms_per_step": parts}


def profile_decode(args: argparse.Namespace) -> dict:
    """Where greedy (batch B) and beam search (beam K, batch B) spend their time."""
    decoder, ctx, start = build(args)
    K, T = args.beam, args.steps
    out: dict[str, Any] = {"benchmark": "decode --profile", "config": config_of(args)}
    with torch.no_grad():
        for name, run in (
            ("beam", lambda: run_beam(decoder, ctx, start, T, K)),
            ("greedy", lambda: run_greedy(decoder, ctx, start, T)),
        ):
            log(f"profile: {name}")
            seconds, _, _ = median_time(run, args.repeats)
            out[name] = {
                "seconds_unprofiled": seconds,
                "ms_per_step_unprofiled": 1e3 * seconds / T,
                **profile_run(decoder, run),
            }
        log("profile: isolated step parts")
        out["beam"]["step_parts"] = step_parts(decoder, ctx, start, K)
        out["greedy"]["step_parts"] = step_parts(decoder, ctx, start, 1)
    out["note"] = (
        "torch.profiler and cProfile add overhead to every op and call, inflating small ones; "
        "the unprofiled seconds and the isolated step_parts (median of 20) are the honest figures."
    )
    out["environment"] = environment()
    return out
