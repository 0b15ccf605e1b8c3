"""What each CPU speed trick of core/speedups.py buys, measured in one process: every trick is turned off and on
in turns (A B A B ...), on the decode benchmark's batched greedy and beam search and on the translation
benchmark's greedy and beam 5 over the test split, and the speed-up is the median of the turns' ratios (a slow
spell of the machine weighs on both halves of a turn). Prints one JSON object.

    python benchmarks/speedups.py                              # the decode workloads, and translate's if trained
    python benchmarks/speedups.py --checkpoint runs/translate/member1/best.pt --rounds 9
    python benchmarks/speedups.py --quick                      # tiny sizes (smoke test)

glibc's malloc settings are process-wide: measure them with `benchmarks/ab.py ... args=--malloc-defaults`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import build, environment, log, run_beam, run_greedy, timed  # noqa: E402
from benchmarks.tricks import TRICKS, without  # noqa: E402
from core.console import keep_freed_memory  # noqa: E402

DECODE = dict(
    vocab=8000,
    emb=512,
    hidden=512,
    cell="gru",
    src_len=30,
    memory_dim=1024,
    batch=64,
    steps=50,
    beam=5,
    seed=0,
    dtype="float32",
)
QUICK = dict(DECODE, vocab=500, emb=32, hidden=32, src_len=6, memory_dim=48, batch=4, steps=6, beam=3)


def workloads(args: argparse.Namespace) -> dict[str, Callable[[], Any]]:
    """The timed calls: decode's batched greedy and beam, and a trained translator's greedy and beam 5."""
    sizes = argparse.Namespace(**(QUICK if args.quick else DECODE))
    decoder, ctx, start = build(sizes)
    found = {
        "decode greedy": lambda: run_greedy(decoder, ctx, start, sizes.steps),
        f"decode beam {sizes.beam}": lambda: run_beam(decoder, ctx, start, sizes.steps, sizes.beam),
    }
    if args.checkpoint and Path(args.checkpoint).exists():
        from seq2seq.data import ding_pairs
        from seq2seq.translator import Translator

        model = Translator.load(args.checkpoint)
        sentences = [s for s, _ in ding_pairs(args.data_dir)["test"]]
        found["translate greedy"] = lambda: model.search(sentences, method="greedy")
        found["translate beam 5"] = lambda: model.search(sentences, method="beam", beam_size=5)
    return found


def measure(trick: str, run: Callable[[], Any], rounds: int) -> dict:
    """Seconds without and with the trick in `rounds` turns (the order alternates), and the speed-up."""
    run()  # warm: first-call buffers, packed weights
    pairs = []
    for turn in range(rounds):
        order = (False, True) if turn % 2 == 0 else (True, False)
        took = {}
        for on in order:
            if on:
                took[on] = timed(run)[0]
            else:
                with without(trick):
                    took[on] = timed(run)[0]
        pairs.append((took[False], took[True]))
    ratios = [off / on for off, on in pairs]
    return {
        "speedup_median": round(statistics.median(ratios), 3),
        "speedups": [round(r, 3) for r in ratios],
        "seconds_on_median": round(statistics.median(on for _, on in pairs), 4),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="runs/translate/member1/best.pt", help="a translation checkpoint")
    p.add_argument("--data-dir", help="where default data is cached")
    p.add_argument("--rounds", type=int, default=7, help="turns of off/on per trick and workload")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tricks", default=",".join(TRICKS), help="comma-separated (default: all)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one round (smoke test)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as the decoding commands do
    rounds = 1 if args.quick else args.rounds
    out: dict[str, Any] = {"benchmark": "speedups", "rounds": rounds, "environment_before": environment()}
    with torch.no_grad():
        for name, run in workloads(args).items():
            for trick in args.tricks.split(","):
                log(f"{name}: without and with {trick}, {rounds} turns")
                out.setdefault(name, {})[trick] = measure(trick, run, rounds)
    out["environment"] = environment()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
