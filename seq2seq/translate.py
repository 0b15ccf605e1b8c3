"""Translate with a trained checkpoint: `python -m seq2seq.translate --checkpoint CK [--input FILE]`
(`--checkpoint` repeated: an ensemble; `@FILE` reads flags from FILE, one per line or a flag and its value
per line, such as the `ensemble.args` that the translation recipe writes).

Without --input it reads sentences from the terminal, one per line, and answers each at once.
`--method sample` draws translations (`--temperature`, `--top-k`, `--top-p`, `--seed`), as for back-translation.
`--rerank-with REVERSE.pt` picks among the beam's best with a model (or, repeated, an ensemble) trained in the
opposite direction, `--rerank-r2l R2L.pt` with one of the same direction that writes right to left, or both.
"""
from __future__ import annotations

import argparse
import sys

from core.allocator import keep_freed_memory
from core.cli import DTYPES, ArgsFileParser, add_dtype_flag, add_search_flags, resolve_device, run_main
from core.errors import MAX_SEED, UserError, check_range
from seq2seq.bleu import add_rerank_flags, check_rerank_flags, rerank_options
from seq2seq.data import read_lines
from seq2seq.translator import load_ensemble, load_rerankers


def build_parser() -> argparse.ArgumentParser:
    p = ArgsFileParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, action="append",
                   help="a translation checkpoint (e.g. runs/translate/member1/best.pt); repeat it to translate with "
                        "an ensemble of several (the mean of their next-token probabilities), or give a recipe run's "
                        "list: @runs/translate/ensemble.args")
    p.add_argument("--input", help="a UTF-8 file, one source sentence per line (default: read the terminal)")
    p.add_argument("--method", default="beam", choices=["greedy", "sample", "beam"])
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--n-best", type=int, default=1, help="print the n best translations with their scores")
    p.add_argument("--length-penalty", type=float, default=1.0, help="GNMT alpha for beam search")
    p.add_argument("--max-len-ratio", type=float, default=1.5,
                   help="a translation stops at this many times its source's tokens, plus 10 (default: %(default)s)")
    add_search_flags(p)
    p.add_argument("--seed", type=int, help="for reproducible samples (same input and --batch-size)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_rerank_flags(p)
    add_dtype_flag(p)
    return p


def check_flags(args: argparse.Namespace) -> None:
    """Before the first sentence is typed, not after: ranges, and flags that the method would ignore."""
    check_range("--batch-size", args.batch_size, 1)
    check_range("--n-best", args.n_best, 1)
    check_range("--beam-size", args.beam_size, 1)
    check_range("--length-penalty", args.length_penalty)
    check_range("--max-len-ratio", args.max_len_ratio, 0, 10)
    check_range("--no-repeat-ngram", args.no_repeat_ngram, 0)
    check_range("--repetition-penalty", args.repetition_penalty, 0, low_open=True)
    check_range("--temperature", args.temperature, 0, low_open=True)
    check_range("--top-k", args.top_k, 0)
    check_range("--top-p", args.top_p, 0, 1, low_open=True)
    if args.seed is not None:
        check_range("--seed", args.seed, 0, MAX_SEED)
    if args.n_best > 1 and args.method != "beam":
        raise UserError(f"--n-best {args.n_best} lists the best of beam search; it does not go with --method "
                        f"{args.method}")
    sampling = [flag for flag, value, default in (("--temperature", args.temperature, 1.0), ("--top-k", args.top_k, 0),
                                                  ("--top-p", args.top_p, 1.0), ("--seed", args.seed, None))
                if value != default]
    if sampling and args.method != "sample":
        raise UserError(f"{sampling[0]} sets how --method sample draws; it does not go with --method {args.method}")


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    flag = check_rerank_flags(args)
    if flag and args.n_best > 1:
        raise UserError(f"{flag} prints the reranked best translation; it does not go with --n-best")
    check_flags(args)
    keep_freed_memory()
    device, dtype = resolve_device(args.device), DTYPES[args.dtype]
    model, others = load_ensemble(args.checkpoint, device=device, dtype=dtype)
    rerankers = load_rerankers(**rerank_options(args), device=device, dtype=dtype, forward=model)
    options = dict(method=args.method, beam_size=args.beam_size, length_penalty=args.length_penalty,
                   max_len_ratio=args.max_len_ratio, no_repeat_ngram=args.no_repeat_ngram,
                   repetition_penalty=args.repetition_penalty, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, seed=args.seed, batch_size=args.batch_size, ensemble_with=others)

    def show(sentences: list[str]) -> None:
        if rerankers:
            for text in model.translate_reranked(sentences, **rerankers, **options):
                print(text)
        elif args.n_best > 1:
            for i, nbest in enumerate(model.translate_nbest(sentences, args.n_best, **options)):
                for text, score in nbest:
                    print(f"{i}\t{score:.4f}\t{text}")
        else:
            for text in model.translate(sentences, **options):
                print(text)
        sys.stdout.flush()

    if args.input:
        show(read_lines(args.input))
        return
    if sys.stdin.isatty():
        print("type a sentence and press Enter (Ctrl-D to quit)", file=sys.stderr)
    for number, line in enumerate(sys.stdin, start=1):
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes arrive as lone surrogates under a C/POSIX locale
            raise UserError(f"line {number} of the standard input is not UTF-8 text") from None
        show([line.rstrip("\n")])


if __name__ == "__main__":
    run_main(main, memory_flags="--batch-size, --beam-size")
