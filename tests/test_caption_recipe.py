"""recipes/caption.py end to end on the nine shapes (a Karpathy split file naming copies of them as train, val and
test): every documented setting, its resume (after Ctrl-C or SIGTERM, exactly; with its feature cache gone), one
writer per run folder, a full disk, its refusals; and the `python -m captioning.caption` command line on its
checkpoint."""

import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from shapes import write_shapes
from test_faults import _wait_for, tmpfs, unmount

from captioning import caption as caption_cli
from captioning.backbones import build_backbone
from core.checkpoint import load_checkpoint
from core.console import run_main
from core.errors import Interrupted, UserError
from core.runs import LOCK
from core.trainer import Trainer
from recipes import caption as recipe

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "caption.py"

TINY = [
    "--backbone",
    "resnet18",
    "--weights",
    "none",
    "--image-size",
    "64",
    "--emb-dim",
    "32",
    "--hidden-dim",
    "64",
    "--dropout",
    "0",
    "--label-smoothing",
    "0",
    "--weight-decay",
    "0",
    "--lr",
    "3e-3",
    "--schedule",
    "constant",
    "--warmup-steps",
    "0",
    "--batch-size",
    "9",
    "--beam-size",
    "3",
]


def karpathy_corpus(folder):
    """Copies of the shapes under train/, val/ and test/, named by a Karpathy split file."""
    records = write_shapes(folder / "shapes")
    images = []
    for split in ("train", "val", "test"):
        (folder / split).mkdir()
        for r in records:
            shutil.copy(r.image, folder / split / r.image.name)
            images.append(
                {"filepath": split, "filename": r.image.name, "split": split, "sentences": [{"raw": r.captions[0]}]}
            )
    (folder / "dataset_shapes.json").write_text(json.dumps({"images": images}))
    return folder / "dataset_shapes.json", records


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    """The nine shapes as a Karpathy corpus, and the flags that train on them (features cached in its data/)."""
    folder = tmp_path_factory.mktemp("caption-recipe")
    corpus, records = karpathy_corpus(folder)
    return folder, ["--corpus", str(corpus), "--data-dir", str(folder / "data"), *TINY], records


@pytest.fixture(scope="module")
def run(shapes):
    folder, flags, records = shapes
    results = recipe.main([*flags, "--out", str(folder / "run"), "--steps", "300", "--valid-every", "100"])
    return folder, flags, results, records


def log_of(out: Path, split: str) -> list[dict]:
    """The records of one split ("train" or "valid") in a run's log.jsonl, the speed (which varies) left out."""
    lines = (out / "log.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in records if r["split"] == split]


def steps_of(out: Path) -> list[int]:
    return [r["step"] for r in log_of(out, "train")]


def last_step(out: Path) -> int:
    return load_checkpoint(out / "last.pt", task="captioning")["trainer"]["step"]


def test_recipe_learns_the_shapes_and_writes_its_pictures(run):
    folder, _, results, _ = run
    scores = results["scores"]
    assert scores["greedy"]["bleu4"] == 100.0 and scores["beam 3"]["bleu4"] == 100.0
    assert scores["greedy"]["cider_d"] > 0 and "nearest neighbour" in scores
    for name in (
        "best.pt",
        "last.pt",
        "config.json",
        "log.jsonl",
        "loss.png",
        "results.json",
        "samples.png",
        "attention.png",
    ):
        assert (folder / "run" / name).stat().st_size > 0, name
    assert json.loads((folder / "run" / "results.json").read_text())["steps"] == 300


def test_resume_goes_on_from_the_last_step(run):
    folder, _, _, _ = run
    results = recipe.main(["--resume", str(folder / "run"), "--steps", "320"])
    assert results["steps"] == 320
    steps = [json.loads(line)["step"] for line in (folder / "run" / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 320


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--images", "."], "--images is used only with --corpus"),
        (["--batch-size", "0"], "--batch-size"),
        (["--attention-penalty", "-1"], "--attention-penalty"),
        (["--fit", "stretch"], None),
    ],
)
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, extra, message):
    args = ["--out", str(tmp_path / "run"), *TINY, *extra]
    if "--images" not in extra:  # a corpus that is never read: the settings are refused first
        (tmp_path / "captions.tsv").write_text("missing.png\ta caption\n")
        args += ["--corpus", str(tmp_path / "captions.tsv")]
    with pytest.raises((UserError, SystemExit), match=message):
        recipe.main(args)
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


def test_a_folder_with_checkpoints_is_not_overwritten(run):
    folder, flags, _, _ = run
    before = (folder / "run" / "best.pt").read_bytes()
    with pytest.raises(UserError, match="already holds checkpoints"):
        recipe.main([*flags, "--out", str(folder / "run")])
    assert (folder / "run" / "best.pt").read_bytes() == before


def test_command_line_captions_files_folders_and_stdin_in_order(run, capsys, monkeypatch):
    folder, _, _, records = run
    checkpoint = str(folder / "run" / "best.pt")
    wanted = [f"{r.captions[0][:-2]}." for r in records]  # "a red square ." is written "a red square."
    caption_cli.main(["--checkpoint", checkpoint, str(records[4].image), str(records[0].image)])
    assert capsys.readouterr().out.splitlines() == [wanted[4], wanted[0]]
    caption_cli.main(["--checkpoint", checkpoint, str(folder / "test"), "--method", "greedy"])
    by_name = sorted(zip((r.image.name for r in records), wanted))
    assert capsys.readouterr().out.splitlines() == [text for _, text in by_name]
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{records[2].image}\n\n{records[3].image}\n"))
    caption_cli.main(
        ["--checkpoint", checkpoint, "-", "--with-names", "--n-best", "2", "--attention-png", str(folder / "att.png")]
    )
    lines = capsys.readouterr().out.splitlines()
    assert (
        len(lines) == 4
        and lines[0] == f"{records[2].image}\t{wanted[2]}"
        and lines[2].startswith(str(records[3].image))
    )
    assert (folder / "att.png").stat().st_size > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["nothing-here.png"], "does not exist"),
        (["{folder}"], "holds no pictures"),
        (["{shape}", "--beam-size", "0"], "--beam-size"),
        (["{shape}", "--method", "greedy", "--top-k", "3"], "--top-k is an option of --method sample"),
    ],
)
def test_command_line_bad_input_is_one_line(run, tmp_path, capsys, args, message):
    folder, _, _, records = run
    args = [a.format(folder=tmp_path, shape=records[0].image) for a in args]
    with pytest.raises(SystemExit) as exit_info:
        run_main(caption_cli.main, ["--checkpoint", str(folder / "run" / "best.pt"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize(
    "extra, attends",
    [
        pytest.param(["--fine-tune", "1"], True, id="fine-tune"),
        pytest.param(["--attention", "none"], False, id="attention-none"),
        pytest.param(["--attention", "luong"], True, id="attention-luong"),
        pytest.param(["--cell", "gru"], True, id="cell-gru"),
    ],
)
def test_every_documented_setting_trains_and_is_tested(shapes, tmp_path, extra, attends):
    _, flags, _ = shapes
    out = tmp_path / "run"
    results = recipe.main([*flags, *extra, "--out", str(out), "--steps", "4", "--valid-every", "2"])
    assert results["steps"] == 4 and json.loads((out / "results.json").read_text()) == results
    assert set(results["scores"]) == {"greedy", "beam 3", "nearest neighbour"}
    for scores in results["scores"].values():
        assert {"bleu1", "bleu4", "cider_d"} <= set(scores)
    assert (out / "samples.png").stat().st_size > 0 and (out / "best.pt").stat().st_size > 0
    assert (out / "attention.png").exists() == attends  # a decoder without attention has no maps to draw


@pytest.mark.slow
def test_one_process_writes_a_run_and_sigterm_leaves_it_to_resume(shapes, tmp_path):
    _, flags, _ = shapes
    out = tmp_path / "run"
    command = [sys.executable, str(RECIPE)]
    first = subprocess.Popen(
        [*command, *flags, "--out", str(out), "--steps", "100000", "--valid-every", "5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for(lambda: (out / "last.pt").exists(), first)
        second = subprocess.run([*command, "--resume", str(out)], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and f"is in use by process {first.pid}" in second.stderr, second.stderr
        errors = [line for line in second.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
        first.send_signal(signal.SIGTERM)  # as a job scheduler stops a job
        _, stderr = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.communicate()
    assert first.returncode == 130 and f"continue with --resume {out}" in stderr, stderr
    assert not (out / LOCK).exists() and not (out / "results.json").exists()  # no testing after an interruption
    stopped = last_step(out)
    assert 5 <= stopped < 100000 and steps_of(out) == list(range(1, stopped + 1))
    resumed = subprocess.run(
        [*command, "--resume", str(out), "--steps", str(stopped + 3)], capture_output=True, text=True, timeout=120
    )
    assert resumed.returncode == 0, resumed.stderr
    assert not (out / LOCK).exists()
    assert json.loads((out / "results.json").read_text())["steps"] == stopped + 3 == last_step(out)
    assert steps_of(out) == list(range(1, stopped + 4))


@pytest.mark.slow
def test_a_run_stopped_by_ctrl_c_and_resumed_ends_as_one_never_stopped(shapes, tmp_path, monkeypatch):
    _, flags, _ = shapes
    # dropout and batches of 4 of the 9 captions: the random state and the place in the data must both be resumed
    argv = [*flags, "--dropout", "0.3", "--batch-size", "4", "--steps", "10", "--valid-every", "4"]
    straight = recipe.main([*argv, "--out", str(tmp_path / "straight")])

    out = tmp_path / "stopped"
    train_step = Trainer._train_step

    def ctrl_c_in_step_7(trainer, lr):
        if trainer.step == 6:
            os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C were pressed during step 7
        return train_step(trainer, lr)

    monkeypatch.setattr(Trainer, "_train_step", ctrl_c_in_step_7)
    with pytest.raises(Interrupted, match=f"continue with --resume {out}"):
        recipe.main([*argv, "--out", str(out)])
    monkeypatch.undo()
    assert last_step(out) == 7 and not (out / "results.json").exists()
    resumed = recipe.main(["--resume", str(out)])

    assert steps_of(out) == list(range(1, 11))
    assert log_of(out, "train") == log_of(tmp_path / "straight", "train")
    assert log_of(out, "valid") == log_of(tmp_path / "straight", "valid")
    for name in ("best.pt", "last.pt"):
        a = load_checkpoint(tmp_path / "straight" / name, task="captioning")["model"]
        b = load_checkpoint(out / name, task="captioning")["model"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    for key in ("steps", "best_valid_cider_d", "scores", "test_pictures"):
        assert resumed[key] == straight[key], key


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(run, tmp_path, capsys):
    folder, _, _, _ = run
    disk = tmp_path / "disk"
    used = sum(p.stat().st_size for p in (folder / "run").iterdir())
    tmpfs(disk, f"{used // 1024 + 1024}k")  # room for the run and its log, not for another checkpoint
    try:
        out = disk / "run"
        shutil.copytree(folder / "run", out, ignore=shutil.ignore_patterns(LOCK))
        last = (out / "last.pt").read_bytes()
        steps = last_step(out)
        with pytest.raises(SystemExit) as exit_info:
            run_main(recipe.main, ["--resume", str(out), "--steps", str(steps + 2)])
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert exit_info.value.code == 2 and "Traceback" not in err, err
        assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err
        assert errors[0].startswith(f"error: cannot write {out}") and "No space left on device" in errors[0], err
        assert (out / "last.pt").read_bytes() == last and last_step(out) == steps
    finally:
        unmount(disk)


@pytest.mark.slow
def test_a_resumed_run_extracts_missing_features_with_its_own_backbone(shapes, tmp_path):
    folder, _, _ = shapes
    # a backbone file (random weights of another seed): a resumed run builds a backbone with random weights of
    # seed 0 and then loads the checkpoint's, and only the latter are the run's
    weights = tmp_path / "resnet18.pth"
    torch.save(build_backbone("resnet18", None, seed=1).body.state_dict(), weights)
    fingerprint = build_backbone("resnet18", weights).fingerprint
    assert fingerprint != build_backbone("resnet18", None).fingerprint
    data = tmp_path / "data"
    corpus = folder / "dataset_shapes.json"
    argv = ["--corpus", str(corpus), "--data-dir", str(data), *TINY, "--weights", str(weights)]
    argv += ["--steps", "4", "--valid-every", "2"]
    recipe.main([*argv, "--out", str(tmp_path / "intact")])
    made = sorted(p.name for p in (data / "features").iterdir())
    assert len(made) == 1 and fingerprint in made[0], made
    shutil.copytree(tmp_path / "intact", tmp_path / "extracted", ignore=shutil.ignore_patterns(LOCK))

    intact = recipe.main(["--resume", str(tmp_path / "intact"), "--steps", "8"])
    shutil.rmtree(data / "features")
    extracted = recipe.main(["--resume", str(tmp_path / "extracted"), "--steps", "8"])
    assert sorted(p.name for p in (data / "features").iterdir()) == made
    assert log_of(tmp_path / "extracted", "valid") == log_of(tmp_path / "intact", "valid")
    for key in ("steps", "best_valid_cider_d", "scores"):
        assert extracted[key] == intact[key], key
