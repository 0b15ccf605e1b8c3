"""Continue a prompt with a trained language model: `python -m core.generate --checkpoint CK --prompt "..."`.

Sampling a single continuation streams it to the terminal token by token.
"""

from __future__ import annotations

import argparse
import sys

from core.cli import (
    DTYPES,
    FlagTable,
    Parser,
    add_device_flag,
    add_dtype_flag,
    add_search_flags,
    parse_flags,
    path_arg,
    search_config_from_args,
)
from core.console import keep_freed_memory, run_main
from core.errors import check_device, check_range
from core.files import decode_text, read_bytes
from core.lm import DEFAULT_SEARCH, LanguageModel

MEMORY_FLAGS = "--beam-size or --max-len"  # what shrinks a search that runs out of memory
FLAGS = FlagTable(apart=(("prompt", "prompt_file", "the prompt is either given or read from a file"),))


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__)
    p.add_argument(
        "--checkpoint",
        required=True,
        type=path_arg(stream=True),
        help="a textgen checkpoint (e.g. runs/textgen/best.pt)",
    )
    p.add_argument("--prompt", default="", help="text to continue (empty: start from <bos>)")
    p.add_argument(
        "--prompt-file",
        type=path_arg(stream=True),
        help="read the prompt from this UTF-8 file (- for the standard input), as it is, line ends included",
    )
    p.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="draws to print (decoded a batch at a time), or the n best of beam search",
    )
    add_device_flag(p)
    add_dtype_flag(p)
    add_search_flags(p, DEFAULT_SEARCH, skip=("n_best",))
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parse_flags(parser, argv, FLAGS)
    check_range("--num-samples", args.num_samples, 1)
    config = search_config_from_args(parser, args, argv)
    prompt = decode_text(read_bytes(args.prompt_file), args.prompt_file) if args.prompt_file else args.prompt
    keep_freed_memory()
    model = LanguageModel.load(args.checkpoint, device=check_device("--device", args.device), dtype=DTYPES[args.dtype])
    if args.num_samples == 1 and config.method != "beam":
        pieces = model.stream(prompt, config)
        first = next(pieces, "")  # arguments are checked before anything is printed
        sys.stdout.write(prompt + first)
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    for i, text in enumerate(model.continuations(prompt, args.num_samples, config)):  # printed as they come
        if args.num_samples > 1:
            print(f"--- {i + 1} ---")
        print(prompt + text, flush=True)


if __name__ == "__main__":
    run_main(main, memory_flags=MEMORY_FLAGS)
