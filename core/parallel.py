"""Several independent jobs at once, one process each, the CPU's threads shared out among them.

Training a small model on a 2-core CPU does not keep both cores busy in one process: two models trained side
by side, one thread each, finish in ~0.7 of the time they take one after the other. The recipes use this to
train the members of an ensemble (`--members N`). Not to be confused with `core.distributed`, where several
processes train one model.
"""
from __future__ import annotations

import multiprocessing
import signal
import sys
from typing import Any, Callable

import torch
from tqdm import tqdm

from core.cli import UserError

INTERRUPTED = 130  # exit status of a job stopped by Ctrl-C (its checkpoint saved)


def _job(target: Callable[..., bool], threads: int, args: tuple, errors: Any) -> None:
    torch.set_num_threads(threads)
    try:
        finished = target(*args)
    except UserError as err:  # handed to the parent, which prints it once however many jobs hit it
        errors.put(str(err))
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C before the job took it over (e.g. while it read its data)
        sys.exit(INTERRUPTED)
    sys.exit(0 if finished else INTERRUPTED)


def run_side_by_side(target: Callable[..., bool], jobs: list[tuple[Any, ...]]) -> list[bool]:
    """Run `target(*job)` for every job, each in its own process with its share of the torch threads, and
    wait for all. `target` returns True when it finished, False when Ctrl-C stopped it (after saving its
    state). Returns those values; a UserError in a job is raised here (the first, if several jobs raise
    one), and so is a crash (its traceback printed by the job)."""
    threads = max(1, torch.get_num_threads() // len(jobs))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    errors = context.SimpleQueue()
    processes = [context.Process(target=_job, args=(target, threads, job, errors)) for job in jobs]
    for process in processes:
        process.start()
    # Ctrl-C reaches every process of the terminal's group: the jobs stop after their current step and save;
    # this one waits for them instead of dying first.
    notice = lambda *_: tqdm.write("Ctrl-C: every job stops after its current step and saves a checkpoint")
    previous = signal.signal(signal.SIGINT, notice)
    try:
        for process in processes:
            process.join()
    finally:
        signal.signal(signal.SIGINT, previous)
    codes = [process.exitcode for process in processes]
    if not errors.empty():
        raise UserError(errors.get())
    crashed = [f"job {k + 1} (exit status {code})" for k, code in enumerate(codes) if code not in (0, INTERRUPTED)]
    if crashed:
        raise UserError(f"{', '.join(crashed)} failed; see the messages above")
    return [code == 0 for code in codes]
