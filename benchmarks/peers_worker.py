"""One system's runs for `peers.py`, in a process of its own: build the system's model, warm up, wait for a quiet
machine, time, and print one JSON object to stdout. It imports only torch, the standard library and the one
system's adapter (this project's packages only for the system `seqgen`), so nothing of one system reaches
another's process.

    python benchmarks/peers_worker.py --system plain --workloads greedy,beam,train --config '{...}'
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.peers_timing import OthersShare, peak_rss_growth, wait_quiet  # noqa: E402

ADAPTERS = {
    "seqgen": "benchmarks.peers_seqgen",
    "plain": "benchmarks.peers_plain",
    "joeynmt": "benchmarks.peers_joey",
    "opennmt-py": "benchmarks.peers_onmt",
    "fairseq": "benchmarks.peers_fairseq",
}
WORKLOADS = ("greedy", "beam", "train")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def data(cfg: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The same random words for every system: sources (sentences, src_len - 1) and one batch of targets
    (batch, tgt_len - 1), word indices in [0, vocab - 4); each system maps word w to its id 4 + w and appends
    its own EOS, so a source has src_len tokens and a target tgt_len."""
    g = torch.Generator().manual_seed(cfg["seed"])
    words = cfg["vocab"] - 4
    src = torch.randint(0, words, (cfg["sentences"], cfg["src_len"] - 1), generator=g)
    tgt = torch.randint(0, words, (cfg["batch"], cfg["tgt_len"] - 1), generator=g)
    return src, tgt


def workload(adapter: Any, cfg: dict, kind: str) -> tuple[Callable[[], Any], Callable[[], Any], int, str]:
    """(warm-up call, timed call, units the timed call does, unit name) of one workload."""
    src, tgt = data(cfg)
    if kind == "train":
        batch = adapter.train_batch(src[: cfg["batch"]], tgt)
        steps = cfg["train_steps"]
        return (
            lambda: [adapter.train_step(batch)],
            lambda: [adapter.train_step(batch) for _ in range(steps)],
            steps * cfg["batch"] * cfg["tgt_len"],
            "target tokens",
        )
    fn = adapter.greedy if kind == "greedy" else adapter.beam
    B = cfg["batch"]
    if getattr(adapter, "batches_itself", False):  # one call for every sentence, as its users call it
        calls = [adapter.source_batch(src)]
    else:
        calls = [adapter.source_batch(src[i : i + B]) for i in range(0, cfg["sentences"], B)]
    first = adapter.source_batch(src[:B])  # the warm-up: one batch
    return lambda: fn(first), lambda: [n for c in calls for n in fn(c)], cfg["sentences"], "sentences"


def check(kind: str, out: list, cfg: dict) -> dict:
    """Decoding: every hypothesis ran all `steps` steps (-1 marks one that stopped early); training: finite
    losses."""
    if kind == "train":
        ok = all(math.isfinite(x) for x in out)
        return {"ok": ok, "losses": [round(x, 4) for x in out]}
    lengths = sorted(set(out))
    return {"ok": lengths == [cfg["steps"]], "output_steps": lengths}


def count_calls(module: torch.nn.Module | None, fn: Callable[[], Any]) -> tuple[Any, int | None]:
    """fn's result and how often `module` ran meanwhile (its forward hook), or None without a module."""
    if module is None:
        return fn(), None
    calls = [0]
    handle = module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        return fn(), calls[0]
    finally:
        handle.remove()


def timed_run(fn: Callable[[], Any], cfg: dict) -> tuple[dict, list[dict], Any]:
    """Wait for a quiet machine, then time fn; run it again (up to cfg['retries'] times) while other processes
    took `quiet_pct` percent of the CPUs or more during it, and keep the least disturbed try."""
    tries, outs = [], []
    for _ in range(1 + cfg["retries"]):
        quiet = wait_quiet(cfg["quiet_pct"], cfg["max_wait"], cfg["quiet_window"])
        meter = OthersShare().start()
        started = time.perf_counter()
        outs.append(fn())
        seconds = time.perf_counter() - started
        tries.append({"seconds": seconds, **quiet, "others_cpu_pct_during": meter.stop()})
        if (tries[-1]["others_cpu_pct_during"] or 0.0) < cfg["quiet_pct"]:
            break
    best = min(range(len(tries)), key=lambda i: tries[i]["others_cpu_pct_during"] or 0.0)
    chosen = {**tries[best], "disturbed": (tries[best]["others_cpu_pct_during"] or 0.0) >= cfg["quiet_pct"]}
    return chosen, tries, outs[best]


def run(adapter: Any, cfg: dict, kind: str) -> dict:
    warm, timed, units, unit = workload(adapter, cfg, kind)
    module = adapter.step_module() if kind != "train" else None
    (warm_out, calls), memory = peak_rss_growth(lambda: count_calls(module, warm))
    chosen, tries, out = timed_run(timed, cfg)
    checks = {"warm_up": check(kind, warm_out, cfg), "timed": check(kind, out, cfg)}
    if calls is not None:  # the decoder's recurrent cell runs once per step of the first batch
        checks["decoder_cell_calls_per_batch"] = calls
        checks["warm_up"]["ok"] = checks["warm_up"]["ok"] and calls == cfg["steps"]
    log(f"  {adapter.name} {kind}: {units / chosen['seconds']:.1f} {unit}/s, others {chosen['others_cpu_pct_during']}%")
    return {
        "units": units,
        "unit": unit,
        "per_s": units / chosen["seconds"],
        **chosen,
        "tries": tries,
        "memory": memory,
        "checks": checks,
        "ok": checks["warm_up"]["ok"] and checks["timed"]["ok"],
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--system", choices=sorted(ADAPTERS), required=True)
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, run in this order")
    p.add_argument("--config", required=True, help="JSON: sizes, seed, threads and the quiet-machine settings")
    args = p.parse_args(argv)
    cfg = json.loads(args.config)
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    started = time.perf_counter()
    adapter = importlib.import_module(ADAPTERS[args.system]).Adapter(cfg)
    out = {
        "system": args.system,
        "version": adapter.version,
        "parameters": sum(p.numel() for p in adapter.model.parameters()),
        "notes": adapter.notes,
        "build_seconds": time.perf_counter() - started,
        "threads": torch.get_num_threads(),
        "workloads": {kind: run(adapter, cfg, kind) for kind in args.workloads.split(",")},
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
