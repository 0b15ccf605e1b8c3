"""Several independent jobs at once, one process each, the CPU's threads shared out among them.

Training a small model on a 2-core CPU does not keep both cores busy in one process: two models trained side
by side, one thread each, finish in less time than they take one after the other (README: measured). The
recipes use this to train the members of an ensemble (`--members N`). Not to be confused with
`core.distributed`, where several processes train one model.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from typing import Any

import torch
from tqdm import tqdm

from core.console import error_line, named_output
from core.errors import INTERRUPTED, UserError
from core.runs import release_all

JOB_MEMORY = 2**30  # what a job's interpreter, torch and a small model take, roughly (bytes)
JOBS_PER_CORE = 4  # beyond that, jobs side by side only wait for each other


def most_side_by_side() -> tuple[int, str]:
    """How many jobs this machine runs side by side, and why: a few per core, each with its share of the memory
    available now."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):  # not Linux: the cores alone decide
        free = None
    limit = JOBS_PER_CORE * cores if free is None else min(JOBS_PER_CORE * cores, max(1, free // JOB_MEMORY))
    return limit, f"{cores} cores" + ("" if free is None else f", {free / 2**30:.1f} GiB of memory available")


def _job(job: Callable[[], bool], threads: int, errors: Any, memory_flags: str) -> None:
    os.setpgrp()  # a terminal's Ctrl-C reaches the parent alone, which passes it on once
    threading.Thread(target=_stop_when_orphaned, daemon=True).start()
    torch.set_num_threads(threads)
    try:
        with named_output():
            finished = job()
    except KeyboardInterrupt:  # Ctrl-C before the job took it over (e.g. while it read its data)
        sys.exit(INTERRUPTED)
    except Exception as err:  # handed to the parent, which prints it once however many jobs hit it
        if (message := error_line(err, memory_flags)) is None:
            raise
        errors.put(message)
        sys.exit(2)
    finally:
        release_all()  # a job's process ends without the interpreter's exit handlers
    sys.exit(0 if finished else INTERRUPTED)


def _stop_when_orphaned() -> None:
    """A job whose parent died (kill -9) stops as by Ctrl-C: after its current step, saving its checkpoint."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        wait([parent.sentinel])
        os.kill(os.getpid(), signal.SIGINT)


def _failure(number: int, code: int) -> str:
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a real-time signal, which has no name
            name = f"signal {-code}"
        return f"job {number} (killed by {name}{': out of memory?' if -code == signal.SIGKILL else ''})"
    return f"job {number} (exit status {code})"


def _start_all(processes: list[Any], started: list[Any], stopping: Callable[[], bool]) -> None:
    """Start the processes in turn, adding each to `started`; none once stopping (Ctrl-C while the others
    started). A failure to start one (e.g. a job that cannot be pickled) takes down those already running."""
    try:
        for process in processes:
            if stopping():
                break
            process.start()
            started.append(process)
    except BaseException:
        for process in started:
            process.kill()
            process.join()
        raise


def run_side_by_side(jobs: Sequence[Callable[[], bool]], memory_flags: str = "") -> list[bool]:
    """Run every job (a picklable callable, e.g. a functools.partial of a module-level function), each in its
    own process with its share of the torch threads, and wait for all. A job returns True when it finished,
    False when Ctrl-C stopped it (after saving its state). Returns those values. When one job fails, the others
    are stopped as by Ctrl-C (they save their state), then a UserError of a job is raised here (the first, if
    several raise one), or one naming the failed jobs (a crash prints its own traceback). `memory_flags`: the
    caller's flags that shrink a job, named when one runs out of memory."""
    threads = max(1, torch.get_num_threads() // len(jobs))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch thread pools
    errors = context.SimpleQueue()
    processes = [context.Process(target=_job, args=(job, threads, errors, memory_flags)) for job in jobs]
    # Ctrl-C or SIGTERM to this process is passed on to every job as Ctrl-C: the jobs stop after their current
    # step and save; this one waits for them instead of dying first. Set before the jobs start, so that no
    # signal finds this process without it (the jobs, fresh interpreters, start with Python's own handler).
    stopping = False
    failures: list[str] = []  # the jobs that failed on their own, not by being stopped
    started: list[Any] = []

    def notice(*_: Any) -> None:
        nonlocal stopping
        stopping = True
        tqdm.write("stopping: every job stops after its current step and saves a checkpoint")
        for process in started:
            if process.exitcode is None:
                os.kill(process.pid, signal.SIGINT)

    previous = {signum: signal.signal(signum, notice) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        _start_all(processes, started, lambda: stopping)
        running = {process.sentinel: process for process in started}
        while running:
            for sentinel in wait(list(running)):
                process = running.pop(sentinel)
                process.join()
                # Ctrl-C (or the stop below) can reach a job that is still starting up: it dies of the signal,
                # or, once stopping, of a KeyboardInterrupt while it imports (exit status 1, the same as a crash)
                if process.exitcode in (0, INTERRUPTED, -signal.SIGINT) or (stopping and process.exitcode == 1):
                    continue
                failures.append(_failure(processes.index(process) + 1, process.exitcode))
                # no point in training the rest of an ensemble for hours: stop them as Ctrl-C would (once:
                # a second Ctrl-C quits without saving)
                stopping = True
                for other in running.values():
                    os.kill(other.pid, signal.SIGINT)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if not errors.empty():
        raise UserError(errors.get())
    if failures:
        raise UserError(f"{', '.join(failures)} failed; see the messages above")
    return [process.exitcode == 0 for process in processes]
