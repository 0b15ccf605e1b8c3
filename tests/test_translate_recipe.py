"""The translation recipe end to end on a tiny made-up TSV corpus (the real corpus is fetched only by users)."""
import json

import pytest

from core.cli import run_main
from recipes.translate import main as translate_main
from seq2seq.bleu import main as bleu_main

def corpus_lines():
    subjects = ["der hund", "der kleine hund", "die katze", "die rote katze", "ein vogel"]
    objects = ["den ball", "das haus", "den baum", "die maus"]
    english = {"der hund": "the dog", "der kleine hund": "the small dog", "die katze": "the cat",
               "die rote katze": "the red cat", "ein vogel": "a bird", "den ball": "the ball",
               "das haus": "the house", "den baum": "the tree", "die maus": "the mouse"}
    return [f"{s} sieht {o} .\t{english[s]} sees {english[o]} ." for s in subjects for o in objects] * 3


@pytest.mark.slow
def test_recipe_trains_evaluates_and_writes_everything(tmp_path, capsys):
    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("\n".join(corpus_lines()) + "\n")
    out = tmp_path / "run"
    results = translate_main(["--corpus", str(corpus), "--out", str(out), "--level", "word", "--vocab-size", "100",
                              "--steps", "30", "--valid-every", "15", "--emb-dim", "16", "--hidden-dim", "32",
                              "--enc-emb-dim", "16", "--enc-hidden-dim", "16", "--device", "cpu",
                              "--beam-size", "2"])
    printed = capsys.readouterr().out
    for name in ("best.pt", "last.pt", "config.json", "log.jsonl", "loss.png", "results.json",
                 "test.greedy.txt", "test.beam2.txt", "attention_1.png"):
        assert (out / name).exists(), name
    assert "BLEU|nrefs:1" in printed and "chrF2|nrefs:1" in printed and "reference:" in printed
    saved = json.loads((out / "results.json").read_text())
    assert saved["beam2"]["BLEU"]["signature"].startswith("nrefs:1") and results["steps"] <= 30
    valid = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "valid"]
    assert valid and all("bleu" in r for r in valid)  # validation decodes for real and scores BLEU
    # the test split it writes out lets seq2seq.bleu repeat the recipe's figure (and score ensembles)
    rescored = bleu_main(["--checkpoint", str(out / "best.pt"), "--src", str(out / "test.source.txt"), "--ref",
                          str(out / "test.reference.txt"), "--beam-size", "2", "--device", "cpu"])
    assert rescored[0]["score"] == pytest.approx(saved["beam2"]["BLEU"]["score"])


def test_recipe_bad_data_flags(tmp_path, capsys):
    bad = tmp_path / "bad.tsv"
    bad.write_text("ein satz\tone sentence\nno tab here\n")
    good = tmp_path / "good.tsv"
    good.write_text("\n".join(corpus_lines()) + "\n")
    for argv, expected in ((["--corpus", str(bad)], "bad.tsv:2:"),
                           (["--corpus", str(good), "--level", "word", "--subword-alpha", "0.1"],
                            "--subword-alpha 0.1: sampled segmentations need sentencepiece tokenizers, not word"),
                           (["--train-src", str(bad)], "give all six"),
                           (["--corpus", str(tmp_path / "none.tsv")], "none.tsv")):
        with pytest.raises(SystemExit) as exit_info:
            run_main(translate_main, [*argv, "--out", str(tmp_path / "o")])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err


def test_recipe_trains_on_sampled_subwords(tmp_path):
    corpus = tmp_path / "pairs.tsv"
    corpus.write_text("\n".join(corpus_lines()) + "\n")
    out = tmp_path / "run"
    results = translate_main(["--corpus", str(corpus), "--out", str(out), "--vocab-size", "300", "--subword-alpha",
                              "0.3", "--steps", "4", "--valid-every", "4", "--valid-sentences", "4", "--emb-dim", "8",
                              "--hidden-dim", "8", "--enc-emb-dim", "8", "--enc-hidden-dim", "8", "--device", "cpu",
                              "--beam-size", "1"])
    assert results["steps"] == 4 and json.loads((out / "config.json").read_text())["data"]["subword_alpha"] == 0.3
