"""Caption pictures with a trained captioner: `python -m captioning.caption --checkpoint CK PICTURE...`.

One caption line per picture, in the order given; a folder stands for its pictures (sorted by name), `-` reads
paths from standard input, one per line. With --n-best N (beam search), N lines per picture, best first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from captioning.captioner import DEFAULT_SEARCH, Captioner
from captioning.figures import save_caption_attention_png
from core.cli import DTYPES, Parser, add_device_flag, add_dtype_flag, add_search_flags, search_config_from_args
from core.console import run_main
from core.errors import UserError, check_device, check_range

PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__)
    p.add_argument("pictures", nargs="+", metavar="PICTURE", help="picture files, folders of them, or - (stdin)")
    p.add_argument("--checkpoint", required=True, help="a captioning checkpoint (e.g. runs/caption/best.pt)")
    p.add_argument("--batch-size", type=int, default=32, help="pictures captioned together")
    p.add_argument(
        "--attention-png",
        metavar="OUT",
        help="also draw the first picture's caption, each word with its attention over the picture, to this PNG",
    )
    p.add_argument("--with-names", action="store_true", help="print each picture's path and a tab before its caption")
    add_device_flag(p)
    add_dtype_flag(p)
    add_search_flags(p, DEFAULT_SEARCH)
    return p


def picture_paths(names: list[str]) -> list[Path]:
    """The pictures the arguments name: files as given, a folder's pictures by name, `-`: paths read from stdin."""
    found: list[Path] = []
    for name in names:
        if name == "-":
            found += [Path(line.strip()) for line in sys.stdin if line.strip()]
        elif Path(name).is_dir():
            inside = sorted(p for p in Path(name).iterdir() if p.suffix.lower() in PICTURE_SUFFIXES and p.is_file())
            if not inside:
                raise UserError(f"folder {name} holds no pictures ({', '.join(sorted(PICTURE_SUFFIXES))})")
            found += inside
        else:
            found.append(Path(name))
    if not found:
        raise UserError("no pictures given (standard input was empty)")
    return found


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_range("--batch-size", args.batch_size, 1)
    config = search_config_from_args(parser, args, argv)
    device = check_device("--device", args.device)
    paths = picture_paths(args.pictures)
    model = Captioner.load(args.checkpoint, device=device, dtype=DTYPES[args.dtype])
    for start in range(0, len(paths), args.batch_size):  # printed batch by batch: a long list shows progress
        chunk = paths[start : start + args.batch_size]
        for path, nbest in zip(chunk, model.search(chunk, config, batch_size=args.batch_size)):
            for hypothesis in nbest:
                text = model.tokenizer.decode(hypothesis.tokens)
                print(f"{path}\t{text}" if args.with_names else text, flush=True)
    if args.attention_png:
        words, maps = model.attention(paths[0], config)
        drawn = save_caption_attention_png(args.attention_png, paths[0], words, maps)
        print(f"attention of {paths[0]}'s caption: {drawn}", file=sys.stderr)


if __name__ == "__main__":
    run_main(main, memory_flags="--batch-size or --beam-size")
