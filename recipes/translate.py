"""Machine translation end to end: parallel data, sentencepiece, RNN encoder + attention decoder, training
with BLEU-based early stopping, test BLEU/chrF with greedy and beam search, examples, attention heat maps.
By default two models train side by side and the test translates with the ensemble of their last snapshots.

By default: German -> English on the Ding example sentences (Debian's trans-de-en, fetched and cached on
first use, split by a hash of the German sentence: docs/data.md). Point it at your own data with --corpus or
--train-src/...
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

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
from core.datasets import SPLITS
from core.decoder import DecoderConfig
from core.errors import UserError, check_device, flag_name
from core.runs import hold_run, save_config
from core.self_critical import SelfCritical
from core.task import read_task
from core.tokenizers import SentencePieceTokenizer, Tokenizer, WordTokenizer
from core.train_config import TrainConfig
from seq2seq.bible import bible_pairs
from seq2seq.data import (
    MAX_TEST_PAIRS,
    MAX_VALID_PAIRS,
    TOKENIZER_PAIRS,
    cap_splits,
    ding_pairs,
    hash_split,
    iter_pairs_tsv,
    read_parallel,
    spread_sample,
)
from seq2seq.encoded import encode_pairs
from seq2seq.evaluation import evaluate
from seq2seq.rerank import add_rerank_score_flags
from seq2seq.rewards import REWARDS
from seq2seq.training import (
    DEFAULT_OUT,
    RunSetup,
    check_run_flags,
    check_settings,
    plan_run,
    resumed_configs,
    run_checkpoints,
    train_models,
)
from seq2seq.translator import CONFIGS, MAX_SOURCE_LEN, EncoderConfig

EXAMPLES = """examples:
  python recipes/translate.py                                  # German -> English, Ding sentences
  python recipes/translate.py --members 1 --snapshots 0        # one model, its best checkpoint
  python recipes/translate.py --members 4 --reverse-members 1  # + a reverse model that reranks the n best
  python recipes/translate.py --members 4 --reverse-members 1 --r2l-members 1  # + a right-to-left model too
  python recipes/translate.py --corpus pairs.tsv --out runs/mine
  python recipes/translate.py --dataset bible --out runs/bible   # Spanish -> English Bible verses
  python recipes/translate.py --train-src tr.de --train-tgt tr.en --valid-src va.de --valid-tgt va.en \\
                              --test-src te.de --test-tgt te.en
  python recipes/translate.py --resume runs/translate             # continue an interrupted run exactly
  python -m seq2seq.translate @runs/translate/ensemble.args --input de.txt   # the run's ensemble, afterwards
  python -m seq2seq.translate @runs/translate/ensemble.args @runs/translate/reverse.args --beam-size 10
  python -m seq2seq.translate @runs/translate/ensemble.args @runs/translate/reverse.args \\
                              @runs/translate/r2l.args --beam-size 10
"""
SPLIT_FLAGS = [f"{part}_{side}" for part in ("train", "valid", "test") for side in ("src", "tgt")]
MEMORY_FLAGS = "--max-tokens, --hidden-dim or --members"  # what shrinks a run that runs out of memory
TASK = "translation"
YOUR_DATA = ("corpus", *SPLIT_FLAGS)
FLAGS = FlagTable(
    apart=(
        *((own, "dataset", "--dataset picks a built-in corpus, and your own files replace it") for own in YOUR_DATA),
        *((own, "data_dir", "--data-dir is where the built-in corpora are cached") for own in YOUR_DATA),
        *(
            ("corpus", split, "--corpus is split by the hash rule; the six files are split already")
            for split in SPLIT_FLAGS
        ),
        ("resume", "overwrite", "--resume goes on with a run, --overwrite starts one afresh"),
    ),
    needs=(
        ("rerank_weight", "reverse_members"),
        ("rerank_r2l_weight", "r2l_members"),
        *((name, "seq_steps") for name in ("seq_lr", "seq_samples", "seq_baseline", "reward")),
    ),
    # the checkpoints fix the models, their vocabulary and their data; the languages are compared with the
    # checkpoint (`resumed_configs`: the recipe fills them in for its own corpora)
    kept=(
        *(f.name for c in (EncoderConfig, DecoderConfig) for f in fields(c) if not f.name.endswith("_lang")),
        "level",
        "vocab_size",
        "separate_vocab",
        "dataset",
        *YOUR_DATA,
        "max_valid_pairs",
        "max_test_pairs",
        "tokenizer_pairs",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(description=__doc__, epilog=EXAMPLES)
    add_data_flags(parser)
    add_run_flags(parser, DEFAULT_OUT)
    add_ensemble_flags(parser)
    add_device_flag(parser)
    # the defaults fit ~12k sentence pairs and 20 minutes on 2 CPU cores; how each was chosen: docs/experiments.md
    add_config_flags(parser, EncoderConfig(enc_dropout=0.2, share_embeddings=True), "encoder")
    decoder = DecoderConfig(
        emb_dim=256,
        hidden_dim=256,
        cell="gru",
        attention="luong",
        dropout=0.2,
        tie_embeddings=True,
        input_feeding=False,
    )
    add_config_flags(parser, decoder, "decoder")
    training = TrainConfig(
        steps=3300,
        lr=3e-3,
        warmup_steps=100,
        valid_every=550,
        label_smoothing=0.1,
        min_lr=5e-5,
        patience=5,
        snapshots=3,
    )
    add_config_flags(parser, training, "training")
    return parser


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument(
        "--corpus",
        type=path_arg(stream=True),
        help="source TAB target per line; split by the hash rule of the default data",
    )
    for dest in SPLIT_FLAGS:
        data.add_argument(
            flag_name(dest), type=path_arg(stream=True), help="aligned files (all six together) instead of --corpus"
        )
    data.add_argument(
        "--dataset",
        default="ding",
        choices=["ding", "bible"],
        help="built-in corpus: ding "
        "(German -> English example sentences, the default) or bible (Spanish -> English verses, "
        "Reina-Valera 1909 and KJV)",
    )
    data.add_argument(
        "--data-dir",
        type=path_arg("folder", output=True),
        help="where default data is cached (default: $SEQGEN_DATA or ~/.cache/seqgen/data)",
    )
    add_size_flags(data)
    data.add_argument("--level", default="unigram", choices=["unigram", "bpe", "word"], help="token unit")
    data.add_argument("--vocab-size", type=int, default=4000, help="joint sentencepiece (or word) vocabulary size")
    data.add_argument("--separate-vocab", action="store_true", help="one tokenizer per language, not one joint")
    data.add_argument("--max-tokens", type=int, default=1000, help="padded target tokens per batch")
    data.add_argument(
        "--max-source-len",
        type=int,
        default=MAX_SOURCE_LEN,
        help="training pairs whose source has "
        "more tokens are set aside, with a warning that counts them (default: %(default)s)",
    )
    data.add_argument(
        "--max-target-len", type=int, default=MAX_SOURCE_LEN, help="likewise for the target side (default: %(default)s)"
    )
    data.add_argument(
        "--subword-alpha",
        type=float,
        default=0.0,
        help="subword regularisation: train on random "
        "segmentations, in (0, 1); unigram: smaller is more varied, bpe: merge dropout probability "
        "(default 0: off)",
    )


def add_size_flags(data: argparse._ArgumentGroup) -> None:
    """What a large corpus costs: the caps on validation and test, the tokenizer's sample (docs/data.md)."""
    data.add_argument(
        "--max-valid-pairs",
        type=int,
        default=MAX_VALID_PAIRS,
        help="the most validation pairs kept: those of the hash split whose source has the smallest sha256; the "
        "others are left out, never trained on (default: %(default)s; docs/data.md)",
    )
    data.add_argument(
        "--max-test-pairs", type=int, default=MAX_TEST_PAIRS, help="likewise for the test (default: %(default)s)"
    )
    data.add_argument(
        "--tokenizer-pairs",
        type=int,
        default=TOKENIZER_PAIRS,
        help="the tokenizer learns from at most this many training pairs, evenly spread (default: %(default)s)",
    )


def add_ensemble_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--members",
        type=int,
        help="models trained side by side (one process each, seeds --seed, "
        "--seed + 1, ...) and tested as one ensemble, spread over the GPUs when there are several; "
        "1: a single model in --out itself (default: 2; 1 under torchrun)",
    )
    parser.add_argument(
        "--reverse-members",
        type=int,
        help="models trained side by side with the others in the "
        "opposite direction (target -> source), in --out/reverse; the test then also reranks the "
        "beam's --rerank-beam-size best with their ensemble (noisy channel, `seq2seq.translate "
        "--rerank-with`) (default: 0)",
    )
    parser.add_argument(
        "--r2l-members",
        type=int,
        help="models trained side by side with the others in the same "
        "direction but writing right to left (--target-order right-to-left), in --out/r2l; the test "
        "then also reranks the beam's --rerank-beam-size best with their ensemble "
        "(`seq2seq.translate --rerank-r2l`); their seeds are --seed, --seed + 1, ... (default: 0)",
    )
    parser.add_argument("--beam-size", type=int, default=5, help="beam size for the test translations")
    parser.add_argument("--length-penalty", type=float, default=1.0, help="GNMT alpha for beam search")
    parser.add_argument(
        "--rerank-beam-size",
        type=int,
        default=10,
        help="with --reverse-members or --r2l-members: "
        "the beam size, and n-best size, of the reranked test translations",
    )
    add_rerank_score_flags(parser)  # with --reverse-members or --r2l-members
    parser.add_argument("--valid-sentences", type=int, default=500, help="validation sentences decoded for BLEU")
    add_sequence_level_flags(parser)


def add_sequence_level_flags(parser: argparse.ArgumentParser) -> None:
    seq = parser.add_argument_group("sequence-level training (after cross-entropy; core.self_critical)")
    seq.add_argument(
        "--seq-steps",
        type=int,
        default=0,
        help="steps of self-critical training of each forward member from its best checkpoint, in its folder's "
        "seq/, the sentence metric --reward as the reward (default: %(default)s, off)",
    )
    seq.add_argument("--reward", choices=REWARDS, default="bleu", help="smoothed sentence BLEU, or chrF")
    seq.add_argument("--seq-lr", type=float, default=5e-5, help="its constant learning rate (default: %(default)s)")
    seq.add_argument("--seq-samples", type=int, default=5, help="translations drawn per sentence (default: 5)")
    seq.add_argument(
        "--seq-baseline",
        choices=SelfCritical.CHOICES["baseline"],
        default="greedy",
        help="greedy: the greedy translation's reward; mean: the other samples' (default: %(default)s)",
    )


def load_pairs(args: argparse.Namespace) -> dict[str, list[tuple[str, str]]]:
    """train/valid/test pairs from the flags, validation and test capped (--max-valid-pairs, --max-test-pairs);
    pairs left out by the caps go nowhere."""
    splits = uncapped_pairs(args)
    capped = cap_splits(splits, args.max_valid_pairs, args.max_test_pairs)
    for name, flag in (("valid", "--max-valid-pairs"), ("test", "--max-test-pairs")):
        if len(capped[name]) < len(splits[name]):
            print(
                f"{name}: {len(capped[name]):,} of its {len(splits[name]):,} pairs kept ({flag}); the rest never train"
            )
    return capped


def uncapped_pairs(args: argparse.Namespace) -> dict[str, list[tuple[str, str]]]:
    """train/valid/test pairs from the flags: six aligned files, a TSV file, or the default Ding corpus."""
    files = [getattr(args, dest) for dest in SPLIT_FLAGS]
    if any(files):
        if not all(files):
            raise UserError(f"give all six of {', '.join(map(flag_name, SPLIT_FLAGS))} or none")
        return {part: read_parallel(files[2 * i], files[2 * i + 1]) for i, part in enumerate(SPLITS)}
    if args.corpus:
        splits = hash_split(iter_pairs_tsv(args.corpus, progress=True))
        if not splits["valid"] or not splits["test"]:
            raise UserError(f"{args.corpus} is too small: the hash split left no validation or test pairs")
        return splits
    return bible_pairs(args.data_dir) if args.dataset == "bible" else ding_pairs(args.data_dir)


def data_languages(args: argparse.Namespace) -> dict[str, str]:
    """--source-lang and --target-lang, or the default corpora's languages; your own files' are not guessed
    (file names say too little: train.src, data.tok.en.gz)."""
    own_files = args.corpus or args.train_src or args.train_tgt
    known = ("", "") if own_files else ("es", "en") if args.dataset == "bible" else ("de", "en")
    return {
        "source_lang": args.source_lang.strip().lower() or known[0],
        "target_lang": args.target_lang.strip().lower() or known[1],
    }


def train_tokenizers(args: argparse.Namespace, train: list[tuple[str, str]]) -> tuple[dict, dict]:
    """The source and target tokenizers (one joint, or one per language with --separate-vocab), as plain data,
    learnt from --tokenizer-pairs of the training pairs (all of them when there are no more)."""
    sample = spread_sample(train, args.tokenizer_pairs)
    if len(sample) < len(train):
        print(f"tokenizer: learnt from {len(sample):,} of the {len(train):,} training pairs (--tokenizer-pairs)")

    def make(text: str) -> Tokenizer:
        if args.level == "word":
            return WordTokenizer.train(text, max_size=args.vocab_size)
        return SentencePieceTokenizer.train(text, vocab_size=args.vocab_size, model_type=args.level)

    sources, targets = "\n".join(s for s, _ in sample), "\n".join(t for _, t in sample)
    tokenizers = (make(sources), make(targets)) if args.separate_vocab else (make(sources + "\n" + targets),) * 2
    return tokenizers[0].to_dict(), tokenizers[1].to_dict()


def main(argv: list[str] | None = None) -> dict:
    args = parse_flags(build_parser(), argv, FLAGS, TASK)
    out, resume = plan_run(args, default_members=1 if distributed.launched() else 2)
    # all checked before the data is read; a resumed run's flags come from its config.json, so first its task
    ckpt, configs, _ = read_task(resume[0], TASK, CONFIGS) if args.resume else (None, None, None)
    check_run_flags(args)
    if ckpt is not None:
        enc_config, dec_config = resumed_configs(args, configs)
    else:
        enc_config = config_from_args(EncoderConfig, args, **data_languages(args))
        dec_config = config_from_args(DecoderConfig, args)
    train_config = config_from_args(TrainConfig, args)
    world, device = distributed.setup(check_device("--device", args.device))
    if world.main:
        hold_run(out)  # one writer: a second run (or --resume) on this folder is refused while this one trains

    # Data and tokenizers (a resumed run takes its tokenizers from its checkpoint).
    with world.main_first():  # the main process fills the data cache; the others then read it
        pairs = load_pairs(args)
    print("pairs: " + ", ".join(f"{k} {len(v)}" for k, v in pairs.items()))
    if ckpt is not None:
        tokenizers = (ckpt["tokenizers"]["source"], ckpt["tokenizers"]["target"])
    else:
        tokenizers = world.from_main(train_tokenizers(args, pairs["train"]) if world.main else None)
    check_settings(args, tokenizers, enc_config, dec_config)
    if world.main:  # one writer
        data = {"corpus": args.corpus or args.dataset, "joint": not args.separate_vocab}
        data |= {name: getattr(args, name) for name in ("level", "vocab_size", "max_tokens", "subword_alpha")}
        ensemble = {name: getattr(args, name) for name in ("members", "reverse_members", "r2l_members")}
        save_config(
            out,
            task=TASK,
            flags=vars(args),
            encoder=enc_config,
            decoder=dec_config,
            train=train_config,
            data=data,
            ensemble=ensemble | {"snapshots": train_config.snapshots},
        )

    # The models: the forward members and the reranking models, side by side, on the training pairs encoded once.
    train = encode_pairs(pairs["train"], tokenizers)
    kept = pairs if args.subword_alpha else pairs | {"train": []}  # (sampled segmentations need the text)
    run = RunSetup(args, kept, tokenizers, enc_config, dec_config, train_config, device, train=train)
    train_seconds = train_models(run, out, resume, MEMORY_FLAGS)
    if train_seconds is None:  # not the main process
        return {}

    # Test: greedy, beam and reranked beam; examples and attention maps.
    figures = {name: getattr(args, name) for name in ("members", "reverse_members", "r2l_members")}
    return evaluate(
        args,
        out,
        run_checkpoints(args, out),
        pairs["test"],
        device,
        {"train_seconds": round(train_seconds, 1), **figures},
    )


if __name__ == "__main__":
    run_main(main, memory_flags=MEMORY_FLAGS)
