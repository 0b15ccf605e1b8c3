"""Training speed of `core.RNNDecoder`: target tokens/s of one full step; prints one JSON object.

One step is what `core.Trainer` does per batch, without its logging and checkpoints: teacher forcing through
`RNNDecoder.forward`, cross-entropy (ignore_index=PAD), backward, gradient clipping (norm 1.0) and an AdamW
step. Two models with random weights and random targets (no PAD, so every position counts):
  attention: the decode benchmark's decoder (Bahdanau over a random memory, input feeding, a Python loop
             over the T target positions); the memory is a constant input (no encoder to backpropagate into);
  lm:        no attention, 1-layer LSTM (one nn.LSTM call over the whole sequence), for reference.

    python benchmarks/train.py           # full size
    python benchmarks/train.py --quick   # tiny sizes, a few seconds (smoke test)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from benchmarks.common import environment, log  # noqa: E402
from core import PAD, SPECIALS, Context, RNNDecoder  # noqa: E402

QUICK = dict(vocab=500, emb=32, hidden=32, src_len=6, memory_dim=48, batch=4, tgt_len=6, steps=2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--emb", type=int, default=512)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--cell", choices=["gru", "lstm"], default="gru", help="cell of the attention decoder")
    p.add_argument("--src-len", type=int, default=30, help="memory positions S (all real)")
    p.add_argument("--memory-dim", type=int, default=1024, help="memory vector size M")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--tgt-len", type=int, default=30, help="target tokens per sentence T")
    p.add_argument("--dropout", type=float, default=0.2, help="DecoderConfig's default")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--steps", type=int, default=5, help="timed training steps after warm-up; median reported")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny sizes so it finishes in a few seconds")
    args = p.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
        args.warmup = 1
    return args


def train_step(
    decoder: RNNDecoder, optimizer: torch.optim.Optimizer, ctx: Context, inputs: torch.Tensor, targets: torch.Tensor
) -> dict[str, float]:
    """One step, timed in its three parts: forward + loss, backward, clip + optimizer."""
    t0 = time.perf_counter()
    logits = decoder(inputs, ctx)  # (B, T, V)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=PAD)
    t1 = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    t2 = time.perf_counter()
    nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
    optimizer.step()
    t3 = time.perf_counter()
    return {"forward_s": t1 - t0, "backward_s": t2 - t1, "optimizer_s": t3 - t2, "step_s": t3 - t0}


def measure(args: argparse.Namespace, decoder: RNNDecoder, ctx: Context) -> dict[str, Any]:
    B, T = args.batch, args.tgt_len
    g = torch.Generator().manual_seed(args.seed)
    tokens = torch.randint(len(SPECIALS), args.vocab, (B, T + 1), generator=g)  # no PAD: every target counts
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # (B, T), (B, T)
    decoder.train()
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=args.lr)
    for _ in range(args.warmup):
        train_step(decoder, optimizer, ctx, inputs, targets)
    runs = [train_step(decoder, optimizer, ctx, inputs, targets) for _ in range(args.steps)]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    n_tokens = B * T
    return {
        "target_tokens_per_step": n_tokens,
        "tokens_per_s": n_tokens / med["step_s"],
        "step_seconds": med["step_s"],
        "all_step_seconds": [r["step_s"] for r in runs],
        "median_seconds": {k: v for k, v in med.items() if k != "step_s"},
        "parameters": sum(p.numel() for p in decoder.parameters()),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    B, H = args.batch, args.hidden
    before = environment()

    log(f"attention decoder ({args.cell}), batch {B}, {args.tgt_len} target tokens")
    attn = RNNDecoder(
        args.vocab,
        args.emb,
        H,
        1,
        cell=args.cell,
        attention="bahdanau",
        memory_dim=args.memory_dim,
        dropout=args.dropout,
    )
    ctx = Context(
        torch.tanh(torch.randn(1, B, H)),
        torch.zeros(1, B, H) if args.cell == "lstm" else None,
        torch.randn(B, args.src_len, args.memory_dim),
        torch.ones(B, args.src_len, dtype=torch.bool),
    )
    with_attention = measure(args, attn, ctx)

    log(f"language model (lstm, no attention), batch {B}, {args.tgt_len} target tokens")
    lm = RNNDecoder(args.vocab, args.emb, H, 1, cell="lstm", attention=None, dropout=args.dropout)
    lm_ctx = Context(torch.zeros(1, B, H), torch.zeros(1, B, H))
    language_model = measure(args, lm, lm_ctx)

    out = {
        "benchmark": "train",
        "config": {
            "vocab": args.vocab,
            "emb": args.emb,
            "hidden": H,
            "layers": 1,
            "batch": B,
            "tgt_len": args.tgt_len,
            "src_len": args.src_len,
            "memory_dim": args.memory_dim,
            "dropout": args.dropout,
            "optimizer": "AdamW",
            "lr": args.lr,
            "clip_norm": 1.0,
            "warmup_steps": args.warmup,
            "timed_steps": args.steps,
            "quick": args.quick,
        },
        "attention": {"cell": args.cell, "attention": "bahdanau", "input_feeding": True, **with_attention},
        "lm": {"cell": "lstm", "attention": None, **language_model},
        "attention_over_lm_time": with_attention["step_seconds"] / language_model["step_seconds"],
        "environment": {
            **environment(),
            "load_average_before": before["load_average"],
            "cpu_busy_pct_others_before": before["cpu_busy_pct_others"],
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
