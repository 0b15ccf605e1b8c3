"""The BLEU command line gives the sacrebleu library's own scores, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch
from sacrebleu.metrics import BLEU, CHRF

import seq2seq.bleu
from core.console import run_main
from seq2seq import R2L_WEIGHT, RERANK_LENGTH_PENALTY, RERANK_WEIGHT
from seq2seq.bleu import main
from seq2seq.metrics import score_files

REPO = Path(__file__).resolve().parents[1]

REFS = [
    "The door closes automatically.",
    "I have made a few changes to the original design.",
    "They come in all shapes and sizes!",
    "Is the house very old?",
    "He did not come home today.",
    "The size of the Gröbner basis grows quickly.",
    "We went to Berlin in 2019, didn't we?",
    "The cat sat on the mat.",
    "Please close the window before you leave.",
    "It is raining again.",
]
REFS2 = [
    "The door shuts by itself.",
    "I made a couple of modifications to the first design.",
    "They come in every shape and size!",
    "Is this house very old?",
    "Today he did not come home.",
    "The Gröbner basis grows fast.",
    "We were in Berlin in 2019, weren't we?",
    "A cat was sitting on the mat.",
    "Close the window before leaving, please.",
    "It's raining again.",
]
HYPS = [
    "the door closes automatically .",
    "I made some changes to the original design.",
    "They come in all Shapes and Sizes.",
    "Is the house old?",
    "He did not come home today",
    "The size of the Gröbner-basis grows fast.",
    "We went to Berlin in 2019, didn't we?",
    "The cat sat on a mat.",
    "Close the window before you go.",
    "",
]


@pytest.fixture
def files(tmp_path):
    paths = {}
    for name, lines in (("hyp", HYPS), ("ref", REFS), ("ref2", REFS2)):
        paths[name] = tmp_path / f"{name}.txt"
        paths[name].write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return paths


def _run_json(capsys, argv: list) -> dict:
    main([str(a) for a in argv] + ["--json"])
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    "tokenize, lowercase",
    [("13a", False), ("13a", True), ("intl", False), ("char", True), ("none", False), ("zh", False)],
)
def test_scores_equal_sacrebleu(files, capsys, tokenize, lowercase):
    argv = [files["hyp"], "--ref", files["ref"], "--tokenize", tokenize] + (["--lowercase"] if lowercase else [])
    report = _run_json(capsys, argv)
    bleu, chrf = report["scores"]
    expected = sacrebleu.corpus_bleu(HYPS, [REFS], tokenize=tokenize, lowercase=lowercase)
    assert bleu["name"] == "BLEU" and bleu["score"] == expected.score
    assert (bleu["counts"], bleu["totals"], bleu["precisions"]) == (
        expected.counts,
        expected.totals,
        expected.precisions,
    )
    assert (bleu["bp"], bleu["sys_len"], bleu["ref_len"]) == (expected.bp, expected.sys_len, expected.ref_len)
    chrf_metric = CHRF(lowercase=lowercase)
    assert chrf["name"] == "chrF2" and chrf["score"] == chrf_metric.corpus_score(HYPS, [REFS]).score
    if not lowercase:
        assert chrf["score"] == sacrebleu.corpus_chrf(HYPS, [REFS]).score
    bleu_metric = BLEU(tokenize=tokenize, lowercase=lowercase)
    bleu_metric.corpus_score(HYPS, [REFS])
    assert bleu["signature"] == bleu_metric.get_signature().format()
    assert chrf["signature"] == chrf_metric.get_signature().format()
    assert f"tok:{tokenize}" in bleu["signature"] and ("case:lc" in bleu["signature"]) == lowercase
    assert 0 < bleu["score"] < 100  # precondition: neither a trivial zero nor a perfect match


def test_multiple_references(files, capsys):
    report = _run_json(capsys, [files["hyp"], "--ref", files["ref"], "--ref", files["ref2"]])
    bleu, chrf = report["scores"]
    assert bleu["score"] == sacrebleu.corpus_bleu(HYPS, [REFS, REFS2]).score
    assert chrf["score"] == sacrebleu.corpus_chrf(HYPS, [REFS, REFS2]).score
    assert bleu["score"] != sacrebleu.corpus_bleu(HYPS, [REFS]).score  # the second reference counted
    assert "nrefs:2" in bleu["signature"] and report["refs"] == [str(files["ref"]), str(files["ref2"])]


def test_text_output_has_signatures(files, capsys):
    results = main([str(files["hyp"]), "--ref", str(files["ref"])])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert lines[1].startswith("chrF2|nrefs:1|")
    assert f"= {results[0]['score']:.2f} " in lines[0] and lines[1].endswith(f"= {results[1]['score']:.2f}")


def test_metrics_choice(files, capsys):
    report = _run_json(capsys, [files["hyp"], "--ref", files["ref"], "--metrics", "chrf"])
    assert [r["name"] for r in report["scores"]] == ["chrF2"]


def test_sentence_scores(files, capsys):
    report = _run_json(capsys, [files["hyp"], "--ref", files["ref"], "--ref", files["ref2"], "--sentence"])
    bleu, chrf = report["sentences"]
    assert bleu["scores"] == [sacrebleu.sentence_bleu(h, [r, r2]).score for h, r, r2 in zip(HYPS, REFS, REFS2)]
    assert chrf["scores"] == [sacrebleu.sentence_chrf(h, [r, r2]).score for h, r, r2 in zip(HYPS, REFS, REFS2)]
    assert "eff:yes" in bleu["signature"]

    main([str(files["hyp"]), "--ref", str(files["ref"]), "--sentence", "--metrics", "bleu"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("# BLEU|nrefs:1|") and lines[1] == "line\tBLEU"
    rows = [line.split("\t") for line in lines[2:]]
    assert len(rows) == len(HYPS)
    assert [float(score) for _, score in rows] == [
        round(sacrebleu.sentence_bleu(h, [r]).score, 2) for h, r in zip(HYPS, REFS)
    ]


def test_score_files_directly():
    results = score_files(HYPS, [REFS], ["bleu"], "13a", False)
    assert results[0]["score"] == sacrebleu.corpus_bleu(HYPS, [REFS]).score


def test_command_line_in_a_subprocess(files):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "seq2seq.bleu",
            str(files["hyp"]),
            "--ref",
            str(files["ref"]),
            "--ref",
            str(files["ref2"]),
            "--lowercase",
            "--json",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    bleu, chrf = json.loads(result.stdout)["scores"]
    assert bleu["score"] == sacrebleu.corpus_bleu(HYPS, [REFS, REFS2], lowercase=True).score
    assert chrf["score"] == CHRF(lowercase=True).corpus_score(HYPS, [REFS, REFS2]).score


def test_error_in_a_subprocess_is_one_line(files, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("one line\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "seq2seq.bleu", str(files["hyp"]), "--ref", str(short)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"error: hypothesis file {files['hyp']} has 10 lines but reference file {short} has 1\n"


# ---- bad input: exit status 2 and one `error:` line ----


def _error(capsys, argv: list) -> str:
    with pytest.raises(SystemExit) as exit_:
        run_main(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    return err


def test_missing_and_empty_files(files, tmp_path, capsys):
    assert "nope.txt does not exist" in _error(capsys, [tmp_path / "nope.txt", "--ref", files["ref"]])
    assert "nope.txt does not exist" in _error(capsys, [files["hyp"], "--ref", tmp_path / "nope.txt"])
    (tmp_path / "empty.txt").write_text("")
    assert "empty.txt is empty" in _error(capsys, [tmp_path / "empty.txt", "--ref", files["ref"]])


def test_a_hypothesis_file_of_blank_lines_scores_zero(files, tmp_path, capsys):
    """A system that output nothing at all is scored (it was once refused as an empty file)."""
    blank = tmp_path / "blank.txt"
    blank.write_text("\n" * len(REFS))
    results = main([str(blank), "--ref", str(files["ref"])])
    metric = BLEU()
    expected = metric.corpus_score([""] * len(REFS), [REFS])
    assert results[0]["score"] == expected.score == 0.0 and str(metric.get_signature()) in capsys.readouterr().out
    blank.write_text("\n" * (len(REFS) - 1))  # blank lines are lines: their count must still match
    assert f"{blank} has 9 lines but reference file" in _error(capsys, [blank, "--ref", files["ref"]])


def test_line_counts_differ(files, tmp_path, capsys):
    longer = tmp_path / "longer.txt"
    longer.write_text("".join(line + "\n" for line in REFS + ["One more line."]), encoding="utf-8")
    err = _error(capsys, [files["hyp"], "--ref", longer])
    assert f"hypothesis file {files['hyp']} has 10 lines but reference file {longer} has 11" in err
    err = _error(capsys, [files["hyp"], "--ref", files["ref"], "--ref", longer])
    assert f"reference file {files['ref']} has 10 lines but reference file {longer} has 11" in err


def test_not_utf8_names_file_and_line(files, tmp_path, capsys):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("\n".join(REFS).encode("latin-1"))
    err = _error(capsys, [files["hyp"], "--ref", latin])
    assert f"{latin}:6:" in err and "not UTF-8" in err


def test_needs_hyp_or_checkpoint(files, capsys):
    assert "give a hypothesis file HYP" in _error(capsys, ["--ref", files["ref"]])
    err = _error(capsys, [files["hyp"], "--ref", files["ref"], "--checkpoint", files["hyp"], "--src", files["ref"]])
    assert "either HYP or --checkpoint" in err
    for flag in ("--src", "--rerank-with", "--rerank-r2l"):  # they would be ignored in silence
        err = _error(capsys, [files["hyp"], "--ref", files["ref"], flag, files["ref"]])
        assert f"{flag} is only used with --checkpoint" in err
    for flag, value in (("--beam-size", "3"), ("--length-penalty", "1.2"), ("--method", "greedy")):
        err = _error(capsys, [files["hyp"], "--ref", files["ref"], flag, value])
        assert f"{flag} is only used with --checkpoint" in err


def test_checkpoint_translates_then_scores(files, capsys, monkeypatch):
    calls = []

    def translate_file(checkpoint, src_lines, config, device, dtype, **options):
        calls.append(
            (checkpoint, src_lines, config.beam_size, config.method, config.length_penalty, device.type, dtype, options)
        )
        return REFS  # a perfect translator

    monkeypatch.setattr(seq2seq.bleu, "translate_file", translate_file)
    report = _run_json(
        capsys,
        [
            "--checkpoint",
            files["hyp"],
            "--src",
            files["ref2"],
            "--ref",
            files["ref"],
            "--method",
            "beam",
            "--beam-size",
            "3",
            "--length-penalty",
            "1.2",
            "--device",
            "cpu",
        ],
    )
    assert calls == [
        (
            [str(files["hyp"])],
            REFS2,
            3,
            "beam",
            1.2,
            "cpu",
            torch.float32,
            dict(
                reverse=(),
                weight=RERANK_WEIGHT,
                right_to_left=(),
                right_to_left_weight=R2L_WEIGHT,
                rerank_length_penalty=RERANK_LENGTH_PENALTY,
            ),
        )
    ]
    assert report["length_penalty"] == 1.2
    assert report["scores"][0]["score"] == pytest.approx(100.0) and report["checkpoint"] == [str(files["hyp"])]
