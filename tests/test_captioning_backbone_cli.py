"""`python -m captioning.backbone`: top classes per picture, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from torchvision import models

from captioning.backbone import main, top_classes
from core.console import run_main

ROOT = Path(__file__).resolve().parents[1]


def test_top_classes_are_sorted_with_names():
    probs = torch.zeros(2, 1000)
    probs[0, 652], probs[0, 7], probs[1, 3] = 0.7, 0.2, 0.9
    rows = top_classes(probs, 2)
    assert rows[0] == [("military uniform", pytest.approx(0.7)), ("cock", pytest.approx(0.2))]
    assert rows[1][0] == ("tiger shark", pytest.approx(0.9))


def test_prints_the_top_classes_of_each_picture(tmp_path, capsys):
    torch.manual_seed(0)
    torch.save(models.mobilenet_v3_small().state_dict(), tmp_path / "weights.pth")
    for name in ("a.png", "b.jpg"):
        Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / name)
    main(
        [
            str(tmp_path / "a.png"),
            str(tmp_path / "b.jpg"),
            "--backbone",
            "mobilenet_v3_small",
            "--weights",
            str(tmp_path / "weights.pth"),
            "--top",
            "3",
            "--device",
            "cpu",
        ]
    )
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == str(tmp_path / "a.png") and lines[4] == str(tmp_path / "b.jpg") and len(lines) == 8
    probs = [float(line.split()[0]) for line in lines[1:4]]
    names = models.ResNet18_Weights.IMAGENET1K_V1.meta["categories"]
    assert probs == sorted(probs, reverse=True) and all(line.split(None, 1)[1] in names for line in lines[1:4])


@pytest.mark.parametrize(
    "args, words",
    [
        (["{tmp}/cut.png", "--weights", "none"], ["cut.png", "truncated"]),
        (["{tmp}/ok.png", "--weights", "{tmp}/nope.pth", "--backbone", "resnet18"], ["nope.pth", "does not exist"]),
        (["{tmp}/ok.png", "--backbone", "resnet18"], ["no pretrained resnet18 weights"]),
        (["{tmp}/ok.png", "--top", "0", "--weights", "none"], ["--top = 0"]),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, words):
    Image.effect_noise((64, 64), 64).convert("RGB").save(tmp_path / "ok.png")
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:6000])
    with pytest.raises(SystemExit) as exit_:
        run_main(main, [a.format(tmp=tmp_path) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert all(word in err[0] for word in words), err[0]


def test_command_line_in_a_subprocess(tmp_path):
    (tmp_path / "fake.png").write_text("this is text, not a picture")
    result = subprocess.run(
        [sys.executable, "-m", "captioning.backbone", str(tmp_path / "fake.png")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"error: {tmp_path / 'fake.png'} is not a picture Pillow can read"
