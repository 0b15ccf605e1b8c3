"""Continue a prompt with a trained language model: `python -m core.generate --checkpoint CK --prompt "..."`.

Sampling a single continuation streams it to the terminal token by token.
"""
from __future__ import annotations

import argparse
import sys

from core.allocator import keep_freed_memory
from core.cli import DTYPES, add_dtype_flag, add_search_flags, resolve_device, run_main
from core.errors import MAX_SEED, check_range
from core.lm import LanguageModel


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a textgen checkpoint (e.g. runs/textgen/best.pt)")
    p.add_argument("--prompt", default="", help="text to continue (empty: start from <bos>)")
    p.add_argument("--method", default="sample", choices=["greedy", "sample", "beam"])
    add_search_flags(p)
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--length-penalty", type=float, default=0.0, help="GNMT alpha for beam search")
    p.add_argument("--max-len", type=int, default=200, help="tokens to generate at most")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, help="for reproducible samples")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    add_dtype_flag(p)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_range("--num-samples", args.num_samples, 1)
    if args.seed is not None:
        check_range("--seed", args.seed, 0, MAX_SEED)
    keep_freed_memory()
    model = LanguageModel.load(args.checkpoint, device=resolve_device(args.device), dtype=DTYPES[args.dtype])
    options = dict(method=args.method, max_len=args.max_len, temperature=args.temperature, top_k=args.top_k,
                   top_p=args.top_p, no_repeat_ngram=args.no_repeat_ngram,
                   repetition_penalty=args.repetition_penalty, seed=args.seed)
    if args.num_samples == 1 and args.method != "beam":
        pieces = model.stream(args.prompt, **options)
        first = next(pieces, "")  # arguments are checked before anything is printed
        sys.stdout.write(args.prompt + first)
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    texts = model.generate_many(args.prompt, args.num_samples, beam_size=args.beam_size,
                                length_penalty=args.length_penalty, **options)
    for i, text in enumerate(texts):
        if args.num_samples > 1:
            print(f"--- {i + 1} ---")
        print(args.prompt + text)


if __name__ == "__main__":
    run_main(main, memory_flags="--beam-size, --num-samples")
