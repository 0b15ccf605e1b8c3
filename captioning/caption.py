"""Caption pictures with a trained captioner: `python -m captioning.caption --checkpoint CK PICTURE...`.

One caption line per picture, in the order given; a folder stands for its pictures (sorted by name), `-` reads
paths from standard input, one per line. With --n-best N (beam search), N lines per picture, best first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image

from captioning.captioner import DEFAULT_SEARCH, Captioner
from captioning.figures import save_caption_attention_png
from captioning.images import load_image
from core.cli import (
    DTYPES,
    Parser,
    add_device_flag,
    add_dtype_flag,
    add_search_flags,
    path_arg,
    search_config_from_args,
)
from core.console import run_main
from core.errors import UserError, check_device, check_range
from core.files import STDIN, read_text

PICTURE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff"}


MAX_BATCH = 1024  # pictures captioned together at most: the memory a batch holds is bounded by it


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__)
    p.add_argument(
        "pictures",
        nargs="+",
        metavar="PICTURE",
        type=path_arg("any", stream=True),
        help="picture files (or pipes), folders of them, or - (their paths, one per line, on stdin)",
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        type=path_arg(stream=True),
        help="a captioning checkpoint (e.g. runs/caption/best.pt)",
    )
    p.add_argument("--batch-size", type=int, default=32, help=f"pictures captioned together (at most {MAX_BATCH})")
    p.add_argument(
        "--attention-png",
        metavar="OUT",
        type=path_arg(output=True, suffix=".png"),
        help="also draw the first picture's caption, each word with its attention over the picture, to this PNG file",
    )
    p.add_argument(
        "--with-names",
        action="store_true",
        help="print each picture's path and a tab before its caption "
        "(a tab, a line break or a backslash in a name written as \\t, \\n, \\\\)",
    )
    add_device_flag(p)
    add_dtype_flag(p)
    add_search_flags(p, DEFAULT_SEARCH)
    return p


def pictures_named(names: list[str]) -> list[tuple[str, Path | Image.Image]]:
    """(name, picture) for each picture the arguments name, in order: files as given, a folder's pictures by name,
    `-`: the paths listed on the standard input; a pipe is read at once (it cannot be read twice)."""
    found: list[tuple[str, Path | Image.Image]] = []
    for name in names:
        path = Path(name)
        if name in STDIN:
            found += [(line.strip(), Path(line.strip())) for line in read_text(name).split("\n") if line.strip()]
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir() if p.suffix.lower() in PICTURE_SUFFIXES and p.is_file())
            if not inside:
                raise UserError(f"folder {name} holds no pictures ({', '.join(sorted(PICTURE_SUFFIXES))})")
            found += [(str(p), p) for p in inside]
        else:
            found.append((name, path if path.is_file() else load_image(path)))
    return found


def shown(name: str) -> str:
    """A picture's name on one output line: tabs, line breaks and backslashes escaped."""
    return name.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_range("--batch-size", args.batch_size, 1, MAX_BATCH)
    config = search_config_from_args(parser, args, argv)
    device = check_device("--device", args.device)
    pictures = pictures_named(args.pictures)
    model = Captioner.load(args.checkpoint, device=device, dtype=DTYPES[args.dtype])
    for start in range(0, len(pictures), args.batch_size):  # printed batch by batch: a long list shows progress
        chunk = pictures[start : start + args.batch_size]
        for (name, _), nbest in zip(chunk, model.search([p for _, p in chunk], config, batch_size=args.batch_size)):
            for hypothesis in nbest:
                text = model.tokenizer.decode(hypothesis.tokens)
                print(f"{shown(name)}\t{text}" if args.with_names else text, flush=True)
    if args.attention_png and pictures:
        name, picture = pictures[0]
        words, maps = model.attention(picture, config)
        drawn = save_caption_attention_png(args.attention_png, picture, words, maps)
        print(f"attention of {name}'s caption: {drawn}", file=sys.stderr)


if __name__ == "__main__":
    run_main(main, memory_flags="--batch-size or --beam-size")
