"""Load check of the server: N concurrent clients against `python recipes/serve.py` on 127.0.0.1 for a fixed time,
with dynamic batching on (--max-batch 32) and off (--max-batch 1) in the same run; prints one JSON object.

Each client sends one translation request after another (one sentence of the Ding test split, beam 5) and waits
for its answer. Reported per setting: requests/s, latency p50/p95/p99, errors (must be 0), and the server's
resident memory after a warm-up at full load and after the loads (growth there would be a leak). The rounds
interleave the settings; medians are reported.

    python recipes/translate.py --members 1 --snapshots 0 --out runs/single   # first: train the model served
    python benchmarks/serve.py                            # 1 and 16 clients, 20 s each, 2 rounds
    python benchmarks/serve.py --checkpoint CK --clients 1 4 16 --seconds 30 --rounds 3
    python benchmarks/serve.py --quick                    # an untrained tiny model, a few seconds (smoke test)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import subprocess  # noqa: E402

import httpx2 as httpx  # noqa: E402

from benchmarks.common import environment, log  # noqa: E402
from benchmarks.translate import tiny_model_and_sentences  # noqa: E402
from core.console import run_main  # noqa: E402
from core.errors import UserError  # noqa: E402
from core.files import read_text  # noqa: E402
from seq2seq.data import ding_pairs  # noqa: E402

DEFAULT_CHECKPOINT = "runs/single/best.pt"
SETTINGS = {"batching": ["--max-batch", "32"], "no_batching": ["--max-batch", "1"]}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=DEFAULT_CHECKPOINT, help="the translation checkpoint served")
    p.add_argument("--src", help="source sentences, one per line (default: the Ding test split)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 16], help="concurrent clients, one load each")
    p.add_argument("--seconds", type=float, default=20.0, help="how long each load lasts")
    p.add_argument("--rounds", type=int, default=2, help="rounds of every setting, interleaved")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--quick", action="store_true", help="an untrained tiny model, 1 s loads (smoke test)")
    return p.parse_args(argv)


def start_server(checkpoint: str, port: int, setting: list[str]) -> subprocess.Popen:
    argv = [sys.executable, str(ROOT / "recipes" / "serve.py"), "--translate", checkpoint, "--port", str(port)]
    process = subprocess.Popen([*argv, *setting], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None
    if not process.stdout.readline().startswith("serving"):
        raise UserError(f"the server did not start: {process.communicate(timeout=60)[1].strip()[-500:]}")
    return process


def resident_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS"))) / 1024


async def load(address: str, sentences: list[str], clients: int, seconds: float, beam: int) -> dict:
    """`clients` clients, each sending its next request when the last is answered, for `seconds`."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def client(number: int, http: httpx.AsyncClient) -> None:
        nonlocal errors
        i = number * 7
        while time.perf_counter() < deadline:
            body = {"sentences": [sentences[i % len(sentences)]], "beam_size": beam}
            started = time.perf_counter()
            try:
                answered = (await http.post(address + "/api/translate", json=body)).status_code == 200
            except httpx.HTTPError:
                answered = False
            latencies.append(time.perf_counter() - started) if answered else None
            errors += not answered
            i += 1

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(n, http) for n in range(clients)))
        elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0] if latencies else 0] * 99
    return {"requests": len(latencies), "requests_per_s": len(latencies) / elapsed, "errors": errors,
            "p50_ms": 1000 * cuts[49], "p95_ms": 1000 * cuts[94], "p99_ms": 1000 * cuts[98]}  # fmt: skip


def one_round(args: argparse.Namespace, checkpoint: str, sentences: list[str]) -> dict:
    """Every setting once: a fresh server, a warm-up, then each load."""
    found = {}
    for name, setting in SETTINGS.items():
        server = start_server(checkpoint, args.port, setting)
        address = f"http://127.0.0.1:{args.port}"
        try:
            warm_up = 1.0 if args.quick else 5.0  # at full load: the allocator then holds the largest batch's memory
            asyncio.run(load(address, sentences, max(args.clients), warm_up, args.beam))
            memory = {"rss_mb_before": resident_mb(server.pid)}
            for clients in args.clients:
                log(f"{name}: {clients} client(s) for {args.seconds:.0f} s")
                found[f"{name}_{clients}"] = asyncio.run(load(address, sentences, clients, args.seconds, args.beam))
            memory["rss_mb_after"] = resident_mb(server.pid)
            found[f"{name}_memory"] = memory
        finally:
            server.terminate()
            server.wait(120)
    return found


def medians(rounds: list[dict]) -> dict:
    return {key: {field: statistics.median(r[key][field] for r in rounds) for field in rounds[0][key]}
            for key in rounds[0]}  # fmt: skip


def sources(args: argparse.Namespace, folder: Path) -> tuple[str, list[str]]:
    """The checkpoint to serve and the sentences to send."""
    if args.quick:
        model, sentences = tiny_model_and_sentences()
        return str(model.save(folder / "tiny.pt")), sentences
    if not Path(args.checkpoint).exists():
        raise UserError(f"{args.checkpoint}: no such checkpoint (train one as the docstring says, or --checkpoint)")
    if args.src:
        return args.checkpoint, [s for s in read_text(args.src).splitlines() if s.strip()]
    return args.checkpoint, [s for s, _ in ding_pairs(None)["test"]]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.quick:
        args.clients, args.seconds, args.rounds = [1, 4], 1.0, 1
    with tempfile.TemporaryDirectory() as folder:
        checkpoint, sentences = sources(args, Path(folder))
        rounds = [one_round(args, checkpoint, sentences) for _ in range(args.rounds)]
    figures, most = medians(rounds), max(args.clients)
    out = {
        "benchmark": "serve",
        "checkpoint": "untrained tiny model" if args.quick else args.checkpoint,
        "request": f"one sentence, beam {args.beam}",
        "seconds_per_load": args.seconds,
        "rounds": args.rounds,
        "figures": figures,
        f"batching_speedup_at_{most}_clients": figures[f"batching_{most}"]["requests_per_s"]
        / figures[f"no_batching_{most}"]["requests_per_s"],
        f"p95_at_{most}_clients_over_single_client": figures[f"batching_{most}"]["p95_ms"]
        / figures[f"batching_{min(args.clients)}"]["p95_ms"],
        "environment": environment(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    run_main(main)
