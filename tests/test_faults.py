"""Bad input and faults, table-driven per command line: each must end with a non-zero exit status and one
`error:` line naming the problem, no traceback, and the run folder's files as they were. Then a full and a
read-only disk (a small tmpfs, where this machine may mount one), output to /dev/full, and the processes of a
two-member translation run (a signal to the parent, kill -9 of it, a second writer)."""

import copy
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

import core.runs
from captioning.backbone import main as backbone_main
from captioning.caption import main as caption_main
from captioning.captioner import Captioner, ImageConfig
from core import DecoderConfig, WordTokenizer
from core.checkpoint import load_checkpoint, save_checkpoint
from core.console import run_main
from core.generate import main as generate_main
from recipes.caption import main as caption_recipe_main
from recipes.textgen import main as textgen_main
from recipes.translate import main as translate_recipe_main
from seq2seq.bleu import main as bleu_main
from seq2seq.translate import main as translate_main
from seq2seq.translator import EncoderConfig, Translator

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 40
TINY = (
    "--steps 2 --valid-every 2 --hidden-dim 16 --emb-dim 8 --batch-size 2 --bptt 16 --sample-len 5 --device cpu".split()
)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A textgen run folder, a language model and a translator checkpoint, damaged copies, and input files."""
    d = tmp_path_factory.mktemp("faults")
    (d / "corpus.txt").write_text(CORPUS)
    textgen_main(["--corpus", str(d / "corpus.txt"), "--out", str(d / "run"), *TINY])
    words = WordTokenizer("der hund the dog".split())
    torch.manual_seed(0)
    Translator(
        words,
        words,
        EncoderConfig(enc_emb_dim=8, enc_hidden_dim=8),
        DecoderConfig(emb_dim=8, hidden_dim=8, attention="luong"),
    ).save(d / "mt.pt")
    ck = load_checkpoint(d / "run" / "best.pt", task="textgen")
    for name, change in DAMAGED.items():
        broken = copy.deepcopy(ck)
        change(broken)
        save_checkpoint(d / f"{name}.pt", broken)
    (d / "cut.pt").write_bytes((d / "run" / "best.pt").read_bytes()[:5000])
    (d / "empty.txt").write_text("")
    (d / "latin1.txt").write_bytes("der Hund bellt \xe4\n".encode("latin-1"))
    (d / "src.txt").write_text("der hund\n" + "der hund " * 30 + "\n")
    (d / "two.txt").write_text("the dog\nthe dog\n")
    (d / "one.txt").write_text("the dog\n")
    (d / "pairs.tsv").write_text("".join(f"der hund {i}\tthe dog {i}\n" for i in range(80)))
    (d / "latin1.tsv").write_bytes("der Hund\tthe dog\n\xe4\tx\n".encode("latin-1"))
    (d / "folder").mkdir()
    (d / "loop").symlink_to(d / "loop")  # a symbolic link to itself
    Image.new("RGB", (40, 30), (200, 40, 40)).save(d / "shape.png")
    (d / "captions.tsv").write_text("shape.png\ta red shape\n")
    (d / "latin1.args").write_bytes("--beam-size 2\n# k\xe4se\n".encode("latin-1"))
    (d / "self.args").write_text(f"--beam-size 2\n@{d / 'self.args'}\n")
    torch.manual_seed(0)
    Captioner(
        WordTokenizer("a red shape".split()),
        ImageConfig(backbone="resnet18", image_size=32),
        DecoderConfig(emb_dim=8, hidden_dim=8, attention="bahdanau"),
        weights=None,
    ).save(d / "cap.pt")
    return d


def _set(path: list, value):
    def change(ck):
        place = ck
        for key in path[:-1]:
            place = place[key]
        place[path[-1]] = value

    return change


DAMAGED = {  # checkpoints whose bytes are intact but whose contents are wrong
    "nan_weights": lambda ck: ck["model"]["decoder.output.bias"].fill_(float("nan")),
    "negative_size": _set(["config", "decoder", "hidden_dim"], -4),
    "config_type": _set(["config", "decoder", "hidden_dim"], "large"),
    "config_not_mapping": _set(["config", "decoder"], [1, 2]),
    "unknown_field": _set(["config", "decoder", "colour"], "red"),
    "config_misfit": _set(["config", "decoder", "hidden_dim"], 24),
    "tokenizer_kind": _set(["tokenizers", "text", "kind"], "morse"),
    "tokenizer_symbols": _set(["tokenizers", "text", "symbols"], None),
    "weights_not_mapping": _set(["model"], [1.0]),
    "missing_weight": lambda ck: ck["model"].pop("decoder.output.bias"),
}

G, T, B, R, TR = generate_main, translate_main, bleu_main, textgen_main, translate_recipe_main
# (command, arguments with {d} for the files' folder, text the error line must hold)
CASES = [
    (G, "--checkpoint {d}/run/best.pt --max-len 0", "--max-len = 0"),
    (G, "--checkpoint {d}/run/best.pt --max-len -1", "--max-len = -1"),
    (G, "--checkpoint {d}/run/best.pt --temperature 0", "--temperature = 0"),
    (G, "--checkpoint {d}/run/best.pt --temperature nan", "--temperature = nan"),
    (G, "--checkpoint {d}/run/best.pt --top-k -1", "--top-k = -1"),
    (G, "--checkpoint {d}/run/best.pt --top-p 0", "--top-p = 0"),
    (G, "--checkpoint {d}/run/best.pt --top-p 1.5", "--top-p = 1.5"),
    (G, "--checkpoint {d}/run/best.pt --num-samples 0", "--num-samples = 0"),
    (G, "--checkpoint {d}/run/best.pt --method beam --beam-size 0", "--beam-size = 0"),
    (G, "--checkpoint {d}/run/best.pt --method bogus", "invalid choice: 'bogus'"),
    (G, "--checkpoint {d}/run/best.pt --seed -1", "--seed = -1"),
    (G, "--checkpoint {d}/run/best.pt --repetition-penalty 0", "--repetition-penalty = 0"),
    (G, "--checkpoint {d}/run/best.pt --min-len 5 --max-len 3", "min"),
    (G, "--checkpoint {d}/run/best.pt --no-repeat-ngram -1", "--no-repeat-ngram = -1"),
    (G, "--checkpoint {d}/run/best.pt --device gpu9", "--device 'gpu9'"),
    (G, "--checkpoint {d}/run/best.pt --max-len 1e9", "invalid int value"),
    (G, "--checkpoint {d}/nowhere.pt", "does not exist"),
    (G, "--checkpoint {d}/corpus.txt", "not a readable checkpoint"),
    (G, "--checkpoint {d}", "is a folder; a file is needed"),
    (G, "--checkpoint {d}/cut.pt", "not a readable checkpoint"),
    (G, "--checkpoint {d}/mt.pt", "'translation' checkpoint"),
    *[(G, f"--checkpoint {{d}}/{name}.pt", f"{name}.pt") for name in DAMAGED],
    (T, "--checkpoint {d}/mt.pt --input {d}/nowhere.txt", "nowhere.txt"),
    (T, "--checkpoint {d}/mt.pt --input {d}/empty.txt", "is empty"),
    (T, "--checkpoint {d}/mt.pt --input {d}/latin1.txt", "UTF-8"),
    (T, "--checkpoint {d}/mt.pt --input {d}", "folder"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt --batch-size 0", "--batch-size = 0"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt --max-source-len 0", "--max-source-len = 0"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt --max-source-len 10", "line 2 of"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt --max-len-ratio -1", "--max-len-ratio = -1"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt --max-len-ratio 11", "--max-len-ratio = 11"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt --beam-size 0", "--beam-size = 0"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt --n-best 3 --beam-size 2", "--n-best"),
    (T, "--checkpoint {d}/run/best.pt --input {d}/src.txt", "'textgen' checkpoint"),
    (T, "--checkpoint {d}/nowhere.pt --input {d}/src.txt", "does not exist"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt --dtype float16", "invalid choice"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt --rerank-with {d}/nowhere.pt", "nowhere.pt"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt --device bogus", "--device 'bogus'"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt --method sample --temperature 0", "--temperature = 0"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt --method sample --top-p 2", "--top-p = 2"),
    (B, "{d}/nowhere.txt --ref {d}/one.txt", "nowhere.txt"),
    (B, "{d}/one.txt --ref {d}/nowhere.txt", "nowhere.txt"),
    (B, "{d}/two.txt --ref {d}/one.txt", "lines"),
    (B, "--checkpoint {d}/mt.pt --ref {d}/one.txt", "--src"),
    (B, "{d}/one.txt --checkpoint {d}/mt.pt --src {d}/src.txt --ref {d}/one.txt", "not both"),
    (B, "--checkpoint {d}/mt.pt --src {d}/nowhere.txt --ref {d}/one.txt", "nowhere.txt"),
    (B, "--checkpoint {d}/mt.pt --src {d}/src.txt --ref {d}/one.txt", "lines"),
    (R, "--resume {d}/run --batch-size 0", "--batch-size = 0"),
    (R, "--resume {d}/run --bptt 0", "--bptt = 0"),
    (R, "--resume {d}/run --lr nan", "--lr = nan"),
    (R, "--resume {d}/run --min-lr 1", "--min-lr 1 is above --lr"),
    (R, "--resume {d}/run --steps 0", "--steps = 0"),
    (R, "--resume {d}/run --valid-every 0", "--valid-every = 0"),
    (R, "--resume {d}/run --label-smoothing 1", "--label-smoothing = 1"),
    (R, "--resume {d}/run --clip-norm -1", "--clip-norm = -1"),
    (R, "--resume {d}/run --warmup-steps -1", "--warmup-steps = -1"),
    (R, "--resume {d}/run --ema-decay 1", "--ema-decay = 1"),
    (R, "--resume {d}/run --plateau-factor 0", "--plateau-factor = 0"),
    (R, "--resume {d}/run --seed -1", "--seed = -1"),
    (R, "--resume {d}/run --hidden-dim 64", "--hidden-dim 64"),
    (R, "--resume {d}/run --device gpu9", "--device 'gpu9'"),
    (R, "--resume {d}/run --schedule bogus", "invalid choice"),
    (R, "--resume {d}/nowhere", "does not exist"),
    (R, "--resume ''", "argument --resume: is empty"),
    (R, "--corpus {d}/corpus.txt --out {d}/run", "already holds checkpoints"),
    (R, "--corpus {d}/corpus.txt --out {d}/run --vocab-size 50", "--vocab-size 50"),
    (R, "--corpus {d}/corpus.txt --out {d}/run --level word --vocab-size 3", "--vocab-size = 3"),
    (R, "--corpus {d}/corpus.txt --out {d}/run --level word --vocab-size 0", "--vocab-size = 0"),
    (R, "--corpus {d}/corpus.txt --out {d}/run --attention luong", "--attention luong"),
    (R, "--corpus {d}/corpus.txt --out {d}/run --dropout 2", "--dropout = 2"),
    (R, "--corpus {d}/nowhere.txt --out {d}/new", "nowhere.txt"),
    (R, "--corpus {d}/empty.txt --out {d}/new", "empty.txt"),
    (R, "--corpus {d}/latin1.txt --out {d}/new", "latin1.txt"),
    (R, "--corpus {d}/corpus.txt --out ''", "argument --out: is empty"),
    (R, "--corpus {d}/corpus.txt --out {d}/corpus.txt", "is a file"),
    (TR, "--corpus {d}/pairs.tsv --out {d}/mtrun --members 0", "--members = 0"),
    (TR, "--corpus {d}/pairs.tsv --out {d}/mtrun --members 100000", "more than this machine runs at once"),
    (TR, "--corpus {d}/pairs.tsv --out {d}/mtrun --reverse-members -1", "--reverse-members = -1"),
    (TR, "--corpus {d}/pairs.tsv --out {d}/mtrun --level word --vocab-size 3", "--vocab-size = 3"),
    (TR, "--corpus {d}/pairs.tsv --out {d}/mtrun --subword-alpha 1", "--subword-alpha = 1"),
    (TR, "--corpus {d}/pairs.tsv --out {d}/mtrun --max-tokens 0", "--max-tokens = 0"),
    (TR, "--corpus {d}/pairs.tsv --out {d}/mtrun --valid-sentences 0", "--valid-sentences = 0"),
    (TR, "--corpus {d}/pairs.tsv --out {d}/mtrun --min-lr 0.5 --lr 0.1", "--min-lr 0.5 is above --lr"),
    (TR, "--corpus {d}/pairs.tsv --out {d}/run", "already holds checkpoints"),
    (TR, "--resume {d}/run", "that is a textgen run; continue it with its own recipe (recipes/textgen.py"),
    (TR, "--resume {d}/nowhere", "nowhere does not exist"),
    (TR, "--corpus {d}/pairs.tsv --train-src {d}/src.txt", "--corpus does not go with --train-src"),
]
C, BB, CR = caption_main, backbone_main, caption_recipe_main
CASES += [  # the captioning command lines
    (C, "{d}/shape.png --checkpoint {d}/cap.pt --batch-size 0", "--batch-size = 0"),
    (C, "{d}/shape.png --checkpoint {d}/cap.pt --batch-size 100000", "--batch-size = 100000 is out of range"),
    (C, "{d}/shape.png --checkpoint {d}/mt.pt", "'translation' checkpoint"),
    (C, "{d}/shape.png --checkpoint {d}/cap.pt --beam-size 2 --n-best 3", "--n-best = 3"),
    (C, "{d}/shape.png --checkpoint {d}/cap.pt --temperature 0.5", "--temperature is an option of --method sample"),
    (C, "{d}/shape.png --checkpoint {d}/cap.pt --max-len 1000000", "--max-len = 1000000 is out of range"),
    (C, "{d}/folder --checkpoint {d}/cap.pt", "holds no pictures"),
    (C, "{d}/corpus.txt --checkpoint {d}/cap.pt", "is not a picture Pillow can read"),
    (C, "{d}/empty.txt --checkpoint {d}/cap.pt", "is an empty file"),
    (C, "{d}/shape.png --checkpoint {d}/cap.pt --attention-png {d}/out", "does not end in .png"),
    (C, "{d}/shape.png --checkpoint {d}/cut.pt", "not a readable checkpoint"),
    (C, "{d}/shape.png --checkpoint {d}/cap.pt --device gpu9", "--device 'gpu9'"),
    (BB, "{d}/shape.png --top 0", "--top = 0"),
    (BB, "{d}/shape.png --backbone vgg", "invalid choice: 'vgg'"),
    (BB, "{d}/shape.png --weights {d}/corpus.txt", "is not a readable state dict"),
    (BB, "{d}/shape.png --weights {d}/mt.pt", "holds a dict, not a state dict"),
    (BB, "{d}/corpus.txt --weights none", "is not a picture Pillow can read"),
    (CR, "--corpus {d}/latin1.tsv --out {d}/new", "latin1.tsv:2: byte 0xe4 is not UTF-8"),
    (CR, "--resume {d}/run", "that is a textgen run; continue it with its own recipe (recipes/textgen.py"),
    (CR, "--corpus {d}/captions.tsv --out {d}/run", "already holds checkpoints"),
    (CR, "--corpus {d}/captions.tsv --out {d}/new --batch-size 0", "--batch-size = 0"),
    (CR, "--corpus {d}/captions.tsv --out {d}/new --min-count 0", "--min-count = 0"),
    (CR, "--corpus {d}/captions.tsv --out {d}/new --max-caption-len 0", "--max-caption-len = 0"),
    (CR, "--corpus {d}/captions.tsv --out {d}/new --image-size 8", "--image-size = 8"),
    (CR, "--corpus {d}/captions.tsv --out {d}/new --fit stretch", "invalid choice: 'stretch'"),
    (CR, "--corpus {d}/captions.tsv --out {d}/new --fine-tune -1", "--fine-tune = -1"),
    (CR, "--corpus {d}/captions.tsv --out {d}/new --attention-penalty -1", "--attention-penalty = -1"),
    (CR, "--corpus {d}/captions.tsv --out {d}/new --cell rnn", "invalid choice: 'rnn'"),
    (CR, "--corpus {d}/captions.tsv --out {d}/new", "split has no pictures"),
]

# ---- classes of bad input, each crossed with every place it can reach ----------------------------------------

PATH_OPTIONS = [  # (command, arguments around the path, its option ("" for a positional one), what it must name)
    (G, "", "--checkpoint", "file"),
    (G, "--checkpoint {d}/run/best.pt", "--prompt-file", "file"),
    (T, "--input {d}/src.txt", "--checkpoint", "file"),
    (T, "--checkpoint {d}/mt.pt", "--input", "file"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt", "--rerank-with", "file"),
    (T, "--checkpoint {d}/mt.pt --input {d}/src.txt", "--rerank-r2l", "file"),
    (B, "--ref {d}/one.txt", "", "file"),
    (B, "{d}/one.txt", "--ref", "file"),
    (B, "--checkpoint {d}/mt.pt --ref {d}/one.txt", "--src", "file"),
    (B, "--src {d}/one.txt --ref {d}/one.txt", "--checkpoint", "file"),
    (C, "--checkpoint {d}/cap.pt", "", "picture"),
    (C, "{d}/shape.png", "--checkpoint", "file"),
    (C, "{d}/shape.png --checkpoint {d}/cap.pt", "--attention-png", "png"),
    (BB, "", "", "file"),
    (BB, "{d}/shape.png", "--weights", "file"),
    (BB, "{d}/shape.png", "--data-dir", "new folder"),
    (R, "--out {d}/new", "--corpus", "file"),
    (R, "--corpus {d}/corpus.txt", "--out", "new folder"),
    (R, "", "--resume", "file or folder"),
    (R, "--out {d}/new", "--data-dir", "new folder"),
    (TR, "--out {d}/new", "--corpus", "file"),
    (TR, "--out {d}/new", "--train-src", "file"),
    (TR, "--out {d}/new", "--test-tgt", "file"),
    (TR, "--corpus {d}/pairs.tsv", "--out", "new folder"),
    (TR, "", "--resume", "file or folder"),
    (TR, "--out {d}/new", "--data-dir", "new folder"),
    (CR, "--out {d}/new", "--corpus", "file"),
    (CR, "--corpus {d}/captions.tsv --out {d}/new", "--images", "folder"),
    (CR, "--corpus {d}/captions.tsv --out {d}/new", "--weights", "file"),
    (CR, "--corpus {d}/captions.tsv", "--out", "new folder"),
    (CR, "", "--resume", "file or folder"),
    (CR, "--out {d}/new", "--data-dir", "new folder"),
]
EMPTY, MISSING, LOOP, THROUGH_A_FILE = (
    ("", "is empty"),
    ("{d}/nowhere", "does not exist"),
    ("{d}/loop", "is a symbolic link that loops back on itself"),
    ("{d}/corpus.txt/x", "a part of it is a file"),
)
BAD_PATHS = {  # what the path must name -> [(a bad path, what the error line says of it)]
    "file": [EMPTY, MISSING, LOOP, THROUGH_A_FILE, ("{d}/folder", "is a folder; a file is needed")],
    "picture": [EMPTY, MISSING, LOOP, THROUGH_A_FILE],  # (a folder stands for its pictures)
    "file or folder": [EMPTY, MISSING, LOOP, THROUGH_A_FILE],
    "folder": [EMPTY, MISSING, LOOP, THROUGH_A_FILE, ("{d}/corpus.txt", "is a file, not a folder")],
    "new folder": [EMPTY, ("{d}/corpus.txt", "is a file, not a folder"),
                   ("{d}/corpus.txt/sub", "is a file, not a folder")],
    "png": [EMPTY, ("{d}/folder", "is a folder"), ("{d}/out.jpg", "does not end in .png"),
            ("{d}/corpus.txt/a.png", "is a file, not a folder")],
}  # fmt: skip
PATH_CASES = [
    (main, around, option, bad, expected)
    for main, around, option, kind in PATH_OPTIONS
    for bad, expected in BAD_PATHS[kind]
]


def test_every_path_option_is_crossed_with_every_bad_path_it_can_get():
    assert len(PATH_CASES) >= 120 and len({(m, a, o, b) for m, a, o, b, _ in PATH_CASES}) == len(PATH_CASES)


@pytest.mark.parametrize(
    "main, around, option, bad, expected",
    PATH_CASES,
    ids=[f"{m.__module__}: {o or 'positional'} {b!r}" for m, a, o, b, _ in PATH_CASES],
)
def test_a_bad_path_is_one_line_saying_what_is_wrong(files, capsys, main, around, option, bad, expected):
    path = bad.format(d=files)
    args = [*around.format(d=files).split(), *([option] if option else []), path]
    err = _fails(capsys, main, args, files)
    assert expected in err and path in err, err


def _fails(capsys, main, args: list[str], files: Path) -> str:
    """Run a command line that must fail: its one `error:` line, after checking the exit status, that there is no
    traceback and that no file of `files` changed."""
    before = hashes(files)
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    assert hashes(files) == before
    return lines[0]


TEXT_INPUTS = [  # every text input, given a file whose line 2 is not UTF-8
    (G, "--checkpoint {d}/run/best.pt --prompt-file {bad}"),
    (T, "--checkpoint {d}/mt.pt --input {bad}"),
    (T, "@{args} --checkpoint {d}/mt.pt --input {d}/src.txt"),
    (B, "{bad} --ref {d}/two.txt"),
    (B, "{d}/two.txt --ref {bad}"),
    (B, "--checkpoint {d}/mt.pt --src {bad} --ref {d}/two.txt"),
    (B, "@{args} {d}/two.txt --ref {d}/two.txt"),
    (R, "--corpus {bad} --out {d}/new"),
    (TR, "--corpus {tsv} --out {d}/new"),
    (TR, "--out {d}/new " + " ".join(f"--{p}-{s} {{bad}}" for p in ("train", "valid", "test") for s in ("src", "tgt"))),
    (CR, "--corpus {tsv} --out {d}/new"),
]


@pytest.mark.parametrize("main, argv", TEXT_INPUTS, ids=[f"{m.__module__}: {a}" for m, a in TEXT_INPUTS])
def test_text_that_is_not_utf8_is_named_by_file_and_line(files, capsys, main, argv):
    names = {"bad": "latin2.txt", "tsv": "latin1.tsv", "args": "latin1.args"}
    (files / "latin2.txt").write_bytes("der hund\nder Hund bellt \xe4\n".encode("latin-1"))
    args = argv.format(d=files, **{k: files / v for k, v in names.items()}).split()
    name = next(v for k, v in names.items() if f"{{{k}}}" in argv)
    assert f"{name}:2: byte 0xe4 is not UTF-8" in _fails(capsys, main, args, files)


def flag_table_cases() -> list[tuple]:
    """Each command's own table of flags that do not go together, and of flags that need another, as rows."""
    from core import generate
    from recipes import caption, textgen, translate

    values = {"corpus": "{d}/pairs.tsv", "data_dir": "{d}/data", "resume": "{d}/run", "dataset": "bible",
              "lang": "de", "images": "{d}/folder", "prompt": "x", "prompt_file": "{d}/one.txt",
              "rerank_weight": "0.3", "rerank_r2l_weight": "0.3", **{f"{p}_{s}": "{d}/one.txt" for p in
              ("train", "valid", "test") for s in ("src", "tgt")}, "init_from": "{d}/run/best.pt",
              **dict.fromkeys(("seq_lr", "scst_lr"), "1e-4"), **dict.fromkeys(("seq_samples", "scst_samples"), "3"),
              **dict.fromkeys(("seq_baseline", "scst_baseline"), "mean"), "reward": "chrf", "backbone": "resnet18",
              "image_size": "64", "fit": "pad", "fine_tune": "1", "emb_dim": "8", "hidden_dim": "8",
              "num_layers": "2", "cell": "gru", "attention": "luong", "dropout": "0.1", "word_dropout": "0.1",
              "tie_embeddings": "true", "input_feeding": "true", "min_count": "2", "weights": "none"}  # fmt: skip
    prefix = {generate: "--checkpoint {d}/run/best.pt ", textgen: "", translate: "", caption: ""}
    cases = []
    for module in (generate, textgen, translate, caption):

        def given(dest: str) -> str:
            return f"--{dest.replace('_', '-')} {values.get(dest, '')}".strip()

        for flag, other, _ in module.FLAGS.apart:
            cases.append(
                (
                    module.main,
                    prefix[module] + f"{given(flag)} {given(other)}",
                    f"--{flag.replace('_', '-')} does not go with --{other.replace('_', '-')}",
                )
            )
        for flag, other in module.FLAGS.needs:
            cases.append(
                (
                    module.main,
                    prefix[module] + given(flag),
                    f"--{flag.replace('_', '-')} is used only with --{other.replace('_', '-')}",
                )
            )
    return cases


FLAG_CASES = flag_table_cases()


@pytest.mark.parametrize("main, argv, expected", FLAG_CASES, ids=[f"{m.__module__}: {a}" for m, a, _ in FLAG_CASES])
def test_flags_that_do_not_go_together_are_refused_from_each_commands_table(files, capsys, main, argv, expected):
    assert len(FLAG_CASES) >= 20
    assert expected in _fails(capsys, main, argv.format(d=files).split(), files)


@pytest.mark.parametrize(
    "flag, value", [("--corpus", "{d}/one.txt"), ("--whole", None), ("--level", "word"), ("--hidden-dim", "32")]
)
def test_a_resumed_run_keeps_its_model_vocabulary_and_data(files, capsys, flag, value):
    args = ["--resume", str(files / "run"), flag] + ([value.format(d=files)] if value else [])
    assert "a resumed run keeps its model, vocabulary and data" in _fails(capsys, textgen_main, args, files)


STDIN_READERS = [  # (command, arguments that read the standard input)
    (G, "--checkpoint {d}/run/best.pt --prompt-file -"),
    (T, "--checkpoint {d}/mt.pt"),
    (T, "--checkpoint {d}/mt.pt --input -"),
    (B, "- --ref {d}/one.txt"),
    (C, "- --checkpoint {d}/cap.pt"),
]


@pytest.mark.parametrize("main, argv", STDIN_READERS, ids=[f"{m.__module__}: {a}" for m, a in STDIN_READERS])
def test_a_closed_standard_input_is_one_line(files, capsys, monkeypatch, main, argv):
    monkeypatch.setattr(sys, "stdin", None)  # what Python makes of `<&-`
    assert "the standard input is closed" in _fails(capsys, main, argv.format(d=files).split(), files)


def test_an_args_file_that_includes_itself_is_one_line(files, capsys):
    err = _fails(capsys, T, ["--checkpoint", str(files / "mt.pt"), f"@{files / 'self.args'}"], files)
    assert f"@{files / 'self.args'} includes itself" in err


def hashes(folder: Path) -> dict[str, str]:
    """Every file of a folder by its sha256 (the lock file aside: it names whoever held the folder last)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "run.lock"
    }


def test_the_table_tries_at_least_sixty_bad_inputs():
    assert len(CASES) >= 60 and len({(main, argv) for main, argv, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("main, argv, expected", CASES, ids=[f"{m.__module__}: {a}" for m, a, _ in CASES])
def test_bad_input_is_one_line_and_changes_no_file(files, capsys, main, argv, expected):
    before = hashes(files)
    args = [a.replace("''", "") for a in argv.format(d=files).split()]
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, args)
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1 and expected in lines[0], err
    assert hashes(files) == before


def tmpfs(path: Path, size: str):
    """Mount a tmpfs of `size` at path, or skip the test with the reason."""
    path.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount failed'})")


def unmount(path: Path) -> None:
    for folder in [f for f in core.runs._held if f.is_relative_to(path)]:  # this process's locks keep it busy
        core.runs._held.pop(folder).close()
    subprocess.run(["umount", str(path)], check=False)


def test_a_full_disk_and_a_read_only_one_are_one_line_and_keep_the_checkpoint(files, tmp_path, capsys):
    disk = tmp_path / "disk"
    used = sum(p.stat().st_size for p in (files / "run").iterdir())
    tmpfs(disk, f"{used // 1024 + 60}k")  # room for the run, not for a second copy of a checkpoint
    try:
        run = disk / "run"
        subprocess.run(["cp", "-r", str(files / "run"), str(run)], check=True)
        last = (run / "last.pt").read_bytes()
        with pytest.raises(SystemExit) as exit_info:
            run_main(textgen_main, ["--resume", str(run), "--steps", "4"])
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_info.value.code == 2 and "Traceback" not in "\n".join(err)
        assert err[-1].startswith("error: cannot write") and "No space left on device" in err[-1], err
        assert (run / "last.pt").read_bytes() == last and load_checkpoint(run / "last.pt", task="textgen")
        core.runs._held.pop(run.resolve()).close()  # this process's lock: no file may be open for writing
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        with pytest.raises(SystemExit):
            run_main(textgen_main, ["--resume", str(run), "--steps", "4"])
        err = capsys.readouterr().err.strip().splitlines()
        assert "Read-only file system" in err[-1] and str(run) in err[-1], err
    finally:
        unmount(disk)


def test_output_to_a_full_device_is_one_line(files, capsys, monkeypatch):
    with open("/dev/full", "w") as full:
        monkeypatch.setattr(sys, "stdout", full)
        with pytest.raises(SystemExit) as exit_info:
            run_main(
                generate_main, ["--checkpoint", str(files / "run" / "best.pt"), "--num-samples", "2", "--max-len", "5"]
            )
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == "error: cannot write the standard output: No space left on device"


def test_a_partial_last_log_line_is_set_aside_and_the_run_resumes(files, tmp_path):
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(files / "run"), str(run)], check=True)
    with (run / "log.jsonl").open("a") as log:
        log.write('{"step": 3, "spl')  # as a full disk leaves it
    with pytest.warns(UserWarning, match="the last line is incomplete"):
        textgen_main(["--resume", str(run), "--steps", "3", "--valid-every", "3"])
    assert load_checkpoint(run / "last.pt", task="textgen")["trainer"]["step"] == 3


def test_a_diverged_run_stops_with_one_line_naming_the_step(files, tmp_path, capsys, monkeypatch):
    from core import trainer

    monkeypatch.setattr(
        trainer,
        "token_losses",
        lambda logits, targets, smoothing: (logits.sum() * float("nan"), logits.sum() * float("nan"), targets.numel()),
    )
    with pytest.raises(SystemExit):
        run_main(textgen_main, ["--corpus", str(files / "corpus.txt"), "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "error: training diverged: the loss is nan at step 1; lower the learning rate (--lr, now "
        "6e-05) or clip gradients (--clip-norm)"
    ), err
    assert not (tmp_path / "run" / "last.pt").exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_for(condition, process, seconds=120):
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)


@pytest.mark.slow
def test_members_follow_their_parent_and_one_process_writes_a_run(files, tmp_path):
    out = tmp_path / "run"
    argv = [
        sys.executable,
        str(ROOT / "recipes" / "translate.py"),
        "--corpus",
        str(files / "pairs.tsv"),
        "--out",
        str(out),
        "--level",
        "word",
        "--vocab-size",
        "20",
        "--emb-dim",
        "8",
        "--hidden-dim",
        "8",
        "--enc-emb-dim",
        "8",
        "--enc-hidden-dim",
        "8",
        "--device",
        "cpu",
        "--valid-every",
        "5",
        "--patience",
        "0",
        "--steps",
        "100000",
    ]
    members = [out / f"member{k}" for k in (1, 2)]
    run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: all((m / "last.pt").exists() for m in members), run)
    second = subprocess.run([*argv[:2], "--resume", str(out)], capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and f"is in use by process {run.pid}" in second.stderr, second.stderr
    run.send_signal(signal.SIGTERM)  # to the parent alone, as a job scheduler does
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130 and f"continue with --resume {out}" in stderr, stderr
    steps = [load_checkpoint(m / "last.pt", task="translation")["trainer"]["step"] for m in members]
    resumed = subprocess.Popen([*argv[:2], "--resume", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def holder(member: Path) -> str:  # (a lock file comes and goes with the process that holds it)
        try:
            return (member / "run.lock").read_text().strip()
        except FileNotFoundError:
            return ""

    _wait_for(lambda: all(holder(m) not in ("", str(run.pid)) for m in members), resumed)
    pids = [int(holder(m)) for m in members]
    time.sleep(2)
    resumed.kill()  # kill -9: the members notice and stop by themselves, saving
    resumed.communicate()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "a member outlived its parent by 30 s"
        time.sleep(0.2)
    after = [load_checkpoint(m / "last.pt", task="translation")["trainer"]["step"] for m in members]
    assert all(a >= s for a, s in zip(after, steps))


# ---- text as it arrives, from files, pipes and the standard input ----------------------------------------------


def _with_bom_and_crlf(path: Path, text: str) -> Path:
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))
    return path


def test_a_byte_order_mark_and_crlf_change_no_reader(tmp_path):
    """Every reader of text gives what it gives for the plain file: no score, vocabulary or sentence changes."""
    from captioning.data import read_captions_tsv
    from core.cli import ArgsFileParser
    from core.files import read_lines, read_text
    from seq2seq.data import read_pairs_tsv, read_parallel

    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    texts = {"corpus": "Speak, speak.\nAll:\n", "pairs": "der hund\tthe dog\n", "captions": "a.png\ta dog\n",
             "lines": "the dog\n\nbarks\n", "args": "--beam-size 3\n--max-len\n7\n"}  # fmt: skip
    readers = {"corpus": read_text, "pairs": read_pairs_tsv, "captions": read_captions_tsv, "lines": read_lines,
               "parallel": lambda p: read_parallel(p, p)}  # fmt: skip
    parser = ArgsFileParser()
    parser.add_argument("--beam-size")
    parser.add_argument("--max-len")
    for name, text in texts.items():
        plain, marked = tmp_path / f"{name}.txt", _with_bom_and_crlf(tmp_path / f"{name}-bom.txt", text)
        plain.write_text(text)
        if name == "args":
            assert vars(parser.parse_args([f"@{marked}"])) == vars(parser.parse_args([f"@{plain}"])) == {
                "beam_size": "3", "max_len": "7"}  # fmt: skip
            continue
        for read in [readers[name]] + ([readers["parallel"]] if name == "lines" else []):
            assert read(marked) == read(plain), (name, read(marked))


def test_bleu_scores_the_same_with_a_byte_order_mark_and_crlf(files, capsys):
    hyp, ref = "the dog barks .\na cat sleeps .\n", "the dog barks .\nthe cat sleeps .\n"
    plain = [files / "h.txt", files / "r.txt"]
    plain[0].write_text(hyp)
    plain[1].write_text(ref)
    marked = [_with_bom_and_crlf(files / "hb.txt", hyp), _with_bom_and_crlf(files / "rb.txt", ref)]
    scores = []
    for h, r in (plain, marked):
        run_main(bleu_main, [str(h), "--ref", str(r), "--json"])
        scores.append(capsys.readouterr().out.replace(str(h), "HYP").replace(str(r), "REF"))
    assert scores[0] == scores[1] and '"score": 0.0' not in scores[0]


def _fifo(tmp_path: Path, name: str, data: bytes) -> Path:
    """A named pipe that a thread fills with `data` once: what `<(...)` gives a command."""
    import threading

    path = tmp_path / name
    os.mkfifo(path)

    def fill() -> None:
        with open(path, "wb") as f:
            f.write(data)

    threading.Thread(target=fill, daemon=True).start()
    return path


def test_pipes_serve_as_files_where_a_stream_makes_sense(files, tmp_path, capsys, monkeypatch):
    """Process substitution: a checkpoint, a prompt, a hypothesis file and a picture, each from a pipe."""
    checkpoint = files / "run" / "best.pt"
    run_main(generate_main, ["--checkpoint", str(checkpoint), "--method", "greedy", "--max-len", "5"])
    expected = capsys.readouterr().out
    pipe = _fifo(tmp_path, "ck", checkpoint.read_bytes())
    run_main(generate_main, ["--checkpoint", str(pipe), "--method", "greedy", "--max-len", "5"])
    assert capsys.readouterr().out == expected
    prompt = _fifo(tmp_path, "prompt", b"\xef\xbb\xbfSpeak")
    run_main(generate_main, ["--checkpoint", str(checkpoint), "--prompt-file", str(prompt), "--max-len", "3",
                             "--method", "greedy"])  # fmt: skip
    assert capsys.readouterr().out.startswith("Speak")
    run_main(bleu_main, [str(_fifo(tmp_path, "hyp", b"the dog\n")), "--ref", str(files / "one.txt")])
    assert "chrF2|" in (scored := capsys.readouterr().out) and scored.rstrip().endswith("= 100.00")  # two words: chrF
    picture = _fifo(tmp_path, "picture", (files / "shape.png").read_bytes())
    run_main(caption_main, [str(picture), "--checkpoint", str(files / "cap.pt"), "--with-names"])
    assert capsys.readouterr().out.startswith(f"{picture}\t")


# ---- outputs a user can rely on ----------------------------------------------------------------------------------


def test_one_output_line_per_input_line_and_per_picture_even_untrained(files, tmp_path, capsys, monkeypatch):
    """An empty source line gives an empty line; an untrained captioner still writes a word for each picture."""
    (tmp_path / "in.txt").write_text("der hund\n\nder\n")
    run_main(translate_main, ["--checkpoint", str(files / "mt.pt"), "--input", str(tmp_path / "in.txt")])
    lines = capsys.readouterr().out.split("\n")
    assert len(lines) == 4 and lines[1] == "" and lines[3] == "", lines  # (the last: after the final line end)
    odd = tmp_path / "two\nlines\tand tab.png"
    (odd).write_bytes((files / "shape.png").read_bytes())
    pictures = [str(files / "shape.png"), str(odd), str(files / "shape.png")]
    run_main(caption_main, [*pictures, "--checkpoint", str(files / "cap.pt"), "--with-names", "--max-len", "3"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all(line.split("\t")[1].strip() for line in out), out
    assert out[1].startswith(str(tmp_path / "two\\nlines\\tand tab.png") + "\t")


def test_piped_lines_are_translated_in_batches_in_order(files, capsys, monkeypatch):
    import io

    from seq2seq.translator import Translator

    batches = []
    translate = Translator.translate

    def recording(self, sentences, *args, **kwargs):
        batches.append(len(sentences))
        return translate(self, sentences, *args, **kwargs)

    monkeypatch.setattr(Translator, "translate", recording)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"der hund\n" * 150)))  # not a terminal
    run_main(translate_main, ["--checkpoint", str(files / "mt.pt"), "--batch-size", "64"])
    assert batches == [64, 64, 22] and len(capsys.readouterr().out.splitlines()) == 150


def test_files_are_written_with_ordinary_permissions_and_the_lock_goes_with_the_run(files, tmp_path):
    """Checkpoints, configs and plots honour the umask (0644 by default), not mkstemp's 0600; a run that ends
    cleanly leaves no run.lock behind."""
    previous = os.umask(0o022)
    try:
        out = tmp_path / "run"
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "recipes" / "textgen.py"),
                "--corpus",
                str(files / "corpus.txt"),
                "--out",
                str(out),
                *TINY,
            ],
            capture_output=True,
            timeout=300,
        )
    finally:
        os.umask(previous)
    assert done.returncode == 0, done.stderr
    for name in ("best.pt", "last.pt", "config.json", "results.json", "loss.png", "log.jsonl"):
        assert oct((out / name).stat().st_mode & 0o777) == oct(0o644), name
    assert not (out / "run.lock").exists()


def test_a_data_folder_that_is_a_file_is_one_line(files, capsys, monkeypatch):
    monkeypatch.setenv("SEQGEN_DATA", str(files / "corpus.txt"))
    err = _fails(capsys, textgen_main, ["--out", str(files / "new"), *TINY], files)
    assert f"the data folder (--data-dir, $SEQGEN_DATA) {files / 'corpus.txt'} is a file, not a folder" in err
