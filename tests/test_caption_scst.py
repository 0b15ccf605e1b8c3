"""recipes/caption.py's self-critical phase (--scst-steps, --init-from) on the nine shapes: it trains from the best
cross-entropy weights with CIDEr-D as the reward, logs the rewards and draws them, keeps the start unless a
validation beats it, resumes exactly after Ctrl-C, and refuses the flags that do not go together."""

import json
import os
import signal

import pytest
import torch
from test_caption_recipe import shapes  # noqa: F401 (a fixture)

from core.checkpoint import load_checkpoint
from core.errors import Interrupted, UserError
from core.trainer import Trainer
from recipes import caption as recipe


def records(folder, split):
    """The records of one split of a run's log.jsonl, the speed (which varies) left out."""
    lines = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in lines if r["split"] == split]


def test_both_phases_log_rewards_and_test_the_best_checkpoint(shapes, tmp_path):  # noqa: F811
    _, flags, _ = shapes
    out = tmp_path / "run"
    phases = ["--steps", "30", "--valid-every", "2", "--scst-steps", "4", "--scst-lr", "1e-3", "--scst-samples", "3"]
    results = recipe.main([*flags, "--out", str(out), *phases])
    train = records(out / "scst", "train")
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert all({"reward", "baseline", "greedy_reward", "beat_greedy"} <= set(r) for r in train)
    assert (out / "scst" / "rewards.png").stat().st_size > 1000
    valid = records(out / "scst", "valid")
    ce_best = load_checkpoint(out / "best.pt", task="captioning")["trainer"]["best"]
    beaten = any(r["valid_cider_d"] > ce_best for r in valid)
    assert results["checkpoint"] == str(out / "scst" / "best.pt" if beaten else out / "best.pt")
    assert (out / "scst" / "best.pt").exists() == beaten
    assert json.loads((out / "results.json").read_text())["checkpoint"] == results["checkpoint"]
    # a resumed run keeps the --scst-steps it started with: its other phase flags need not repeat it
    again = recipe.main(["--resume", str(out), "--scst-samples", "3"])
    assert again["checkpoint"] == results["checkpoint"] and again["scores"] == results["scores"]


def test_init_from_trains_a_checkpoint_self_critically_and_resumes_exactly(shapes, tmp_path, monkeypatch):  # noqa: F811
    _, flags, _ = shapes
    start = tmp_path / "ce"
    recipe.main([*flags, "--out", str(start), "--steps", "20", "--valid-every", "20"])
    data = flags[: flags.index("--data-dir") + 2]  # the model comes from the checkpoint: no model flags
    argv = [*data, "--init-from", str(start / "best.pt"), "--scst-steps", "6", "--valid-every", "3",
            "--scst-samples", "2", "--scst-baseline", "mean", "--scst-lr", "1e-3"]  # fmt: skip
    straight = recipe.main([*argv, "--out", str(tmp_path / "straight")])
    assert not (tmp_path / "straight" / "scst").exists(), "no cross-entropy phase: the run is the phase"
    assert {"reward", "beat_greedy"} <= set(records(tmp_path / "straight", "train")[0])

    train_step = Trainer._train_step

    def ctrl_c_in_step_5(trainer, lr):
        if trainer.step == 4:
            os.kill(os.getpid(), signal.SIGINT)
        return train_step(trainer, lr)

    out = tmp_path / "stopped"
    monkeypatch.setattr(Trainer, "_train_step", ctrl_c_in_step_5)
    with pytest.raises(Interrupted, match=f"continue with --resume {out}"):
        recipe.main([*argv, "--out", str(out)])
    monkeypatch.undo()
    resumed = recipe.main(["--resume", str(out)])
    assert records(out, "train") == records(tmp_path / "straight", "train")
    assert records(out, "valid") == records(tmp_path / "straight", "valid")
    a = load_checkpoint(tmp_path / "straight" / "last.pt", task="captioning")["model"]
    b = load_checkpoint(out / "last.pt", task="captioning")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["scores"] == straight["scores"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--init-from", "x.pt"], "--init-from is used only with --scst-steps"),
        (
            ["--init-from", "x.pt", "--scst-steps", "2", "--hidden-dim", "8"],
            "--hidden-dim does not go with --init-from",
        ),
        (["--scst-samples", "3"], "--scst-samples is used only with --scst-steps"),
        (["--scst-steps", "2", "--scst-samples", "1", "--scst-baseline", "mean"], "--scst-samples"),
        (["--scst-steps", "-1"], "--scst-steps"),
        (["--scst-steps", "2", "--scst-lr", "0"], "--scst-lr"),
    ],
)
def test_bad_self_critical_settings_are_one_line(tmp_path, extra, message):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "captions.tsv").write_text("missing.png\ta caption\n")  # never read: the settings are refused first
    extra = [str(tmp_path / e) if e == "x.pt" else e for e in extra]
    with pytest.raises(UserError, match=message):
        recipe.main(["--out", str(tmp_path / "run"), "--corpus", str(tmp_path / "captions.tsv"), *extra])
    assert not (tmp_path / "run").exists()
