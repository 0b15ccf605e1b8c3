"""Data-parallel training: two processes on the CPU (Gloo), started by torchrun as a user would."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.checkpoint import load_checkpoint

WORKER = Path(__file__).with_name("ddp_worker.py")
REPO = Path(__file__).resolve().parents[1]


def torchrun(nproc: int, script: Path, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(script),
        *args,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def alone(*args: str) -> None:
    result = subprocess.run([sys.executable, str(WORKER), *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def train_losses(folder: Path) -> list[float]:
    records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if r["split"] == "train"]


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def assert_same_weights(a: dict, b: dict, atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol, rtol=0), name


@pytest.mark.slow
def test_two_processes_train_like_one_on_both_batches(tmp_path):
    # 10 steps over 5 batches per process: crosses epochs, so the carried state is reset on both sides, and in
    # each epoch's last step process 1 holds half as many tokens (its gradient must count for less)
    torchrun(2, WORKER, "--out", str(tmp_path / "ddp"), "--steps", "10")
    alone("--out", str(tmp_path / "one"), "--steps", "10", "--merge", "2")
    ddp0, ddp1 = weights(tmp_path / "ddp" / "weights.rank0.pt"), weights(tmp_path / "ddp" / "weights.rank1.pt")
    assert_same_weights(ddp0, ddp1)  # the processes never drift apart
    one = weights(tmp_path / "one" / "weights.rank0.pt")
    # averaging the two processes' gradients is the gradient over both batches (equal token counts)
    assert_same_weights(ddp0, one, atol=1e-5)
    assert train_losses(tmp_path / "ddp") == pytest.approx(train_losses(tmp_path / "one"), abs=1e-5)
    assert not (tmp_path / "ddp" / "weights.rank2.pt").exists()


@pytest.mark.slow
def test_ctrl_c_in_one_process_stops_both_and_the_resumed_run_matches(tmp_path):
    common = ["--steps", "10", "--dropout", "0.3"]  # dropout: every process's random state must be restored
    torchrun(2, WORKER, "--out", str(tmp_path / "full"), *common)
    torchrun(2, WORKER, "--out", str(tmp_path / "split"), *common, "--interrupt-at", "4", "--interrupt-rank", "1")
    saved = load_checkpoint(tmp_path / "split" / "last.pt")
    assert saved["trainer"]["step"] == 4 and len(saved["trainer"]["by_rank"]) == 2
    torchrun(2, WORKER, "--out", str(tmp_path / "split"), *common, "--resume", str(tmp_path / "split" / "last.pt"))
    assert train_losses(tmp_path / "split") == train_losses(tmp_path / "full")
    for rank in (0, 1):
        assert_same_weights(
            weights(tmp_path / "split" / f"weights.rank{rank}.pt"),
            weights(tmp_path / "full" / f"weights.rank{rank}.pt"),
        )


@pytest.mark.slow
def test_ctrl_c_while_the_main_process_validates_stops_both_after_the_next_step(tmp_path):
    # the other process is already past the step's exchange: acting at once would leave the two processes in
    # different collectives for ever (the timeout turns such a hang into a failure)
    torchrun(2, WORKER, "--out", str(tmp_path), "--steps", "10", "--interrupt-in-validation", timeout=120)
    assert load_checkpoint(tmp_path / "last.pt")["trainer"]["step"] == 4  # validated at 3, stopped after 4
    assert (tmp_path / "weights.rank1.pt").exists()


@pytest.mark.slow
def test_schedule_and_early_stopping_decisions_reach_every_process(tmp_path):
    # only the main process validates: had the others kept their own rate, their weights would drift apart,
    # and had they missed the early stop, they would wait for ever in the next step (the timeout fails that)
    torchrun(2, WORKER, "--out", str(tmp_path), "--steps", "30", "--never-improves", timeout=120)
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["split"] == "valid"] == [3, 6, 9]  # stopped after 2 bad ones
    assert sorted({r["lr"] for r in records if r["split"] == "train"}) == [5e-3, 1e-2]  # halved at step 6
    assert_same_weights(weights(tmp_path / "weights.rank0.pt"), weights(tmp_path / "weights.rank1.pt"))


@pytest.mark.slow
def test_textgen_recipe_runs_under_torchrun(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("a small corpus, written by the test, for two processes to share.\n" * 60)
    result = torchrun(
        2,
        REPO / "recipes" / "textgen.py",
        "--corpus",
        str(corpus),
        "--steps",
        "6",
        "--valid-every",
        "3",
        "--hidden-dim",
        "32",
        "--batch-size",
        "4",
        "--sample-len",
        "20",
        "--out",
        str(tmp_path / "run"),
    )
    assert result.stdout.count("test: ") == 1  # evaluation and samples come from the main process only
    assert json.loads((tmp_path / "run" / "results.json").read_text())["steps"] == 6
    assert load_checkpoint(tmp_path / "run" / "last.pt", task="textgen")["trainer"]["step"] == 6


@pytest.mark.slow
def test_translate_recipe_runs_under_torchrun(tmp_path):
    from test_translate_recipe import corpus_lines

    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("\n".join(corpus_lines()) + "\n")
    result = torchrun(
        2,
        REPO / "recipes" / "translate.py",
        "--corpus",
        str(corpus),
        "--vocab-size",
        "300",
        "--steps",
        "6",
        "--valid-every",
        "3",
        "--max-tokens",
        "60",
        "--emb-dim",
        "16",
        "--hidden-dim",
        "32",
        "--enc-emb-dim",
        "16",
        "--enc-hidden-dim",
        "16",
        "--beam-size",
        "2",
        "--out",
        str(tmp_path / "run"),
    )
    assert result.stdout.count("first test sentences") == 1
    saved = load_checkpoint(tmp_path / "run" / "last.pt", task="translation")
    assert saved["trainer"]["step"] == 6 and len(saved["trainer"]["by_rank"]) == 2
