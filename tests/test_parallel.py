"""core.parallel: jobs side by side, each in its own process, with its share of the threads and its outcome."""
import pytest
import torch

from core.cli import UserError
from core.parallel import run_side_by_side


def job(outcome, folder):
    """Writes the thread count it was given; then finishes, reports Ctrl-C, fails cleanly or crashes."""
    (folder / f"{outcome}.threads").write_text(str(torch.get_num_threads()))
    if outcome.startswith("bad input"):
        raise UserError(f"{outcome}: a clear line")
    if outcome == "crash":
        raise RuntimeError("deep inside")
    return outcome == "finished"


def test_jobs_run_in_their_own_processes_with_a_share_of_the_threads(tmp_path):
    assert run_side_by_side(job, [("finished", tmp_path), ("interrupted", tmp_path)]) == [True, False]
    expected = max(1, torch.get_num_threads() // 2)
    assert all(int((tmp_path / f"{o}.threads").read_text()) == expected for o in ("finished", "interrupted"))


def test_a_job_error_is_raised_once_and_a_crash_is_named(tmp_path, capfd):
    with pytest.raises(UserError, match=r"^bad input [12]: a clear line$"):
        run_side_by_side(job, [("bad input 1", tmp_path), ("finished", tmp_path), ("bad input 2", tmp_path)])
    assert "a clear line" not in capfd.readouterr().err  # the jobs print nothing; the caller prints it once
    with pytest.raises(UserError, match=r"^job 2 \(exit status 1\) failed; see the messages above$"):
        run_side_by_side(job, [("finished", tmp_path), ("crash", tmp_path)])
    assert "RuntimeError: deep inside" in capfd.readouterr().err
