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

import core.runs
from core import DecoderConfig, WordTokenizer
from core.checkpoint import load_checkpoint, save_checkpoint
from core.console import run_main
from core.generate import main as generate_main
from recipes.textgen import main as textgen_main
from recipes.translate import main as translate_recipe_main
from seq2seq.bleu import main as bleu_main
from seq2seq.translate import main as translate_main
from seq2seq.translator import EncoderConfig, Translator

ROOT = Path(__file__).resolve().parents[1]
CORPUS = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n" * 40
TINY = [
    "--steps",
    "2",
    "--valid-every",
    "2",
    "--hidden-dim",
    "16",
    "--emb-dim",
    "8",
    "--batch-size",
    "2",
    "--bptt",
    "16",
    "--sample-len",
    "5",
    "--device",
    "cpu",
]


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
    _wait_for(lambda: all((m / "run.lock").read_text().strip() not in ("", str(run.pid)) for m in members), resumed)
    pids = [int((m / "run.lock").read_text()) for m in members]
    time.sleep(2)
    resumed.kill()  # kill -9: the members notice and stop by themselves, saving
    resumed.communicate()
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, "a member outlived its parent by 30 s"
        time.sleep(0.2)
    after = [load_checkpoint(m / "last.pt", task="translation")["trainer"]["step"] for m in members]
    assert all(a >= s for a, s in zip(after, steps))
