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
from core.errors import UserError, check_device, check_range
from core.files import read_lines, stdin_lines
from seq2seq.rerank import add_rerank_flags, check_rerank_flags, load_rerankers, rerank_options, translate_reranked
from seq2seq.translator import DEFAULT_SEARCH, MAX_SOURCE_LEN, load_ensemble


def build_parser() -> argparse.ArgumentParser:
    p = ArgsFileParser(description=__doc__)
    p.add_argument(
        "--checkpoint",
        required=True,
        action="append",
        type=path_arg(stream=True),
        help="a translation checkpoint (e.g. runs/translate/member1/best.pt); repeat it to translate with "
        "an ensemble of several (the mean of their next-token probabilities), or give a recipe run's "
        "list: @runs/translate/ensemble.args",
    )
    p.add_argument(
        "--input",
        type=path_arg(stream=True),
        help="a UTF-8 file, one source sentence per line "
        "(default: the standard input: a terminal's lines one by one, a pipe's in batches)",
    )
    p.add_argument(
        "--max-len-ratio",
        type=float,
        default=1.5,
        help="a translation stops at this many times its source's tokens, plus 10 (default: %(default)s)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--max-source-len",
        type=int,
        default=MAX_SOURCE_LEN,
        help="source tokens a line may have; a longer line is refused, naming its number, before anything "
        "is translated (split it). Decoding holds at most --batch-size x --beam-size x 1000 x this "
        "float32 attention weights: 1.3 GB at the defaults (default: %(default)s)",
    )
    add_device_flag(p)
    add_rerank_flags(p)
    add_dtype_flag(p)
    add_search_flags(p, DEFAULT_SEARCH)
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    # checked before the first sentence is typed, not after
    flag = check_rerank_flags(args)
    if flag and args.n_best > 1:
        raise UserError(f"{flag} prints the reranked best translation; it does not go with --n-best")
    config = search_config_from_args(parser, args, argv)
    check_range("--batch-size", args.batch_size, 1)
    check_range("--max-source-len", args.max_source_len, 1)
    check_range("--max-len-ratio", args.max_len_ratio, 0, 10)
    keep_freed_memory()
    device, dtype = check_device("--device", args.device), DTYPES[args.dtype]
    model, others = load_ensemble(args.checkpoint, device=device, dtype=dtype)
    rerankers = load_rerankers(**rerank_options(args), device=device, dtype=dtype, forward=model)
    options = dict(
        max_len_ratio=args.max_len_ratio,
        batch_size=args.batch_size,
        ensemble_with=others,
        max_source_len=args.max_source_len,
    )

    def show(sentences: list[str], first: int) -> None:
        """Print one line per sentence (with --n-best, n lines numbered by the sentence, from 0)."""
        if rerankers:
            best = translate_reranked(model, sentences, config=config, beam_size=config.beam_size, **rerankers,
                                      **options)  # fmt: skip
            lines = [one_line(text) for text in best]
        elif config.n_best > 1:
            nbests = model.translate_nbest(sentences, config.n_best, config, **options)
            lines = [f"{first + i}\t{score:.4f}\t{one_line(text)}" for i, nbest in enumerate(nbests)
                     for text, score in nbest]  # fmt: skip
        else:
            lines = [one_line(text) for text in model.translate(sentences, config, **options)]
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()

    if args.input:
        lines = read_lines(args.input)
        model.check_source_lengths(lines, args.max_source_len, f"line {{}} of {args.input}", first=1)
        show(lines, 0)
        return
    if sys.stdin is not None and sys.stdin.isatty():
        print("type a sentence and press Enter (Ctrl-D to quit)", file=sys.stderr)
    done = 0
    for lines in stdin_lines(args.batch_size):  # a pipe's lines in batches, as a file's; a terminal's one by one
        model.check_source_lengths(lines, args.max_source_len, "line {} of the standard input", first=done + 1)
        show(lines, done)
        done += len(lines)


def one_line(text: str) -> str:
    """A translation as one output line: a line break the model wrote would misalign every line after it."""
    return " ".join(text.splitlines())


if __name__ == "__main__":
    run_main(main, memory_flags="--batch-size or --beam-size")
