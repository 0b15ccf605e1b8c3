"""Interleaved A/B timing: run one benchmark script under several variants in turns (A B C A B C ...), so that
the machine's slow spells weigh on every variant alike, and print the medians and each variant's ratio to the
first as one JSON object.

A variant is a name and optional settings:
    commit=REV     run the script as it is at git revision REV (checked out in a temporary worktree)
    without=A,B    turn off speed tricks of core (benchmarks/tricks.py), e.g. without=packed
    args=...       extra arguments for the script (comma-separated), e.g. args=--malloc-defaults

    python benchmarks/ab.py --variant base --variant no-topk without=topk -- benchmarks/decode.py --memory-beams ''
    python benchmarks/ab.py --rounds 5 --variant before commit=9cf3beb --variant after -- benchmarks/translate.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("sentences_per_s", "batched_over_one_at_a_time", "pictures_per_s", "captions_per_s", "tokens_per_s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variant", nargs="+", action="append", required=True, metavar="NAME [KEY=VALUE ...]")
    p.add_argument("--rounds", type=int, default=3, help="runs of every variant, in turns (default: %(default)s)")
    p.add_argument("script", nargs=argparse.REMAINDER, help="-- the benchmark script and its arguments")
    args = p.parse_args(argv)
    args.script = [a for a in args.script if a != "--"] if args.script[:1] == ["--"] else args.script
    if not args.script:
        p.error("name the benchmark script after --")
    return args


def figures(result: Any, prefix: str = "") -> dict[str, float]:
    """The speed figures of a benchmark's JSON: every number whose key ends in one of FIGURES."""
    found: dict[str, float] = {}
    if isinstance(result, dict):
        for key, value in result.items():
            if key == "targets":  # the goals a benchmark prints beside its figures are not measurements
                continue
            name = f"{prefix}{key}"
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key.endswith(FIGURES):
                found[name] = float(value)
            elif isinstance(value, dict):
                found.update(figures(value, name + "."))
    return found


def checkout(commit: str, folder: Path) -> Path:
    """A worktree of `commit` in `folder` (the benchmark then imports that revision's code)."""
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(folder), commit], check=True, capture_output=True
    )
    return folder


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    variants = []
    with tempfile.TemporaryDirectory() as tmp:
        for number, (name, *settings) in enumerate(args.variant):
            options = dict(s.split("=", 1) for s in settings)
            tree = checkout(options["commit"], Path(tmp) / f"v{number}") if "commit" in options else ROOT
            env = {**os.environ, "SEQGEN_BENCH_WITHOUT": options.get("without", "")}
            extra = [a for a in options.get("args", "").split(",") if a]
            variants.append((name, tree, env, extra))
        runs: dict[str, list[dict[str, float]]] = {name: [] for name, *_ in variants}
        try:
            for round_number in range(args.rounds):
                for name, tree, env, extra in variants:
                    print(f"round {round_number + 1}/{args.rounds}: {name}", file=sys.stderr, flush=True)
                    script, *rest = args.script
                    done = subprocess.run(
                        [sys.executable, str(tree / script), *rest, *extra],
                        cwd=tree,
                        env=env,
                        capture_output=True,
                        text=True,
                    )
                    if done.returncode:
                        sys.exit(f"{name} failed:\n{done.stderr[-2000:]}")
                    runs[name].append(figures(json.loads(done.stdout)))
        finally:
            for _, tree, _, _ in variants:
                if tree != ROOT:
                    subprocess.run(
                        ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True
                    )
    first = variants[0][0]
    report: dict[str, Any] = {"benchmark": " ".join(args.script), "rounds": args.rounds, "variants": {}}
    for name, results in runs.items():
        medians = {key: statistics.median(r[key] for r in results) for key in results[0]}
        base = report["variants"][first]["median"] if name != first else medians
        report["variants"][name] = {
            "median": medians,
            f"ratio_to_{first}": {k: v / base[k] for k, v in medians.items()},
            "all": {key: [r[key] for r in results] for key in results[0]},
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
