"""This toolkit beside established RNN toolkits on one model; prints one JSON object and writes a bar chart.

The model, in every system (as far as each allows; each system's JSON lists its differences): vocabularies of
8000, embeddings 256, a bidirectional GRU encoder of 512 per direction, a GRU decoder of 512 with Bahdanau
attention and input feeding, a learned bridge h0 = tanh(Linear(final forward + backward states)); 14.6M
parameters. Random weights; 256 random sources of 30 tokens, batches of 64, dropout 0.

  greedy, beam 5  sentences/s in eval mode, EOS banned until step 50, so that every system runs exactly 50
                  decoder steps per sentence (each worker checks the output lengths and, where it can, counts
                  the calls of the decoder's recurrent cell);
  training        target tokens/s of forward + backward + Adam step, batch 64 x 30 source -> 30 target tokens,
                  cross-entropy.

Systems: `seqgen` (this toolkit through its public API: benchmarks/peers_seqgen.py), `plain` (the simplest
vectorised PyTorch, the floor: benchmarks/peers_plain.py), and JoeyNMT 2.3.0, OpenNMT-py 3.5.1 and fairseq
0.12.2 (its LSTM model: fairseq has no GRU one) from the venv that `make peers` builds
(~/.cache/seqgen/peers-venv, reusing this project's torch). Each run is a fresh process
(benchmarks/peers_worker.py) with 2 torch threads, so no system's imports or settings reach another.

Method: rounds of interleaved runs (greedy for every system, then beam, then training; the systems' order
rotates each round); each run warms up on one batch (one step), waits until the other processes use under
--quiet-pct of the CPUs over a second (at most --max-wait s), and is timed; a run during which the others took
--quiet-pct or more is run again (--retries) and the least disturbed try is kept. Figures are medians over
the rounds; every try records the others' share before and during it.

Memory: the growth of the peak RSS (VmHWM, reset through /proc/self/clear_refs) over the workload's first
call (the warm-up, cold, in a fresh process, after the model is built), median over the rounds.

Useful FLOPs (benchmarks/peers_report.py), counting multiply-adds x 2 of the matrix products only, at each
system's own shapes: gates g (3 GRU, 4 LSTM), embedding E, encoder He per direction, memory M = 2 He, decoder
D, attention A = D, vocabulary V, source S, target T, steps N, beam K, batch B:
  encoder per sentence  = S * (2 * g * He * (E + He) + M * A) + bridge (M * D)
  decoder step per row  = g * D * (E + 2 D) + D * A + S * A + S * M + (D + M) * D + D * V
  greedy per sentence   = 2 * (encoder + N * step);   beam = 2 * (encoder + N * K * step)
  training per step     = 3 * 2 * B * (encoder + T * step)   (backward = 2 x forward; Adam not counted)
(Luong "general" attention, fairseq's: no keys, query D * M, scores S * M.) Work a system does beyond this
(recomputing the attention keys at every step, say) is not useful. Each figure is shared out of the
machine's sgemm rate: a 4096 x 4096 torch.mm at 2 threads, the best of its measurements before each round.

    python benchmarks/peers.py                # full; `make peers` builds the peers venv first
    python benchmarks/peers.py --quick        # tiny sizes, peers only if their venv exists
    python benchmarks/peers.py --systems seqgen,plain --rounds 5 --png /tmp/peers.png
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import environment, log  # noqa: E402
from benchmarks.peers_report import WORKLOADS, add_ratios, others_share, plot, summarise, table  # noqa: E402
from benchmarks.peers_timing import wait_quiet  # noqa: E402

SYSTEMS = ("seqgen", "plain", "joeynmt", "opennmt-py", "fairseq")
PEERS = ("joeynmt", "opennmt-py", "fairseq")
PEERS_VENV = Path.home() / ".cache" / "seqgen" / "peers-venv"
WORKER = ROOT / "benchmarks" / "peers_worker.py"
SIZES = dict(vocab=8000, emb=256, hidden=512, dec_hidden=512, src_len=30, tgt_len=30, batch=64, sentences=256)
QUICK = dict(vocab=500, emb=32, hidden=32, dec_hidden=32, src_len=6, tgt_len=6, batch=4, sentences=8, steps=6)
QUICK.update(beam=3, train_steps=2, rounds=1, retries=0, max_wait=0.0, quiet_window=0.1, sgemm_n=256)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated, of " + ", ".join(SYSTEMS))
    p.add_argument("--peers-venv", type=Path, default=PEERS_VENV, help="the venv `make peers` builds")
    p.add_argument("--steps", type=int, default=50, help="decoder steps per sentence (EOS banned until then)")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--train-steps", type=int, default=4, help="timed training steps per run, after one warm-up")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; figures are their medians")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quiet-pct", type=float, default=10.0, help="others' CPU share that counts as quiet")
    p.add_argument("--max-wait", type=float, default=30.0, help="seconds to wait for quiet before each run")
    p.add_argument("--retries", type=int, default=1, help="reruns of a run disturbed by other processes")
    p.add_argument("--sgemm-n", type=int, default=4096, help="matrix size of the sgemm measurement")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=1800, help="seconds one worker may take")
    p.add_argument("--png", help="where the bar chart goes (default benchmarks/peers.png; --quick: a temporary file)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds (smoke test)")
    args = p.parse_args(argv)
    args.quiet_window = 1.0
    for name, value in SIZES.items():
        setattr(args, name, value)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    if args.png is None:
        args.png = str(
            Path(tempfile.gettempdir()) / "peers-quick.png" if args.quick else ROOT / "benchmarks" / "peers.png"
        )
    unknown = set(args.systems.split(",")) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}; choose from {', '.join(SYSTEMS)}")
    return args


def worker_config(args: argparse.Namespace) -> dict:
    keys = [*SIZES, "steps", "beam", "train_steps", "lr", "seed", "threads", "quiet_pct", "max_wait", "retries"]
    return {**{k: getattr(args, k) for k in keys}, "quiet_window": args.quiet_window}


def pythons(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, str]]:
    """The interpreter of each system to run, and why each system left out is left out."""
    peers_python = args.peers_venv / "bin" / "python"
    chosen, skipped = {}, {}
    for name in args.systems.split(","):
        if name not in PEERS:
            chosen[name] = sys.executable
        elif peers_python.exists():
            chosen[name] = str(peers_python)
        else:
            skipped[name] = f"no peers venv at {args.peers_venv} (`make peers` builds it)"
    return chosen, skipped


def run_worker(python: str, system: str, workloads: list[str], cfg: dict, timeout: float) -> dict:
    """One worker process; its JSON, or {'error': ...} with the end of its stderr."""
    command = [python, str(WORKER), "--system", system, "--workloads", ",".join(workloads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg["threads"]), "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run(
            [*command, "--config", json.dumps(cfg)], capture_output=True, text=True, timeout=timeout, env=env
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in done.stderr.splitlines():
        if line.startswith("  ") and ":" in line and "/s" in line:
            log(line)  # the worker's one progress line per workload
    if done.returncode != 0:
        return {"error": f"exit status {done.returncode}: " + done.stderr.strip()[-1500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def sgemm_gflops(n: int, threads: int, repeats: int = 3) -> float:
    """Single-precision matrix product rate of this machine: the best of `repeats` n x n torch.mm, GFLOP/s."""
    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best / 1e9


def schedule(args: argparse.Namespace, chosen: dict[str, str]) -> tuple[dict[str, list], list[float]]:
    """Every round: sgemm, then each workload for every system (the order rotating); the workers' outputs by
    system, and the sgemm measurements. --quick runs every workload in one process per system."""
    cfg, names = worker_config(args), list(chosen)
    runs: dict[str, list] = {name: [] for name in names}
    sgemm = []
    for r in range(args.rounds):
        wait_quiet(args.quiet_pct, args.max_wait, args.quiet_window)
        sgemm.append(sgemm_gflops(args.sgemm_n, args.threads))
        log(f"round {r + 1}/{args.rounds}: sgemm {sgemm[-1]:.1f} GFLOP/s")
        order = names[r % len(names) :] + names[: r % len(names)]
        groups = [list(WORKLOADS)] if args.quick else [[kind] for kind in WORKLOADS]
        for workloads in groups:
            for name in order:
                out = run_worker(chosen[name], name, workloads, cfg, args.timeout)
                if "error" in out:
                    log(f"  {name} {','.join(workloads)}: failed: {out['error'][-300:]}")
                runs[name].append(out)
    return runs, sgemm


def merge(outputs: list[dict]) -> list[dict]:
    """A system's worker outputs as one per round (a full run has one process per workload)."""
    rounds: list[dict] = []
    for out in outputs:
        if rounds and not set(out["workloads"]) & set(rounds[-1]["workloads"]):
            rounds[-1]["workloads"].update(out["workloads"])
        else:
            rounds.append({**out, "workloads": dict(out["workloads"])})
    return rounds


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    before = environment()
    chosen, skipped = pythons(args)
    log(f"systems: {', '.join(chosen)}" + (f"; skipped: {', '.join(skipped)}" if skipped else ""))
    runs, sgemm = schedule(args, chosen)
    best_sgemm = max(sgemm)
    systems: dict[str, dict] = {}
    for name, outputs in runs.items():
        errors = [o["error"] for o in outputs if "error" in o]
        if errors:
            if name in ("seqgen", "plain"):
                raise SystemExit(f"{name} failed: {errors[0]}")
            systems[name] = {"error": errors[0].splitlines()[-1][:300], "errors": errors}
            continue
        systems[name] = summarise(name, merge(outputs), worker_config(args), best_sgemm * 1e9)
    add_ratios(systems)
    out = {
        "benchmark": "peers",
        "config": {**worker_config(args), "rounds": args.rounds, "sgemm_n": args.sgemm_n, "quick": args.quick},
        "sgemm_gflops": {"best": best_sgemm, "per_round": sgemm},
        "systems": systems,
        "skipped": skipped,
        "all_checks_ok": all(s.get("checks_ok", False) for s in systems.values() if "error" not in s),
        "memory_method": "peak RSS growth (VmHWM reset by /proc/self/clear_refs) over the workload's first, cold "
        "call in a fresh process after the model is built; median over the rounds",
        "table": table(systems),
        "environment": {**before, "load_average_after": [round(x, 2) for x in os.getloadavg()]},
    }
    busy = others_share(systems)
    out["others_cpu_pct_during_runs_median"] = busy
    plot(systems, args.png, f"{before['cpu']}, {args.threads} threads, {before['date']}; others' CPU share {busy}%")
    out["png"] = args.png
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
