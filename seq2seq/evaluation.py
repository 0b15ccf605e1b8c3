"""Testing a translation run: BLEU and chrF of greedy, beam and reranked beam search on the test split, a few
examples, attention maps, results.json and the @FILE lists of the run's checkpoints for the command lines."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from core.files import write_text
from seq2seq.figures import save_attention_png
from seq2seq.metrics import score_files
from seq2seq.rerank import load_rerankers, translate_reranked
from seq2seq.training import member_folders
from seq2seq.translator import Translator, load_ensemble

ARGS_FILES = {
    "forward": ("ensemble.args", "--checkpoint"),
    "reverse": ("reverse.args", "--rerank-with"),
    "r2l": ("r2l.args", "--rerank-r2l"),
}


def evaluate(
    args: argparse.Namespace,
    out: Path,
    checkpoints: dict[str, list[Path]],
    test: list[tuple[str, str]],
    device: torch.device,
    results: dict,
) -> dict:
    """Test BLEU and chrF (greedy, beam and, with reranking models, reranked beam) of the model, or of the
    ensemble of the forward checkpoints; examples, attention maps, results.json, and `ensemble.args` (and
    `reverse.args`, `r2l.args`) for the command lines (`@out/ensemble.args @out/reverse.args @out/r2l.args`)."""
    model, others = load_ensemble(checkpoints["forward"], device)
    results.update(
        _training_figures(out, args.members),
        checkpoints=[str(p) for p in checkpoints["forward"]],
        parameters_per_model=sum(p.numel() for p in model.parameters()),
    )
    args_files = write_args_files(out, checkpoints)
    for kind in ("reverse", "r2l"):
        if checkpoints[kind]:
            results[f"{kind}_checkpoints"] = [str(p) for p in checkpoints[kind]]
    sources, references = [s for s, _ in test], [t for _, t in test]
    for name, lines in (("test.source.txt", sources), ("test.reference.txt", references)):  # for seq2seq.bleu
        write_text(out / name, "\n".join(lines) + "\n")
    if others:
        print(f"\ntesting an ensemble of {len(checkpoints['forward'])} checkpoints (@{out / 'ensemble.args'})")
    for name, decode in decodings(args, model, others, checkpoints, device).items():
        t0 = time.perf_counter()
        hyps = decode(sources)
        scores = score_files(hyps, [references])
        results[name] = {s["name"]: {"score": s["score"], "signature": s["signature"]} for s in scores}
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
        write_text(out / f"test.{name}.txt", "\n".join(hyps) + "\n")
        print(f"\ntest, {name}:")
        for s in scores:
            print("  " + s["text"])
    print(f"\nfirst test sentences ({name}):")
    for src, ref, hyp in list(zip(sources, references, hyps))[:5]:
        print(f"  source:    {src}\n  reference: {ref}\n  output:    {hyp}\n")
    for i, sentence in enumerate(sources[:3]):  # an ensemble's attention: the mean of its members'
        save_attention_png(
            *model.attention(sentence, method="beam", beam_size=args.beam_size, ensemble_with=others),
            out / f"attention_{i + 1}.png",
        )
    write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    print(f"attention maps: {out}/attention_*.png   checkpoints: " + " ".join(args_files))
    return results


def decodings(
    args: argparse.Namespace,
    model: Translator,
    others: list[Translator],
    checkpoints: dict[str, list[Path]],
    device: torch.device,
) -> dict[str, Callable[[list[str]], list[str]]]:
    """The test's decodings by name: greedy, beam and, when the run trained reranking models, reranked beam."""
    found: dict[str, Callable[[list[str]], list[str]]] = {
        "greedy": partial(model.translate, method="greedy", ensemble_with=others),
        f"beam{args.beam_size}": partial(
            model.translate,
            method="beam",
            beam_size=args.beam_size,
            length_penalty=args.length_penalty,
            ensemble_with=others,
        ),
    }
    rerankers = load_rerankers(
        checkpoints["reverse"],
        checkpoints["r2l"],
        args.rerank_weight,
        args.rerank_r2l_weight,
        args.rerank_length_penalty,
        device,
        forward=model,
    )
    if rerankers:
        found[f"beam{args.rerank_beam_size}_reranked"] = partial(
            translate_reranked,
            model,
            beam_size=args.rerank_beam_size,
            length_penalty=args.length_penalty,
            ensemble_with=others,
            **rerankers,
        )
    return found


def write_args_files(out: Path, checkpoints: dict[str, list[Path]]) -> list[str]:
    """`ensemble.args` (and `reverse.args`, `r2l.args` when the run has such models): each checkpoint behind the
    flag that takes it, one per line; returns them as @FILE arguments."""
    written = []
    for kind, (name, flag) in ARGS_FILES.items():
        (out / name).unlink(missing_ok=True)  # an earlier run's, in a folder trained afresh
        if checkpoints[kind]:
            write_text(out / name, "".join(f"{flag}\n{p}\n" for p in checkpoints[kind]))
            written.append(f"@{out / name}")
    return written


def _training_figures(out: Path, members: int) -> dict:
    """Per member, from its log: the steps trained and the best validation BLEU."""
    logs = [
        [json.loads(line) for line in (f / "log.jsonl").read_text().splitlines()] for f in member_folders(out, members)
    ]
    return {
        "steps": [max((r["step"] for r in log), default=0) for log in logs],
        "best_valid_bleu": [
            max((r["bleu"] for r in log if r["split"] == "valid" and "bleu" in r), default=None) for log in logs
        ],
    }
