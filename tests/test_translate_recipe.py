"""The translation recipe end to end on a tiny made-up TSV corpus (the real corpus is fetched only by users)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.checkpoint import load_checkpoint, save_checkpoint
from core.console import run_main
from recipes.translate import build_parser, data_languages
from recipes.translate import main as translate_main
from seq2seq.bleu import main as bleu_main
from seq2seq.training import remove_other_layouts

ROOT = Path(__file__).resolve().parents[1]


def corpus_lines():
    subjects = ["der hund", "der kleine hund", "die katze", "die rote katze", "ein vogel"]
    objects = ["den ball", "das haus", "den baum", "die maus"]
    english = {
        "der hund": "the dog",
        "der kleine hund": "the small dog",
        "die katze": "the cat",
        "die rote katze": "the red cat",
        "ein vogel": "a bird",
        "den ball": "the ball",
        "das haus": "the house",
        "den baum": "the tree",
        "die maus": "the mouse",
    }
    return [f"{s} sieht {o} .\t{english[s]} sees {english[o]} ." for s in subjects for o in objects] * 3


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(corpus_lines()) + "\n")
    return path


TINY = [
    "--level",
    "word",
    "--vocab-size",
    "100",
    "--emb-dim",
    "16",
    "--hidden-dim",
    "32",
    "--enc-emb-dim",
    "16",
    "--enc-hidden-dim",
    "16",
    "--device",
    "cpu",
    "--beam-size",
    "2",
]


@pytest.mark.slow
def test_recipe_trains_one_model_evaluates_and_writes_everything(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    results = translate_main(
        [
            "--corpus",
            str(corpus),
            "--out",
            str(out),
            "--steps",
            "30",
            "--valid-every",
            "15",
            "--members",
            "1",
            "--snapshots",
            "0",
            *TINY,
        ]
    )
    printed = capsys.readouterr().out
    for name in (
        "best.pt",
        "last.pt",
        "config.json",
        "log.jsonl",
        "loss.png",
        "results.json",
        "test.greedy.txt",
        "test.beam2.txt",
        "attention_1.png",
        "ensemble.args",
    ):
        assert (out / name).exists(), name
    assert not list(out.glob("snapshot-*"))
    assert "BLEU|nrefs:1" in printed and "chrF2|nrefs:1" in printed and "reference:" in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["beam2"]["BLEU"]["signature"].startswith("nrefs:1") and results["steps"][0] <= 30
    assert saved["checkpoints"] == [str(out / "best.pt")]
    valid = [
        json.loads(line)
        for line in (out / "log.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "valid"
    ]
    assert valid and all("bleu" in r for r in valid)  # validation decodes for real and scores BLEU
    # the test split it writes out lets seq2seq.bleu repeat the recipe's figure (and score ensembles)
    rescored = bleu_main(
        [
            "--checkpoint",
            str(out / "best.pt"),
            "--src",
            str(out / "test.source.txt"),
            "--ref",
            str(out / "test.reference.txt"),
            "--beam-size",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert rescored[0]["score"] == pytest.approx(saved["beam2"]["BLEU"]["score"])
    # resuming from the checkpoint alone goes on in its folder
    resumed = translate_main(
        [
            "--corpus",
            str(corpus),
            "--steps",
            "32",
            "--valid-every",
            "16",
            "--snapshots",
            "0",
            "--resume",
            str(out / "last.pt"),
            *TINY,
        ]
    )
    assert resumed["steps"] == [32] and json.loads((out / "results.json").read_text())["steps"] == [32]


@pytest.mark.slow
def test_recipe_trains_an_ensemble_side_by_side_and_tests_its_snapshots(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    results = translate_main(
        ["--corpus", str(corpus), "--out", str(out), "--steps", "30", "--valid-every", "10", *TINY]
    )  # the defaults: --members 2 --snapshots 3
    printed = capsys.readouterr().out
    snapshots = [out / f"member{k}" / f"snapshot-{s}.pt" for k in (1, 2) for s in (10, 20, 30)]
    assert results["checkpoints"] == [str(p) for p in snapshots] and all(p.exists() for p in snapshots)
    assert "testing an ensemble of 6 checkpoints" in printed
    logs = [[json.loads(line) for line in (out / f"member{k}" / "log.jsonl").read_text().splitlines()] for k in (1, 2)]
    first_losses = [next(r["loss"] for r in log if r["split"] == "train") for log in logs]
    assert first_losses[0] != first_losses[1]  # different seeds: two different models
    # the command lines read the ensemble from the file the recipe writes
    rescored = bleu_main(
        [
            f"@{out / 'ensemble.args'}",
            "--src",
            str(out / "test.source.txt"),
            "--ref",
            str(out / "test.reference.txt"),
            "--beam-size",
            "2",
            "--device",
            "cpu",
        ]
    )
    assert rescored[0]["score"] == pytest.approx(results["beam2"]["BLEU"]["score"])
    # a run refuses to train over itself, in either layout; --resume takes its folder and goes on there
    (out / "member2" / "last.pt").rename(out / "member2" / "kept.pt")
    (out / "single").mkdir()
    (out / "single" / "last.pt").write_bytes((out / "member1" / "last.pt").read_bytes())
    for argv, expected in (
        (["--out", str(out), "--members", "0"], "--members = 0 is out of range; allowed: [1, inf)"),
        (["--out", str(out)], f"{out} already holds checkpoints; continue with --resume {out}"),
        (["--out", str(out / "single")], f"{out / 'single'} already holds checkpoints"),
        (["--out", str(out), "--members", "1"], f"{out} already holds checkpoints"),
        (["--resume", str(out)], f"needs {out / 'member2' / 'last.pt'}, which is missing"),
        (["--resume", str(tmp_path / "none")], "none does not exist"),
        (["--resume", str(out), "--members", "3"], "continues a run of 2 model(s)"),
        (["--resume", str(out), "--out", str(tmp_path / "elsewhere")], "goes on in that folder"),
        (["--resume", str(out), "--out", ""], "argument --out: is empty"),
        (["--resume", ""], "argument --resume: is empty"),
        (["--resume", str(out / "member1" / "last.pt"), "--members", "2"], "one model's checkpoint"),
        (["--resume", str(out / "member1" / "last.pt")], f"resume the whole run with --resume {out}"),
        (["--resume", str(tmp_path)], "not a run folder (it has no config.json)"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run_main(translate_main, ["--corpus", str(corpus), *argv, *TINY])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err
    (out / "member2" / "kept.pt").rename(out / "member2" / "last.pt")
    config = (out / "config.json").read_text()
    for argv, expected in (
        (["--subword-alpha", "1.5"], "--subword-alpha = 1.5"),
        (["--seed", str(2**32)], "--seed"),
        # the checkpoints fix the model and vocabulary: such flags were once ignored silently
        (["--enc-hidden-dim", "32"], "--enc-hidden-dim 32: the run in"),
        (["--vocab-size", "50"], "built with 100"),
        (["--source-lang", "fr"], "--source-lang fr: the run's models were built without language labels"),
    ):
        with pytest.raises(SystemExit):
            run_main(translate_main, ["--resume", str(out), *argv])
        assert expected in capsys.readouterr().err
    assert (out / "config.json").read_text() == config  # a resume that fails leaves the run's flags as they were
    # the folder alone: the run goes on with the flags it started with (corpus, sizes, --valid-every, ...)
    resumed = translate_main(["--resume", str(out), "--steps", "40"])
    assert resumed["steps"] == [40, 40] and resumed["checkpoints"][-1] == str(out / "member2" / "snapshot-40.pt")
    # bad input with --overwrite loses nothing: a new run replaces the checkpoints only once it trains
    before = sorted(out.glob("**/*.pt"))
    for argv in (["--corpus", str(corpus), "--members", "0"], ["--corpus", str(tmp_path / "none.tsv")]):
        with pytest.raises(SystemExit):
            run_main(translate_main, [*argv, "--out", str(out), "--overwrite"])
    assert sorted(out.glob("**/*.pt")) == before
    # a single model afresh over the ensemble: the members' checkpoints go, so none can pass for this run's
    translate_main(["--corpus", str(corpus), "--out", str(out), "--overwrite", "--members", "1", *TINY, "--steps", "2"])
    assert not list(out.glob("member*/*.pt")) and (out / "last.pt").exists()


@pytest.mark.slow
def test_recipe_trains_reranking_models_beside_and_reranks_the_test_with_them(tmp_path, corpus, capsys):
    out = tmp_path / "run"
    results = translate_main(
        [
            "--corpus",
            str(corpus),
            "--out",
            str(out),
            "--steps",
            "20",
            "--valid-every",
            "10",
            "--members",
            "1",
            "--reverse-members",
            "2",
            "--r2l-members",
            "1",
            "--snapshots",
            "0",
            "--separate-vocab",
            "--share-embeddings",
            "false",
            "--rerank-beam-size",
            "3",
            "--rerank-weight",
            "0.5",
            "--rerank-r2l-weight",
            "2",
            "--rerank-length-penalty",
            "1.5",
            "--source-lang",
            "xx",
            "--target-lang",
            "yy",
            *TINY,
        ]
    )
    printed = capsys.readouterr().out
    reverse = [out / "reverse" / f"member{k}" / "best.pt" for k in (1, 2)]
    assert results["reverse_checkpoints"] == [str(p) for p in reverse] and "test, beam3_reranked:" in printed
    assert results["r2l_checkpoints"] == [str(out / "r2l" / "best.pt")]
    forward = load_checkpoint(out / "best.pt", task="translation")
    for path in reverse:  # trained the other way round: target -> source, with the tokenizers swapped
        backward = load_checkpoint(path, task="translation")
        assert backward["tokenizers"]["source"] == forward["tokenizers"]["target"]
        assert backward["tokenizers"]["target"] == forward["tokenizers"]["source"]
    right_to_left = load_checkpoint(out / "r2l" / "best.pt", task="translation")  # same direction, written backwards
    assert right_to_left["tokenizers"] == forward["tokenizers"]
    assert right_to_left["config"]["encoder"]["target_order"] == "right-to-left"
    assert forward["config"]["encoder"]["target_order"] == "left-to-right"
    languages = {
        name: (ck["config"]["encoder"]["source_lang"], ck["config"]["encoder"]["target_lang"])
        for name, ck in (
            ("forward", forward),
            ("r2l", right_to_left),
            ("reverse", load_checkpoint(reverse[0], task="translation")),
        )
    }
    assert languages == {"forward": ("xx", "yy"), "r2l": ("xx", "yy"), "reverse": ("yy", "xx")}
    logs = [(out / "reverse" / f"member{k}" / "log.jsonl").read_text() for k in (1, 2)]
    assert logs[0] != logs[1]  # seeds --seed and --seed + 1
    # the command lines rerank with the files the recipe writes, and repeat its figure
    rescored = bleu_main(
        [
            f"@{out / 'ensemble.args'}",
            f"@{out / 'reverse.args'}",
            f"@{out / 'r2l.args'}",
            "--src",
            str(out / "test.source.txt"),
            "--ref",
            str(out / "test.reference.txt"),
            "--beam-size",
            "3",
            "--rerank-weight",
            "0.5",
            "--rerank-r2l-weight",
            "2",
            "--rerank-length-penalty",
            "1.5",
            "--device",
            "cpu",
        ]
    )
    assert rescored[0]["score"] == pytest.approx(results["beam3_reranked"]["BLEU"]["score"])
    with pytest.raises(SystemExit):  # a model of the same direction given as the reverse one
        run_main(
            bleu_main,
            [
                f"@{out / 'ensemble.args'}",
                "--rerank-with",
                str(out / "r2l" / "best.pt"),
                "--src",
                str(out / "test.source.txt"),
                "--ref",
                str(out / "test.reference.txt"),
                "--device",
                "cpu",
            ],
        )
    assert capsys.readouterr().err.strip() == (
        f"error: {out / 'r2l' / 'best.pt'} cannot rerank this model's translations: it translates xx->yy, and this "
        "model xx->yy; a reverse model must translate the other way"
    )
    # the folder alone resumes every model, the reranking ones too
    resumed = translate_main(["--resume", str(out), "--steps", "24"])
    assert resumed["steps"] == [24] and all(
        load_checkpoint(path, task="translation")["trainer"]["step"] == 24
        for path in [out / "reverse" / f"member{k}" / "last.pt" for k in (1, 2)] + [out / "r2l" / "last.pt"]
    )
    for argv, expected in (
        (["--resume", str(out), "--reverse-members", "1"], "continues a run of 2 reverse model(s)"),
        (["--resume", str(out), "--r2l-members", "2"], "continues a run of 1 right-to-left model(s)"),
        (
            ["--resume", str(out / "r2l" / "last.pt")],
            f"is a right-to-left model of the run in {out}; resume the whole run with --resume {out}",
        ),
        (["--out", str(tmp_path / "o"), "--r2l-members", "1", "--rerank-r2l-weight", "-1"], "--rerank-r2l-weight = -1"),
        (["--out", str(tmp_path / "o"), "--rerank-r2l-weight", "0.3"], "--rerank-r2l-weight is used only with --r2l"),
        (["--out", str(tmp_path / "o"), "--r2l-members", "-1"], "--r2l-members = -1"),
        (
            ["--out", str(tmp_path / "o"), "--r2l-members", "1", "--target-order", "right-to-left"],
            "leave out --target-order right-to-left",
        ),
        (["--resume", str(out / "last.pt"), "--reverse-members", "1"], "one model's checkpoint"),
        (
            ["--resume", str(out / "reverse" / "member2" / "last.pt")],
            f"is a reverse model of the run in {out}; resume the whole run with --resume {out}",
        ),
        (["--out", str(tmp_path / "o"), "--reverse-members", "1", "--rerank-weight", "-1"], "--rerank-weight = -1"),
        (["--out", str(tmp_path / "o"), "--reverse-members", "-1"], "--reverse-members = -1"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run_main(translate_main, ["--corpus", str(corpus), *argv, *TINY])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err


def test_languages_come_from_the_flags_or_the_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("pairs.tsv", "train.cs", "train.en", "valid.cs", "valid.en", "test.cs", "test.en"):
        (tmp_path / name).write_text("ein satz\ta sentence\n")

    def languages(*argv):
        return data_languages(build_parser().parse_args(list(argv)))

    assert languages() == {"source_lang": "de", "target_lang": "en"}  # the Ding dictionary
    assert languages("--dataset", "bible") == {"source_lang": "es", "target_lang": "en"}
    assert languages("--corpus", "pairs.tsv") == {"source_lang": "", "target_lang": ""}  # not known: not checked
    assert languages("--corpus", "pairs.tsv", "--source-lang", "fr", "--target-lang", "en") == {
        "source_lang": "fr",
        "target_lang": "en",
    }
    six = [
        x for part in ("train", "valid", "test") for x in (f"--{part}-src", f"{part}.cs", f"--{part}-tgt", f"{part}.en")
    ]
    assert languages(*six) == {"source_lang": "", "target_lang": ""}  # file names are not guessed from


def test_an_overwritten_run_removes_only_its_own_old_checkpoints(tmp_path):
    out, other = tmp_path / "run", tmp_path / "other"
    for path in (
        out / "member1" / "best.pt",
        out / "member2" / "snapshot-4.pt",
        out / "reverse" / "last.pt",
        out / "notes" / "last.pt",
        other / "best.pt",
        out / "best.pt",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (out / "member3").symlink_to(other)  # a linked folder is another run's
    (out / "members.txt").write_text("a file whose name looks like a member's folder")
    remove_other_layouts(out, [out])  # a single model afresh: it trains in out itself
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.pt")) == [
        "other/best.pt",
        "run/best.pt",
        "run/notes/last.pt",
    ]  # out's own best.pt its Trainer replaces


def test_recipe_bad_data_flags(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("ein satz\tone sentence\nno tab here\n")
    good = tmp_path / "good.tsv"
    good.write_text("\n".join(corpus_lines()) + "\n")
    textgen_run = tmp_path / "textgen"
    save_checkpoint(textgen_run / "last.pt", {"task": "textgen", "config": {}, "model": {}, "tokenizers": {}})
    (textgen_run / "config.json").write_text(json.dumps({"flags": {"corpus": "shakespeare.txt", "vocab_size": None}}))
    for argv, expected in (
        (["--corpus", str(bad)], "bad.tsv:2:"),
        (
            ["--corpus", str(good), "--level", "word", "--subword-alpha", "0.1"],
            "--subword-alpha 0.1: sampled segmentations need sentencepiece tokenizers, not word",
        ),
        (["--train-src", str(bad)], "give all six"),
        (
            ["--corpus", str(good)]
            + [
                x
                for flag in ("--train", "--valid", "--test")
                for x in (f"{flag}-src", str(bad), f"{flag}-tgt", str(bad))
            ],
            "--corpus does not go with --train-src: --corpus is split by the hash rule",
        ),
        (["--corpus", str(good), "--beam-size", "0"], "--beam-size = 0 is out of range"),
        (["--corpus", str(good), "--separate-vocab"], "with --separate-vocab, add --share-embeddings false"),
        (["--corpus", str(good), "--rerank-beam-size", "0"], "--rerank-beam-size = 0 is out of range"),
        (["--corpus", str(good), "--valid-sentences", "0"], "--valid-sentences = 0"),
        (["--corpus", str(good), "--max-tokens", "-5"], "--max-tokens = -5"),
        (["--corpus", str(good), "--enc-dropout", "nan"], "--enc-dropout = nan"),
        (
            ["--corpus", str(good), "--seed", str(2**32 - 1)],  # member 2 would have 2^32
            "--seed = 4294967295 is out of range; allowed: [0, 4294967294]",
        ),
        (["--corpus", str(good), "--steps", "1" + "0" * 400], "--steps = 1000"),
        (["--corpus", str(tmp_path / "none.tsv")], "none.tsv"),
        # a language model's run: its task is named, not a corpus from its flags
        (
            ["--resume", str(textgen_run)],
            "that is a textgen run; continue it with its own recipe (recipes/textgen.py --resume",
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run_main(translate_main, [*argv] + ([] if "--resume" in argv else ["--out", str(tmp_path / "o")]))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err


def test_recipe_trains_on_sampled_subwords(tmp_path, corpus):
    out = tmp_path / "run"
    results = translate_main(
        [
            "--corpus",
            str(corpus),
            "--out",
            str(out),
            "--vocab-size",
            "300",
            "--subword-alpha",
            "0.3",
            "--steps",
            "4",
            "--valid-every",
            "4",
            "--members",
            "1",
            "--valid-sentences",
            "4",
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
            "--beam-size",
            "1",
        ]
    )
    assert results["steps"] == [4] and json.loads((out / "config.json").read_text())["data"]["subword_alpha"] == 0.3


@pytest.mark.slow
def test_ctrl_c_stops_every_member_with_a_checkpoint_and_resume_finishes(tmp_path, corpus):
    out = tmp_path / "run"
    argv = [
        sys.executable,
        str(ROOT / "recipes" / "translate.py"),
        "--corpus",
        str(corpus),
        "--out",
        str(out),
        "--valid-every",
        "1000",
        *TINY,
    ]
    # its own session: Ctrl-C in a terminal reaches the whole foreground group, parent and members alike
    run = subprocess.Popen(
        [*argv, "--steps", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    logs = [out / f"member{k}" / "log.jsonl" for k in (1, 2)]
    deadline = time.monotonic() + 120
    while not all(log.exists() and log.read_text().count("\n") >= 3 for log in logs):
        assert run.poll() is None and time.monotonic() < deadline, run.communicate()
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGINT)
    stdout, stderr = run.communicate(timeout=120)
    assert run.returncode == 130 and f"continue with --resume {out}" in stderr, stderr  # as shells expect
    steps = [load_checkpoint(out / f"member{k}" / "last.pt", task="translation")["trainer"]["step"] for k in (1, 2)]
    assert all(3 <= step < 100000 for step in steps)
    assert not (out / "results.json").exists()  # no testing after an interruption
    resumed = subprocess.run(
        [*argv, "--steps", str(max(steps) + 2), "--resume", str(out)], capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "results.json").read_text())["steps"] == [max(steps) + 2] * 2


def test_training_pairs_beyond_the_length_bounds_are_set_aside_with_one_warning():
    """What one batch holds, and so memory, is bounded by --max-source-len and --max-target-len."""
    import argparse

    from core import DecoderConfig, UserError, WordTokenizer
    from seq2seq.training import trainable_pairs
    from seq2seq.translator import EncoderConfig, Translator

    words = WordTokenizer("a b c".split())
    model = Translator(words, words, EncoderConfig(enc_emb_dim=4, enc_hidden_dim=4),
                       DecoderConfig(emb_dim=4, hidden_dim=4, attention="luong"))  # fmt: skip
    pairs = [("a b", "c"), ("a " * 9, "b"), ("a", "c " * 9), ("", "c"), ("a", "b c")]
    args = argparse.Namespace(max_source_len=5, max_target_len=5)
    with pytest.warns(UserWarning, match="2 of the 4 training pairs are set aside: longer than --max-source-len 5"):
        assert trainable_pairs(model, pairs, args, warn=True) == [("a b", "c"), ("a", "b c")]
    with pytest.raises(UserError, match="no training pair is within --max-source-len 1"):
        trainable_pairs(model, pairs[1:3], argparse.Namespace(max_source_len=1, max_target_len=1), warn=False)
