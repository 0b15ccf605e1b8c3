"""recipes/caption.py end to end on the nine shapes (a Karpathy split file naming copies of them as train, val and
test), its resume, its refusals; and the `python -m captioning.caption` command line on its checkpoint."""

import io
import json
import shutil

import pytest
from shapes import write_shapes

from captioning import caption as caption_cli
from core.errors import UserError
from recipes import caption as recipe

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
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("caption-recipe")
    corpus, records = karpathy_corpus(folder)
    flags = ["--corpus", str(corpus), "--data-dir", str(folder / "data"), *TINY]
    results = recipe.main([*flags, "--out", str(folder / "run"), "--steps", "300", "--valid-every", "100"])
    return folder, flags, results, records


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
        from core.console import run_main

        run_main(caption_cli.main, ["--checkpoint", str(folder / "run" / "best.pt"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]
