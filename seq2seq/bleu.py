"""Score translations with sacreBLEU: corpus BLEU and chrF with their signatures, like the `sacrebleu` command.

    python -m seq2seq.bleu HYP --ref REF [--ref REF2 ...] [--tokenize 13a] [--lowercase] [--json] [--sentence]
    python -m seq2seq.bleu --checkpoint CK --src SRC --ref REF [--method beam --beam-size 5]
    python -m seq2seq.bleu --checkpoint CK1 --checkpoint CK2 --src SRC --ref REF   # an ensemble

The scores are the sacrebleu library's own, so they can be quoted with the printed signature.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.metrics.base import Metric

from core.cli import DTYPES, ArgsFileParser, add_dtype_flag, resolve_device, run_main
from core.errors import UserError, check_range
from core.allocator import keep_freed_memory
from seq2seq import R2L_WEIGHT, RERANK_LENGTH_PENALTY, RERANK_WEIGHT
from seq2seq.data import read_lines
from seq2seq.translator import translate_file

METRICS = ("bleu", "chrf")


def _metric(name: str, tokenize: str, lowercase: bool, sentence: bool) -> Metric:
    """A sacrebleu metric; sentence-level BLEU uses effective order, as `sacrebleu.sentence_bleu` does."""
    try:
        if name == "bleu":
            return BLEU(lowercase=lowercase, tokenize=tokenize, effective_order=sentence)
        return CHRF(lowercase=lowercase)
    except (ImportError, RuntimeError, OSError) as err:  # a tokenizer's missing extra or model download
        raise UserError(f"--tokenize {tokenize}: {' '.join(str(err).split())}") from None


def _check_lengths(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    if not refs:
        raise UserError("no reference given (use --ref REF)")
    for i, ref in enumerate(refs, start=1):
        if len(ref) != len(hyps):
            raise UserError(f"{len(hyps)} hypotheses but reference {i} has {len(ref)} lines")


def _details(score: Any) -> dict:
    """What a score holds beyond its value: n-gram statistics for BLEU, the settings for chrF."""
    if hasattr(score, "counts"):
        return {"counts": score.counts, "totals": score.totals, "precisions": score.precisions,
                "bp": score.bp, "sys_len": score.sys_len, "ref_len": score.ref_len}
    return {"char_order": score.char_order, "word_order": score.word_order, "beta": score.beta}


def score_files(hyps: list[str], refs: list[list[str]], metrics: Sequence[str] = METRICS,
                tokenize: str = "13a", lowercase: bool = False) -> list[dict]:
    """Corpus scores of `hyps` against reference streams `refs` (each aligned with `hyps`), one dict per metric."""
    _check_lengths(hyps, refs)
    results = []
    for name in metrics:
        metric = _metric(name, tokenize, lowercase, sentence=False)
        score = metric.corpus_score(hyps, refs)
        signature = metric.get_signature().format()
        results.append({"name": score.name, "score": score.score, "signature": signature,
                        **_details(score), "text": score.format(width=2, signature=signature)})
    return results


def sentence_scores(hyps: list[str], refs: list[list[str]], metrics: Sequence[str] = METRICS,
                    tokenize: str = "13a", lowercase: bool = False) -> list[dict]:
    """Per-line scores, one dict per metric: name, signature and `scores` (one float per hypothesis)."""
    _check_lengths(hyps, refs)
    results = []
    for name in metrics:
        metric = _metric(name, tokenize, lowercase, sentence=True)
        scores = [metric.sentence_score(hyp, list(line_refs)) for hyp, *line_refs in zip(hyps, *refs)]
        results.append({"name": scores[0].name if scores else name, "signature": metric.get_signature().format(),
                        "scores": [s.score for s in scores]})
    return results


def _parser() -> argparse.ArgumentParser:
    parser = ArgsFileParser(
        prog="python -m seq2seq.bleu", description=__doc__.split("\n\n")[0],
        epilog="Either give HYP (one translation per line), or --checkpoint and --src to translate first. "
               "@FILE reads flags from FILE, one per line, or a flag and its value per line (e.g. the recipe's "
               "ensemble.args).")
    parser.add_argument("hyp", nargs="?", metavar="HYP", help="hypothesis file, one sentence per line")
    parser.add_argument("--ref", action="append", required=True, metavar="REF",
                        help="reference file aligned with HYP; repeat for several references")
    parser.add_argument("--tokenize", default=BLEU.TOKENIZER_DEFAULT, choices=sorted(BLEU.TOKENIZERS),
                        help="BLEU tokenizer (default: %(default)s)")
    parser.add_argument("--lowercase", action="store_true", help="case-insensitive scores")
    parser.add_argument("--metrics", nargs="+", default=list(METRICS), choices=METRICS,
                        help="metrics to compute (default: bleu chrf)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--sentence", action="store_true", help="print a score for every line")
    translate = parser.add_argument_group("translate, then score")
    translate.add_argument("--checkpoint", action="append", metavar="CK",
                           help="translation checkpoint to translate --src with; repeat to translate with an "
                                "ensemble of several (the mean of their next-token probabilities)")
    translate.add_argument("--src", metavar="SRC", help="source sentences, one per line, aligned with --ref")
    translate.add_argument("--method", default="beam", choices=("greedy", "beam"), help="(default: %(default)s)")
    translate.add_argument("--beam-size", type=int, default=5, help="(default: %(default)s)")
    translate.add_argument("--length-penalty", type=float, default=1.0,
                           help="GNMT alpha for beam search (default: %(default)s)")
    translate.add_argument("--device", default="auto", help="auto, cpu or cuda (default: %(default)s)")
    add_rerank_flags(translate)
    add_dtype_flag(translate)
    return parser


def add_rerank_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--rerank-with", metavar="CK", action="append",
                        help="a checkpoint trained in the opposite direction (target -> source): of the beam's "
                             "--beam-size best translations, keep the one with the highest log p(translation | source) "
                             "/ length penalty (--rerank-length-penalty) + --rerank-weight x log p(source | "
                             "translation) (noisy-channel reranking); repeat it to score with an ensemble of reverse "
                             "models, or give a recipe run's list: @runs/translate/reverse.args")
    parser.add_argument("--rerank-r2l", metavar="CK", action="append",
                        help="a checkpoint of the same direction that writes right to left (--target-order "
                             "right-to-left): adds --rerank-r2l-weight x its log p(translation | source) to the "
                             "score that reranks the beam's best; repeat it for an ensemble, or give a recipe run's "
                             "list: @runs/translate/r2l.args")
    add_rerank_score_flags(parser)


def add_rerank_score_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """How the reranking scores each of the n best: the command lines' flags and the translation recipe's."""
    parser.add_argument("--rerank-weight", type=float, default=RERANK_WEIGHT,
                        help="weight of the reverse models' log p(source | translation) (default: %(default)s)")
    parser.add_argument("--rerank-length-penalty", type=float, default=RERANK_LENGTH_PENALTY,
                        help="GNMT alpha of the forward log-probability in the reranking score; --length-penalty "
                             "still decides what the beam keeps (default: %(default)s)")
    parser.add_argument("--rerank-r2l-weight", type=float, default=R2L_WEIGHT,
                        help="weight of the right-to-left models' log p(translation | source) (default: %(default)s)")


def check_rerank_score_flags(args: argparse.Namespace) -> None:
    check_range("--rerank-weight", args.rerank_weight, low=0)
    check_range("--rerank-r2l-weight", args.rerank_r2l_weight, low=0)
    check_range("--rerank-length-penalty", args.rerank_length_penalty)


def check_rerank_flags(args: argparse.Namespace) -> str | None:
    """One-line errors for reranking flags that do not fit together, before any model is loaded; the
    reranking flag given (for further errors), or None."""
    flag = "--rerank-with" if args.rerank_with else "--rerank-r2l" if args.rerank_r2l else None
    if flag is None:
        return None
    if args.method != "beam":
        raise UserError(f"{flag} reorders the n best of beam search; it does not go with --method {args.method}")
    check_rerank_score_flags(args)
    return flag


def rerank_options(args: argparse.Namespace) -> dict:
    """The reranking flags as `seq2seq.translator.load_rerankers` takes them."""
    return dict(reverse=args.rerank_with or (), weight=args.rerank_weight, right_to_left=args.rerank_r2l or (),
                right_to_left_weight=args.rerank_r2l_weight, rerank_length_penalty=args.rerank_length_penalty)


def _hypotheses(args: argparse.Namespace, n_refs: int) -> list[str]:
    """The hypothesis lines: read from HYP, or translated from --src with --checkpoint."""
    if args.checkpoint is None:
        if args.hyp is None:
            raise UserError("give a hypothesis file HYP, or --checkpoint CK --src SRC to translate one")
        parser = _parser()  # the translation flags, given with a value other than their default
        given = ["--" + name.replace("_", "-") for name in ("src", "rerank_with", "rerank_r2l", "method", "beam_size",
                                                            "length_penalty", "rerank_weight", "dtype",
                                                            "rerank_r2l_weight", "rerank_length_penalty", "device")
                 if getattr(args, name) != parser.get_default(name)]
        if given:
            raise UserError(f"{given[0]} is only used with --checkpoint (translate, then score)")
        return read_lines(args.hyp)
    if args.hyp is not None:
        raise UserError("give either HYP or --checkpoint, not both")
    if args.src is None:
        raise UserError("--checkpoint needs --src SRC, the sentences to translate")
    check_range("--beam-size", args.beam_size, low=1)
    check_range("--length-penalty", args.length_penalty)
    check_rerank_flags(args)
    for path in args.checkpoint + (args.rerank_with or []) + (args.rerank_r2l or []):
        if not Path(path).is_file():
            raise UserError(f"checkpoint {path} does not exist")
    src = read_lines(args.src)
    if len(src) != n_refs:  # fail before the slow part
        raise UserError(f"source file {args.src} has {len(src)} lines but reference file {args.ref[0]} "
                        f"has {n_refs}")
    keep_freed_memory()
    return translate_file(args.checkpoint, src, args.beam_size, args.method, resolve_device(args.device),
                          DTYPES[args.dtype], length_penalty=args.length_penalty, **rerank_options(args))


def main(argv: list[str] | None = None) -> list[dict]:
    """Score a hypothesis file (or a checkpoint's translations) against references and print the scores."""
    args = _parser().parse_args(argv)
    refs = [read_lines(path) for path in args.ref]
    for path, ref in zip(args.ref[1:], refs[1:]):
        if len(ref) != len(refs[0]):
            raise UserError(f"reference file {args.ref[0]} has {len(refs[0])} lines but reference file "
                            f"{path} has {len(ref)}")
    hyps = _hypotheses(args, len(refs[0]))
    if len(hyps) != len(refs[0]):
        what = f"hypothesis file {args.hyp}" if args.hyp else f"the translation of {args.src}"
        raise UserError(f"{what} has {len(hyps)} lines but reference file {args.ref[0]} has {len(refs[0])}")

    score = sentence_scores if args.sentence else score_files
    results = score(hyps, refs, args.metrics, args.tokenize, args.lowercase)
    if args.json:
        report = {"hyp": args.hyp, "refs": args.ref, "sentences" if args.sentence else "scores": results}
        if args.checkpoint:
            report.update(checkpoint=args.checkpoint, src=args.src, method=args.method, beam_size=args.beam_size,
                          length_penalty=args.length_penalty, dtype=args.dtype, rerank_with=args.rerank_with,
                          rerank_weight=args.rerank_weight, rerank_r2l=args.rerank_r2l,
                          rerank_r2l_weight=args.rerank_r2l_weight,
                          rerank_length_penalty=args.rerank_length_penalty)
        print(json.dumps(report, indent=1, ensure_ascii=False))
    elif args.sentence:
        for result in results:
            print(f"# {result['name']}|{result['signature']}")
        print("\t".join(["line"] + [r["name"] for r in results]))
        for number, row in enumerate(zip(*(r["scores"] for r in results)), start=1):
            print("\t".join([str(number)] + [f"{s:.2f}" for s in row]))
    else:
        for result in results:
            print(result["text"])
    return results


if __name__ == "__main__":
    run_main(main, memory_flags="--beam-size")
