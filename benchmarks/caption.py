"""Captioning speed; prints one JSON object.

- `extraction`: pictures/s through a frozen backbone (EfficientNet-Lite0 and ResNet-18, random weights: speed
  does not depend on their values), batch 64 of 224 px pictures already decoded and transformed.
- `captioning`: captions/s, greedy and beam 5, of a captioner over cached feature regions (Lite0's 7 x 7 x 1280)
  at batch 64: a trained checkpoint's (--checkpoint), else the recipe's default sizes with random weights and a
  1,000-word vocabulary, every caption then running to --max-len words.

    python benchmarks/caption.py
    python benchmarks/caption.py --checkpoint runs/caption/best.pt
    python benchmarks/caption.py --quick      # tiny sizes (smoke test)
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.common import environment, log, median_time  # noqa: E402
from captioning.backbones import build_backbone  # noqa: E402
from captioning.captioner import Captioner, ImageConfig  # noqa: E402
from core.decoder import DecoderConfig  # noqa: E402
from core.tokenizers import WordTokenizer  # noqa: E402

BACKBONES = ("efficientnet_lite0", "resnet18")


def extraction(name: str, batch: int, size: int, repeats: int) -> dict:
    backbone = build_backbone(name, None).eval()
    pictures = torch.randn(batch, 3, size, size)
    with torch.no_grad():
        seconds, _, _ = median_time(lambda: backbone(pictures), repeats)
    return {"pictures_per_s": round(batch / seconds, 1), "seconds_median": round(seconds, 4)}


def random_captioner(quick: bool) -> Captioner:
    words = WordTokenizer([f"w{i}" for i in range(60 if quick else 996)])  # 1,000 with the four specials
    decoder = DecoderConfig(
        emb_dim=16 if quick else 256,
        hidden_dim=16 if quick else 512,
        cell="lstm",
        attention="bahdanau",
        dropout=0.0,
        input_feeding=False,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random backbone weights: they are not used here
        return Captioner(words, ImageConfig(), decoder, weights=None).eval()


def captioning(model: Captioner, batch: int, regions: int, max_len: int, beam: int, repeats: int) -> dict:
    features = torch.randn(batch, regions, model.encoder.memory_dim).relu().half()  # as the cache holds them
    found = {}
    for name, options in (("greedy", dict(method="greedy")), (f"beam_{beam}", dict(method="beam", beam_size=beam))):
        seconds, _, captions = median_time(
            lambda options=options: model.caption(features, batch_size=batch, max_len=max_len, **options), repeats
        )
        words = sum(len(c.split()) for c in captions)
        found[name] = {
            "captions_per_s": round(batch / seconds, 1),
            "words_per_caption": round(words / batch, 1),
            "seconds_median": round(seconds, 4),
        }
    return found


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="a captioning checkpoint (default: random weights, the recipe's sizes)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--size", type=int, default=224, help="picture side in pixels")
    p.add_argument("--max-len", type=int, default=20, help="words per caption at most")
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up; the median is reported")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds (smoke test)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    batch, size = (4, 64) if args.quick else (args.batch, args.size)
    out: dict = {
        "benchmark": "caption",
        "config": {**vars(args), "batch": batch, "size": size},
        "environment_before": environment(),
    }
    out["extraction"] = {}
    for name in BACKBONES:
        log(f"feature extraction, {name}, batch {batch}, {size} px")
        out["extraction"][name] = extraction(name, batch, size, 1 if args.quick else args.repeats)
    model = Captioner.load(args.checkpoint) if args.checkpoint else random_captioner(args.quick)
    regions = (-(-size // 32)) ** 2
    log(f"captioning from cached features: batch {batch}, {regions} regions")
    with torch.no_grad():
        out["captioning"] = captioning(
            model, batch, regions, args.max_len, args.beam, 1 if args.quick else args.repeats
        )
    out["environment"] = environment()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
