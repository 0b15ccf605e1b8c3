"""Score translations with sacreBLEU: corpus BLEU and chrF with their signatures, like the `sacrebleu` command.

    python -m seq2seq.bleu HYP --ref REF [--ref REF2 ...] [--tokenize 13a] [--lowercase] [--json] [--sentence]
    python -m seq2seq.bleu --checkpoint CK --src SRC --ref REF [--method beam --beam-size 5]
    python -m seq2seq.bleu --checkpoint CK1 --checkpoint CK2 --src SRC --ref REF   # an ensemble

The scores are the sacrebleu library's own, so they can be quoted with the printed signature.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from sacrebleu.metrics import BLEU

from core.cli import (
    DTYPES,
    ArgsFileParser,
    add_device_flag,
    add_dtype_flag,
    add_search_flags,
    path_arg,
    search_config_from_args,
)
from core.console import keep_freed_memory, run_main
from core.errors import UserError, check_device
from core.files import read_lines
from core.search_config import SearchConfig
from seq2seq.metrics import METRICS, score_files, sentence_scores
from seq2seq.rerank import add_rerank_flags, check_rerank_flags, rerank_options, translate_file
from seq2seq.translator import DEFAULT_SEARCH


def _parser() -> argparse.ArgumentParser:
    parser = ArgsFileParser(
        prog="python -m seq2seq.bleu",
        description=__doc__.split("\n\n")[0],
        epilog="Either give HYP (one translation per line), or --checkpoint and --src to translate first. "
        "@FILE reads flags from FILE, one per line, or a flag and its value per line (e.g. the recipe's "
        "ensemble.args).",
    )
    parser.add_argument(
        "hyp",
        nargs="?",
        metavar="HYP",
        type=path_arg(stream=True),
        help="hypothesis file, one sentence per line (- for the standard input)",
    )
    parser.add_argument(
        "--ref",
        action="append",
        required=True,
        metavar="REF",
        type=path_arg(stream=True),
        help="reference file aligned with HYP; repeat for several references",
    )
    parser.add_argument(
        "--tokenize",
        default=BLEU.TOKENIZER_DEFAULT,
        choices=sorted(BLEU.TOKENIZERS),
        help="BLEU tokenizer (default: %(default)s)",
    )
    parser.add_argument("--lowercase", action="store_true", help="case-insensitive scores")
    parser.add_argument(
        "--metrics", nargs="+", default=list(METRICS), choices=METRICS, help="metrics to compute (default: bleu chrf)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--sentence", action="store_true", help="print a score for every line")
    translate = parser.add_argument_group("translate, then score")
    translate.add_argument(
        "--checkpoint",
        action="append",
        metavar="CK",
        type=path_arg(stream=True),
        help="translation checkpoint to translate --src with; repeat to translate with an "
        "ensemble of several (the mean of their next-token probabilities)",
    )
    translate.add_argument(
        "--src", metavar="SRC", type=path_arg(stream=True), help="source sentences, one per line, aligned with --ref"
    )
    add_device_flag(translate)
    add_rerank_flags(translate)
    add_dtype_flag(translate)
    add_search_flags(parser, DEFAULT_SEARCH, skip=("n_best",))
    return parser


TRANSLATION_FLAGS = (
    "src",
    "rerank_with",
    "rerank_r2l",
    "rerank_weight",
    "rerank_r2l_weight",
    "rerank_length_penalty",
    "dtype",
    "device",
    *(f.name for f in fields(SearchConfig) if f.name != "n_best"),
)


def _hypotheses(
    parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None, n_refs: int
) -> list[str]:
    """The hypothesis lines: read from HYP, or translated from --src with --checkpoint."""
    if args.checkpoint is None:
        if args.hyp is None:
            raise UserError("give a hypothesis file HYP, or --checkpoint CK --src SRC to translate one")
        given = [name for name in TRANSLATION_FLAGS if getattr(args, name) != parser.get_default(name)]
        if given:
            raise UserError(f"--{given[0].replace('_', '-')} is only used with --checkpoint (translate, then score)")
        return read_lines(args.hyp)
    if args.hyp is not None:
        raise UserError("give either HYP or --checkpoint, not both")
    if args.src is None:
        raise UserError("--checkpoint needs --src SRC, the sentences to translate")
    config = search_config_from_args(parser, args, argv)
    check_rerank_flags(args)
    src = read_lines(args.src)
    if len(src) != n_refs:  # fail before the slow part
        raise UserError(f"source file {args.src} has {len(src)} lines but reference file {args.ref[0]} has {n_refs}")
    keep_freed_memory()
    return translate_file(
        args.checkpoint, src, config, check_device("--device", args.device), DTYPES[args.dtype], **rerank_options(args)
    )


def main(argv: list[str] | None = None) -> list[dict]:
    """Score a hypothesis file (or a checkpoint's translations) against references and print the scores."""
    parser = _parser()
    args = parser.parse_args(argv)
    refs = [read_lines(path) for path in args.ref]
    for path, ref in zip(args.ref[1:], refs[1:]):
        if len(ref) != len(refs[0]):
            raise UserError(
                f"reference file {args.ref[0]} has {len(refs[0])} lines but reference file {path} has {len(ref)}"
            )
    hyps = _hypotheses(parser, args, argv, len(refs[0]))
    if len(hyps) != len(refs[0]):
        what = f"hypothesis file {args.hyp}" if args.hyp else f"the translation of {args.src}"
        raise UserError(f"{what} has {len(hyps)} lines but reference file {args.ref[0]} has {len(refs[0])}")

    score = sentence_scores if args.sentence else score_files
    results = score(hyps, refs, args.metrics, args.tokenize, args.lowercase)
    if args.json:
        report = {"hyp": args.hyp, "refs": args.ref, "sentences" if args.sentence else "scores": results}
        if args.checkpoint:
            report.update(
                checkpoint=args.checkpoint,
                src=args.src,
                method=args.method,
                beam_size=args.beam_size,
                length_penalty=args.length_penalty,
                max_len=args.max_len,
                temperature=args.temperature,
                top_k=args.top_k,
                top_p=args.top_p,
                seed=args.seed,
                dtype=args.dtype,
                rerank_with=args.rerank_with,
                rerank_weight=args.rerank_weight,
                rerank_r2l=args.rerank_r2l,
                rerank_r2l_weight=args.rerank_r2l_weight,
                rerank_length_penalty=args.rerank_length_penalty,
            )
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
