"""seq2seq.parallel: jobs side by side, each in its own process, with its share of the threads and its outcome."""

import multiprocessing
import os
import signal
import threading
import time
from functools import partial

import pytest
import torch

from core.errors import UserError
from seq2seq.parallel import run_side_by_side


def job(outcome, folder):
    """Writes the thread count it was given; then finishes, reports Ctrl-C, dies of Ctrl-C, fails cleanly,
    crashes, is killed, or waits to be stopped (and notes that it was)."""
    (folder / f"{outcome}.threads").write_text(str(torch.get_num_threads()))
    if outcome.startswith("bad input"):
        raise UserError(f"{outcome}: a clear line")
    if outcome.startswith("crash"):
        deadline = time.monotonic() + 60
        while outcome == "crash once the other waits" and not (folder / "waiting").exists():
            assert time.monotonic() < deadline, "the other job never started waiting"
            time.sleep(0.05)
        raise RuntimeError("deep inside")
    if outcome == "out of memory":
        torch.empty(2**50)  # 4 PiB: the CPU allocator refuses at once
    if outcome == "killed":
        os.kill(os.getpid(), signal.SIGKILL)
    if outcome == "dies of ctrl-c":  # as when Ctrl-C comes before the interpreter handles it
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    if outcome.startswith("waits"):
        try:
            (folder / "waiting").write_text("")
            time.sleep(60)  # the tests that stop it fail if they take this long
        except KeyboardInterrupt:
            (folder / "stopped").write_text("by the parent")
            if outcome == "waits, then breaks":  # as a job still importing when stopped
                raise RuntimeError("stopped while starting") from None
            raise
    return outcome == "finished"


def jobs(folder, *outcomes):
    return [partial(job, outcome, folder) for outcome in outcomes]


def test_jobs_run_in_their_own_processes_with_a_share_of_the_threads(tmp_path):
    assert run_side_by_side(jobs(tmp_path, "finished", "interrupted", "dies of ctrl-c")) == [True, False, False]
    expected = max(1, torch.get_num_threads() // 3)
    assert all(int((tmp_path / f"{o}.threads").read_text()) == expected for o in ("finished", "interrupted"))


def test_a_job_error_is_raised_once_and_a_crash_is_named(tmp_path, capfd):
    with pytest.raises(UserError, match=r"^bad input [12]: a clear line$"):
        run_side_by_side(jobs(tmp_path, "bad input 1", "finished", "bad input 2"))
    assert "a clear line" not in capfd.readouterr().err  # the jobs print nothing; the caller prints it once
    with pytest.raises(UserError, match=r"^job 2 \(exit status 1\) failed; see the messages above$"):
        run_side_by_side(jobs(tmp_path, "finished", "crash"))
    assert "RuntimeError: deep inside" in capfd.readouterr().err
    with pytest.raises(UserError, match=r"^out of memory while allocating 4194304.0 GiB; lower --max-tokens$"):
        run_side_by_side(jobs(tmp_path, "finished", "out of memory"), memory_flags="--max-tokens")
    assert "Traceback" not in capfd.readouterr().err
    with pytest.raises(UserError, match=r"^job 1 \(killed by SIGKILL: out of memory\?\) failed"):
        run_side_by_side(jobs(tmp_path, "killed"))


def test_a_failing_job_stops_the_others_as_ctrl_c_would(tmp_path):
    started = time.monotonic()
    with pytest.raises(UserError, match=r"^job 2 \(exit status 1\) failed"):
        run_side_by_side(jobs(tmp_path, "waits", "crash once the other waits"))
    assert time.monotonic() - started < 50  # without the stop it waits a minute for the sleeping job
    assert (tmp_path / "stopped").read_text() == "by the parent"


def test_only_the_job_that_failed_first_is_named(tmp_path):
    with pytest.raises(UserError, match=r"^job 2 \(exit status 1\) failed; see the messages above$"):
        run_side_by_side(jobs(tmp_path, "waits, then breaks", "crash once the other waits"))
    assert (tmp_path / "stopped").read_text() == "by the parent"


def test_a_job_that_cannot_start_takes_down_the_started_ones(tmp_path):
    handler = signal.getsignal(signal.SIGINT)
    unpicklable = partial(job, "finished", tmp_path, lock=threading.Lock())
    with pytest.raises(TypeError, match="pickle"):
        run_side_by_side([*jobs(tmp_path, "waits"), unpicklable])
    assert multiprocessing.active_children() == [] and signal.getsignal(signal.SIGINT) is handler
