"""The text-generation recipe and `python -m core.generate`, including every bad input the issue lists."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core import LanguageModel, save_checkpoint
from core.cli import parse_flags
from core.console import run_main
from core.generate import MEMORY_FLAGS
from core.generate import main as generate_main
from recipes.textgen import build_parser
from recipes.textgen import main as textgen_main

ROOT = Path(__file__).resolve().parents[1]
CORPUS = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
    "First Citizen:\nYou are all resolved rather to die than to famish?\n\n"
) * 40
TINY = [
    "--steps",
    "12",
    "--valid-every",
    "6",
    "--hidden-dim",
    "32",
    "--emb-dim",
    "8",
    "--batch-size",
    "4",
    "--bptt",
    "32",
    "--sample-len",
    "20",
    "--device",
    "cpu",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("textgen")
    corpus = folder / "corpus.txt"
    corpus.write_text(CORPUS)
    results = textgen_main(["--corpus", str(corpus), "--out", str(folder / "run"), *TINY])
    return folder, results


def fails_with(capsys, main, argv, *expected):
    """Run a command line in-process; it must exit 2 with one `error:` line containing `expected`."""
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for text in expected:
        assert text in err[0], err[0]
    return err[0]


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.pt"))}


def test_recipe_writes_everything_and_reports(trained):
    folder, results = trained
    run = folder / "run"
    for name in ("best.pt", "last.pt", "config.json", "log.jsonl", "loss.png", "results.json"):
        assert (run / name).exists(), name
    assert json.loads((run / "config.json").read_text())["model"]["hidden_dim"] == 32
    assert results["steps"] == 12 and results["test_bits_per_char"] > 0
    assert abs(results["test_bits_per_char"] * 0.6931471805599453 - results["test_nats_per_char"]) < 1e-9


@pytest.mark.parametrize("level, vocab", [("word", "60"), ("bpe", "400")])  # bpe: 256 byte pieces + chars
def test_word_and_subword_levels_run(tmp_path, level, vocab):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS)
    results = textgen_main(
        ["--corpus", str(corpus), "--out", str(tmp_path / "run"), "--level", level, "--vocab-size", vocab, *TINY]
    )
    assert results["level"] == level and results["test_ppl"] > 1


def test_generate_command_streams_samples_and_beams(trained, capsys):
    folder, _ = trained
    ck = str(folder / "run" / "best.pt")
    generate_main(["--checkpoint", ck, "--prompt", "First", "--max-len", "15", "--seed", "1", "--device", "cpu"])
    out = capsys.readouterr().out
    assert out.startswith("First") and len(out.strip()) > len("First")
    generate_main(
        [
            "--checkpoint",
            ck,
            "--prompt",
            "All",
            "--method",
            "beam",
            "--beam-size",
            "3",
            "--num-samples",
            "2",
            "--max-len",
            "10",
            "--device",
            "cpu",
        ]
    )
    assert capsys.readouterr().out.count("--- ") == 2
    generate_main(
        [
            "--checkpoint",
            ck,
            "--prompt",
            "All",
            "--method",
            "greedy",
            "--max-len",
            "10",
            "--device",
            "cpu",
            "--dtype",
            "bfloat16",
        ]
    )
    half = LanguageModel.load(ck, dtype=torch.bfloat16)
    assert half.decoder.output.weight.dtype == torch.bfloat16
    assert capsys.readouterr().out == "All" + half.generate("All", method="greedy", max_len=10) + "\n"


def test_generate_command_as_a_process(trained):
    folder, _ = trained
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.generate",
            "--checkpoint",
            str(folder / "run" / "best.pt"),
            "--prompt",
            "Speak",
            "--method",
            "greedy",
            "--max-len",
            "10",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Speak")
    bad = subprocess.run(
        [sys.executable, "-m", "core.generate", "--checkpoint", str(folder / "run" / "best.pt"), "--temperature", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "error: --temperature = 0 is out of range; allowed: [1e-06, 1000]"
    # 10^12 beams: refused by its bound before any memory is asked for
    huge = subprocess.run(
        [
            sys.executable,
            "-m",
            "core.generate",
            "--checkpoint",
            str(folder / "run" / "best.pt"),
            "--method",
            "beam",
            "--beam-size",
            str(10**12),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        huge.returncode == 2
        and huge.stderr.strip() == "error: --beam-size = 1000000000000 is out of range; allowed: [1, 1000]"
    ), huge.stderr


def test_running_out_of_memory_names_the_flags_that_shrink_it(trained, capsys, monkeypatch):
    """What the CPU allocator raises when a search does not fit, as one line naming this command's flags."""
    folder, _ = trained

    def too_big(*args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: you "
            "tried to allocate 8000000000000 bytes. Error code 12 (Cannot allocate memory)"
        )

    monkeypatch.setattr(LanguageModel, "continuations", too_big)
    with pytest.raises(SystemExit):
        run_main(
            generate_main,
            ["--checkpoint", str(folder / "run" / "best.pt"), "--num-samples", "2"],
            memory_flags=MEMORY_FLAGS,
        )
    assert (
        capsys.readouterr().err == "error: out of memory while allocating 7450.6 GiB; lower --beam-size or --max-len\n"
    )


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--temperature", "0"], ["--temperature = 0", "[1e-06, 1000]"]),
        (["--temperature", "-1"], ["--temperature = -1"]),
        (["--top-p", "1.5"], ["--top-p = 1.5", "(0, 1]"]),
        (["--top-p", "0"], ["--top-p = 0"]),
        (["--method", "beam", "--beam-size", "0"], ["--beam-size = 0", "[1, 1000]"]),
        (["--max-len", "0"], ["--max-len = 0", "[1, 100000]"]),
        (["--temperature", "nan"], ["--temperature = nan"]),  # every comparison with NaN is false
        (["--top-p", "nan"], ["--top-p = nan"]),
        (["--repetition-penalty", "inf"], ["--repetition-penalty = inf"]),
        (["--method", "beam", "--length-penalty", "nan"], ["--length-penalty = nan"]),
        (["--method", "greedy", "--temperature", "0.5"], ["--temperature is an option of --method sample"]),
        (["--num-samples", "0"], ["--num-samples = 0", "[1, inf)"]),
        (["--seed", str(2**32)], ["--seed = 4294967296", "[0, 4294967295]"]),
    ],
)
def test_generate_bad_options(trained, capsys, flags, expected):
    folder, _ = trained
    before = digest(folder / "run")
    fails_with(capsys, generate_main, ["--checkpoint", str(folder / "run" / "best.pt"), *flags], *expected)
    assert digest(folder / "run") == before


def test_generate_bad_checkpoints(tmp_path, capsys, trained):
    other = save_checkpoint(tmp_path / "mt.pt", {"task": "translation", "config": {}, "model": {}})
    fails_with(capsys, generate_main, ["--checkpoint", str(other)], "'translation' checkpoint", "'textgen'")
    truncated = tmp_path / "cut.pt"
    data = (trained[0] / "run" / "best.pt").read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    fails_with(capsys, generate_main, ["--checkpoint", str(truncated)], "not a readable checkpoint", "cut.pt")
    fails_with(capsys, generate_main, ["--checkpoint", str(tmp_path / "none.pt")], "does not exist")


def test_recipe_bad_corpus_files(tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    fails_with(capsys, textgen_main, ["--corpus", str(empty), "--out", str(tmp_path / "o")], "empty.txt", "empty")
    fails_with(
        capsys,
        textgen_main,
        ["--corpus", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "o")],
        "missing.txt",
        "does not exist",
    )
    fails_with(capsys, textgen_main, ["--corpus", str(tmp_path), "--out", str(tmp_path / "o")], "is a folder")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("line one\nline two\nCaf\xe9 au lait\n".encode("latin-1"))
    fails_with(
        capsys,
        textgen_main,
        ["--corpus", str(latin1), "--out", str(tmp_path / "o")],
        "latin1.txt:3:",
        "0xe9",
        "not UTF-8",
    )


def test_recipe_resume_errors_keep_checkpoints(trained, tmp_path, capsys):
    folder, _ = trained
    run = folder / "run"
    before = digest(run)
    corpus = str(folder / "corpus.txt")
    fails_with(
        capsys,
        textgen_main,
        ["--corpus", corpus, "--resume", str(tmp_path / "nope.pt"), "--out", str(run)],
        "nope.pt",
        "does not exist",
    )
    fails_with(
        capsys, textgen_main, ["--corpus", corpus, "--out", str(run), *TINY], "already holds checkpoints", "--resume"
    )
    other = save_checkpoint(tmp_path / "mt.pt", {"task": "translation", "config": {}, "model": {}})
    # without its config.json a run's flags (its corpus among them) are unknown: no silent default corpus
    fails_with(capsys, textgen_main, ["--corpus", corpus, "--resume", str(other)], "config.json is missing")
    # a translation run's flags (attention, say) are not judged as a language model's: its task is named first
    (tmp_path / "config.json").write_text(json.dumps({"flags": {"attention": "luong"}}))
    fails_with(
        capsys,
        textgen_main,
        ["--resume", str(other)],
        "that is a translation run; continue it with its own recipe (recipes/translate.py --resume",
    )
    # resuming into another run's folder would overwrite its checkpoints
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "last.pt").write_bytes(b"another run's")
    fails_with(capsys, textgen_main, ["--resume", str(run), "--out", str(elsewhere)], "already holds checkpoints")
    assert (elsewhere / "last.pt").read_bytes() == b"another run's" and digest(run) == before


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--batch-size", "0"], ["--batch-size = 0", "[1, inf)"]),
        (["--bptt", "0"], ["--bptt = 0"]),
        (["--valid-every", "0"], ["--valid-every = 0"]),
        (["--lr", "nan"], ["--lr = nan", "(0, inf)"]),
        (["--clip-norm", "-1"], ["--clip-norm = -1"]),  # torch would turn it into gradient ascent
        (["--label-smoothing", "1"], ["--label-smoothing = 1", "[0, 1)"]),
        (["--dropout", "2"], ["--dropout = 2"]),
        (["--hidden-dim", "0"], ["--hidden-dim = 0"]),
        (["--seed", "-1"], ["--seed = -1"]),
        (["--attention", "luong"], ["--attention luong", "no memory"]),
        (["--tie-embeddings", "maybe"], []),  # argparse's own one-line usage error, checked below
    ],
)
def test_recipe_bad_numbers_keep_checkpoints(trained, capsys, flags, expected):
    folder, _ = trained
    run = folder / "run"
    before = digest(run)
    argv = ["--corpus", str(folder / "corpus.txt"), "--out", str(run), "--overwrite", *TINY, *flags]
    if expected:
        fails_with(capsys, textgen_main, argv, *expected)
    else:
        with pytest.raises(SystemExit):
            run_main(textgen_main, argv)
        assert "'maybe' is not true or false" in capsys.readouterr().err
    assert digest(run) == before


def test_recipe_refuses_a_folder_of_best_and_snapshots(tmp_path, capsys, trained):
    """A folder without last.pt still holds checkpoints worth keeping: best.pt and snapshots, also one level
    down as an ensemble's members keep them."""
    corpus = str(trained[0] / "corpus.txt")
    for name in ("best.pt", "snapshot-4.pt", "member1/best.pt", "reverse/member2/last.pt"):
        out = tmp_path / name.replace("/", "_")
        (out / name).parent.mkdir(parents=True)
        (out / name).write_bytes(b"keep me")
        fails_with(
            capsys, textgen_main, ["--corpus", corpus, "--out", str(out), *TINY], "already holds checkpoints", name
        )
        assert (out / name).read_bytes() == b"keep me"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    fails_with(capsys, textgen_main, ["--corpus", corpus, "--out", str(a_file), *TINY], "is a file, not a folder")
    fails_with(
        capsys,
        textgen_main,
        ["--corpus", corpus, "--out", str(a_file / "sub"), *TINY],
        f"{a_file / 'sub'} cannot be written: {a_file} is a file, not a folder",
    )
    fails_with(capsys, textgen_main, ["--corpus", corpus, "--out", "", *TINY], "argument --out: is empty")
    fails_with(capsys, textgen_main, ["--corpus", corpus, "--resume", "", *TINY], "argument --resume: is empty")


def test_recipe_resume_keeps_its_batch_size(trained, capsys):
    folder, _ = trained
    run = folder / "run"
    before = digest(run), (run / "config.json").read_text()
    fails_with(
        capsys,
        textgen_main,
        ["--resume", str(run), "--batch-size", "3", "--steps", "14"],
        "--batch-size 3",
        "resume it with --batch-size 4",
    )
    assert (digest(run), (run / "config.json").read_text()) == before


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--hidden-dim", "64"], ["--hidden-dim 64", "built with 32", "leave out --hidden-dim"]),
        (["--cell", "gru"], ["--cell gru", "built with lstm"]),
        (["--level", "word"], ["--level word", "built with char"]),
    ],
)
def test_recipe_resume_refuses_to_change_the_model(trained, capsys, flags, expected):
    """The checkpoint fixes the model and vocabulary; such flags were once ignored without a word."""
    folder, _ = trained
    run = folder / "run"
    before = digest(run), (run / "config.json").read_text()
    fails_with(capsys, textgen_main, ["--resume", str(run), "--steps", "14", *flags], *expected)
    assert (digest(run), (run / "config.json").read_text()) == before


def test_recipe_resume_refuses_a_damaged_config(trained, capsys):
    """A config.json that is not UTF-8 or not JSON once let the run resume with the default flags."""
    folder, _ = trained
    run = folder / "run"
    config = (run / "config.json").read_bytes()
    try:
        for damaged, expected in (
            (b'{"flags": {"corpus": "caf\xe9"}}', "can't decode byte 0xe9"),
            (config[:40], "line 3"),
            (b'{"flags": ["corpus"]}', "not a JSON object"),
        ):
            (run / "config.json").write_bytes(damaged)
            before = digest(run)
            fails_with(
                capsys,
                textgen_main,
                ["--resume", str(run)],
                f"{run / 'config.json'} cannot be read",
                expected,
                "restore it",
            )
            assert digest(run) == before and (run / "config.json").read_bytes() == damaged
    finally:
        (run / "config.json").write_bytes(config)


def test_recipe_resume_refuses_a_config_value_no_flag_takes(trained, capsys):
    """A value edited by hand into config.json failed deep inside the run, or was taken as it was."""
    folder, _ = trained
    run = folder / "run"
    config = (run / "config.json").read_text()
    try:
        for name, value, flag in (
            ("hidden_dim", "32", "--hidden-dim"),
            ("cell", "rnn", "--cell"),
            ("steps", 12.5, "--steps"),
            ("tie_embeddings", "yes", "--tie-embeddings"),
            ("dropout", True, "--dropout"),
            ("corpus", ["a.txt"], "--corpus"),
        ):
            edited = json.loads(config)
            edited["flags"][name] = value
            (run / "config.json").write_text(json.dumps(edited))
            before = digest(run)
            fails_with(
                capsys,
                textgen_main,
                ["--resume", str(run)],
                f"{run / 'config.json'}: flag {name!r} holds {value!r}, not a value {flag} takes",
            )
            assert digest(run) == before
        edited = json.loads(config)
        edited["flags"].update(dropout=0, clip_norm=2, corpus=None)  # an int for a float flag is a number too
        (run / "config.json").write_text(json.dumps(edited))
        args = parse_flags(build_parser(), ["--resume", str(run)])
        assert (args.dropout, args.clip_norm, args.corpus, args.hidden_dim) == (0, 2, None, 32)
    finally:
        (run / "config.json").write_text(config)


def test_recipe_resume_continues_to_more_steps(trained, tmp_path):
    folder, _ = trained
    run = folder / "run"
    # the run's folder alone: it goes on there, with the flags it started with (corpus, model, ...)
    results = textgen_main(["--resume", str(run), "--steps", "18"])
    assert results["steps"] == 18
    steps = [
        json.loads(line)["step"]
        for line in (run / "log.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "train"
    ]
    assert steps == list(range(1, 19))
