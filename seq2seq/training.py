"""A translation run of several models: ensemble members trained side by side (one process each), and the
reverse and right-to-left models that rerank their n best; each in its own folder of the run, resumed and
tested together. The recipe (recipes/translate.py) reads its data and flags and hands over to this module."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import torch

from core import distributed
from core.checkpoint import load_checkpoint
from core.decoder import DecoderConfig
from core.errors import MAX_SEED, Interrupted, UserError, check_range
from core.runs import hold_run, run_folder, snapshots_in
from core.self_critical import SelfCritical, self_critical
from core.task import load_weights
from core.tokenizers import MIN_VOCAB, tokenizer_from_dict
from core.train_config import TrainConfig
from core.trainer import Trainer
from seq2seq.batching import BucketBatches, SampledSubwords, encoded_batches, pair_batches
from seq2seq.encoded import EncodedPairs, Examples, encode_pairs, trainable
from seq2seq.metrics import score_files
from seq2seq.parallel import most_side_by_side, run_side_by_side
from seq2seq.rerank import check_rerank_score_flags
from seq2seq.rewards import sentence_reward, translation_episode
from seq2seq.translator import EncoderConfig, Translator, seq2seq_forward

DEFAULT_OUT = "runs/translate"
# the models a run may train beside the forward members, to rerank their n best: folder (and flag) name -> what
RERANKERS = {"reverse": "reverse model", "r2l": "right-to-left model"}


def member_folders(out: Path, members: int) -> list[Path]:
    """Where each model of the run trains: out itself for one, out/memberK for an ensemble of several."""
    return [out] if members == 1 else [out / f"member{k}" for k in range(1, members + 1)]


def reranker_folders(out: Path, kind: str, count: int) -> list[Path]:
    """Where each reranking model of one kind trains: out/reverse (out/r2l), or out/reverse/memberK for several."""
    return member_folders(out / kind, count) if count else []


def model_folders(out: Path, args: argparse.Namespace) -> list[tuple[str, int, Path]]:
    """Every model of the run: (kind, its number among the models of that kind from 0, folder), the forward
    members first."""
    return [("forward", k, folder) for k, folder in enumerate(member_folders(out, args.members))] + [
        (kind, k, folder)
        for kind in RERANKERS
        for k, folder in enumerate(reranker_folders(out, kind, count(args, kind)))
    ]


def remove_other_layouts(out: Path, folders: list[Path]) -> None:
    """A run started afresh (--overwrite) over another run with more or fewer models: delete the checkpoints
    of that run's model folders that this run does not train in, so that no old model can be resumed or
    tested as if it were part of this run. (Its own folders' checkpoints each Trainer replaces.)"""
    layouts = [
        folder for top in (out, *(out / kind for kind in RERANKERS)) for folder in (top, *sorted(top.glob("member*")))
    ]
    for folder in layouts:  # a linked folder is another run's: left alone
        if folder not in folders and folder.is_dir() and not folder.is_symlink() and not folder.parent.is_symlink():
            for path in [folder / "best.pt", folder / "last.pt", *(p for _, p in snapshots_in(folder))]:
                path.unlink(missing_ok=True)


def count(args: argparse.Namespace, kind: str) -> int:
    """How many models of `kind` (reverse, r2l) the run trains (0 before `plan_run` settles it from None)."""
    return getattr(args, f"{kind}_members") or 0


def members_of(run: Path, key: str = "members") -> int:
    """How many models (or, with key "reverse_members" or "r2l_members", reranking models) the run in this
    folder trains, as its config.json says (1 and 0 for runs from before ensembles and reranking models)."""
    before = 1 if key == "members" else 0
    try:
        return int(json.loads((run / "config.json").read_text())["ensemble"].get(key, before))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return before


def plan_run(args: argparse.Namespace, default_members: int) -> tuple[Path, list[Path | None]]:
    """The run folder, and each model's checkpoint to resume from (None: a fresh start), in the order of
    `model_folders`; sets args.members, args.reverse_members and args.r2l_members. Refuses to train afresh
    over old checkpoints, and to resume something that cannot be resumed whole."""
    if args.members is not None:
        check_range("--members", args.members, low=1)
    for kind in RERANKERS:
        if getattr(args, f"{kind}_members") is not None:
            check_range(f"--{kind}-members", count(args, kind), low=0)
    if not args.resume:
        args.members = args.members or default_members
        for kind in RERANKERS:
            setattr(args, f"{kind}_members", count(args, kind) or 0)
        return (run_folder(args.out, None, args.overwrite, DEFAULT_OUT), [None] * total_models(args))
    resume = Path(args.resume)
    if resume.is_file():  # one model's checkpoint: a single model goes on, into --out or beside the checkpoint
        if args.members not in (None, 1) or any(count(args, kind) for kind in RERANKERS):
            raise UserError(f"--resume {resume} is one model's checkpoint; resume an ensemble from its folder")
        if resume.parent.name.startswith("member") and members_of(resume.parent.parent) > 1:
            raise UserError(
                f"--resume {resume} is one member of the ensemble in {resume.parent.parent}; "
                f"resume the whole run with --resume {resume.parent.parent}"
            )
        for run in resume.parents[1:3]:  # run/reverse/last.pt or run/reverse/memberK/last.pt (r2l alike)
            for kind, what in RERANKERS.items():
                if resume.is_relative_to(run / kind) and members_of(run, f"{kind}_members"):
                    raise UserError(
                        f"--resume {resume} is a {what} of the run in {run}; resume the whole run with --resume {run}"
                    )
        args.members = 1
        for kind in RERANKERS:
            setattr(args, f"{kind}_members", 0)
        return run_folder(args.out, args.resume, args.overwrite, DEFAULT_OUT), [resume]
    if not resume.is_dir():
        raise UserError(f"--resume {resume}: no such checkpoint or run folder")
    if not (resume / "config.json").is_file():
        raise UserError(f"--resume {resume}: not a run folder (it has no config.json)")
    members = members_of(resume)
    if args.members not in (None, members):
        raise UserError(f"--resume {resume} continues a run of {members} model(s); leave out --members")
    args.members = members
    for kind, what in RERANKERS.items():
        trained = members_of(resume, f"{kind}_members")
        if getattr(args, f"{kind}_members") not in (None, trained):
            raise UserError(f"--resume {resume} continues a run of {trained} {what}(s); leave out --{kind}-members")
        setattr(args, f"{kind}_members", trained)
    if args.out is not None and Path(args.out).resolve() != resume.resolve():
        raise UserError(f"--resume {resume} goes on in that folder; leave out --out {args.out}")
    checkpoints: list[Path | None] = [folder / "last.pt" for _, _, folder in model_folders(resume, args)]
    missing = [str(p) for p in checkpoints if p is not None and not p.is_file()]
    if missing:
        raise UserError(
            f"--resume {resume} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
            "missing (stopped before the first checkpoint?); start afresh with --overwrite instead"
        )
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
    # forward, or a model that reranks the forward n best: reverse (target -> source: pairs and tokenizers
    # swapped) or r2l (source -> target, written right to left)
    kind: str = "forward"
    # the training pairs as token ids (`seq2seq.encoded.encode_pairs`), encoded once for every model of the
    # run; pairs["train"] then need only hold their text for --subword-alpha. None: encoded from pairs["train"]
    train: EncodedPairs | None = None


def setup_for(run: RunSetup, kind: str) -> RunSetup:
    """The run as the models of `kind` train it."""
    if kind == "reverse":
        pairs = {split: [(t, s) for s, t in pairs] for split, pairs in run.pairs.items()}
        enc = run.enc_config
        return replace(
            run,
            pairs=pairs,
            train=None if run.train is None else run.train.swapped(),
            tokenizers=run.tokenizers[::-1],
            kind=kind,
            enc_config=replace(
                enc, target_order="left-to-right", source_lang=enc.target_lang, target_lang=enc.source_lang
            ),
        )
    if kind == "r2l":
        return replace(run, enc_config=replace(run.enc_config, target_order="right-to-left"), kind=kind)
    return run


def total_models(args: argparse.Namespace) -> int:
    return args.members + sum(count(args, kind) for kind in RERANKERS)


def check_settings(
    args: argparse.Namespace, tokenizers: tuple[dict, dict], enc_config: EncoderConfig, dec_config: DecoderConfig
) -> None:
    """Settings that do not fit together, which the members' processes would refuse, refused before
    config.json is written (a resumed run's config.json must not take settings that fail)."""
    try:
        Translator(tokenizer_from_dict(tokenizers[0]), tokenizer_from_dict(tokenizers[1]), enc_config, dec_config)
    except ValueError as err:  # settings that do not fit together, e.g. --share-embeddings with --separate-vocab
        raise UserError(str(err)) from None


def train_member(run: RunSetup, member: int, position: int, folder: Path, resume: Path | None) -> bool:
    """Train model number `member` of its kind (from 0) into `folder`, as process number `position` of the
    run; False when Ctrl-C stopped it (its checkpoint saved)."""
    args, world = run.args, distributed.current()
    if world.main and not (run.kind == "forward" and args.members == 1):  # (that one trains in the run folder)
        hold_run(folder)  # a member's own folder too: its process may outlive the parent's lock for a moment
    # member k of each kind trains with seed + k, so that member 1 of an ensemble is the model a single run would train
    train_config = replace(run.train_config, seed=run.train_config.seed + member)
    src_tok, tgt_tok = (tokenizer_from_dict(t) for t in run.tokenizers)
    torch.manual_seed(train_config.seed)
    model = Translator(src_tok, tgt_tok, run.enc_config, run.dec_config)  # settings checked by `check_settings`
    if position == 0:
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"vocabulary {src_tok.vocab_size}/{tgt_tok.vocab_size}, model {n_params / 1e6:.2f}M parameters, "
            f"device {run.device}" + (f", {total_models(args)} models side by side" if total_models(args) > 1 else "")
        )

    train = training_batches(run, model, train_config.seed, warn=position == 0)
    valid_pairs = run.pairs["valid"]
    valid = pair_batches(model, valid_pairs, args.max_tokens, shuffle=False)
    bleu_pairs = valid_pairs[: args.valid_sentences]

    def valid_bleu(m: Translator) -> dict[str, float]:
        # real decoding (greedy, fast), never teacher forcing: BLEU is the figure early stopping follows, and
        # sequence-level training for chrF follows chrF
        hyps = m.translate([s for s, _ in bleu_pairs], method="greedy", batch_size=128)
        bleu, chrf = score_files(hyps, [[t for _, t in bleu_pairs]], metrics=["bleu", "chrf"])
        return {"bleu": bleu["score"], "chrf": chrf["score"]}

    device = run.device
    if device.type == "cuda" and device.index is None and total_models(args) > 1:  # share the GPUs
        device = torch.device("cuda", position % torch.cuda.device_count())
    if run.kind == "forward":
        label = "train" if args.members == 1 else f"member {member + 1}"
    else:
        label = run.kind if count(args, run.kind) == 1 else f"{run.kind} {member + 1}"
    trainer = Trainer(model, seq2seq_forward, train, train_config, folder, model.payload, valid=valid,
                      metrics_fn=valid_bleu, select="bleu", maximize=True, device=device, world=world, label=label,
                      bar_position=position)  # fmt: skip
    if resume:
        trainer.resume(resume, task="translation")
    trainer.fit()
    if trainer.interrupted or not (args.seq_steps and run.kind == "forward"):
        return not trainer.interrupted
    return sequence_phase(run, trainer, model, folder, resume is not None)


def sequence_phase(run: RunSetup, ce: Trainer, model: Translator, folder: Path, resumed: bool) -> bool:
    """--seq-steps of self-critical training (the sentence metric --reward as the reward) from the best weights of
    `model`'s cross-entropy trainer `ce`, in folder/seq; False when Ctrl-C stopped it. Validation follows the
    metric trained for (corpus BLEU or chrF of greedy translations); the phase's best.pt exists only where it beat
    the cross-entropy checkpoint's."""
    args, best = run.args, folder / "best.pt"
    load_weights(best, model, load_checkpoint(best, task="translation", map_location=ce.device)["model"])
    config = replace(ce.config, steps=args.seq_steps, lr=args.seq_lr, schedule="constant", warmup_steps=0,
                     label_smoothing=0.0, ema_decay=0.0, snapshots=0)  # fmt: skip
    sequence_level = SelfCritical(samples=args.seq_samples, baseline=args.seq_baseline, max_len=args.max_target_len)
    objective = self_critical(translation_episode, sentence_reward(model, args.reward), sequence_level)
    trainer = Trainer(model, seq2seq_forward, ce.train_data, config, folder / "seq", model.payload, valid=ce.valid_data,
                      metrics_fn=ce.metrics_fn, select=args.reward, maximize=True, device=ce.device, world=ce.world,
                      label=f"{ce.label}, seq", bar_position=int(ce.bar["position"]), objective=objective)  # fmt: skip
    if resumed and (folder / "seq" / "last.pt").is_file():
        trainer.resume(folder / "seq" / "last.pt", task="translation")
    else:
        trainer.best = trainer.evaluate()[args.reward]  # where it starts: a checkpoint must beat it
    trainer.fit()
    return not trainer.interrupted


def training_batches(run: RunSetup, model: Translator, seed: int, warn: bool) -> BucketBatches:
    """The run's training pairs that `trainable` keeps, in batches: of their token ids, or of their text with
    --subword-alpha (every sentence segmented afresh each time)."""
    encoded = run.train
    if encoded is None:
        encoded = encode_pairs(run.pairs["train"], (model.src_tokenizer, model.tgt_tokenizer))
    kept, args = trainable(encoded, run.args, warn), run.args
    if not args.subword_alpha:
        return encoded_batches(model, encoded, kept, args.max_tokens, seed=seed)
    texts, lengths = run.pairs["train"], Examples(encoded, kept, model.right_to_left).target_lengths()
    sampled = [texts[i] for i in kept.tolist()]
    return SampledSubwords(model, sampled, args.max_tokens, args.subword_alpha, seed=seed, lengths=lengths)


def trainable_pairs(
    model: Translator, pairs: list[tuple[str, str]], args: argparse.Namespace, warn: bool
) -> list[tuple[str, str]]:
    """The training pairs that `seq2seq.encoded.trainable` keeps, as text."""
    encoded = encode_pairs(pairs, (model.src_tokenizer, model.tgt_tokenizer), progress=False)
    return [pairs[i] for i in trainable(encoded, args, warn).tolist()]


def ensemble_checkpoints(args: argparse.Namespace, folders: list[Path]) -> list[Path]:
    """The checkpoints the test translates (or reranks) with: every member's last --snapshots snapshots, or
    (with --snapshots 0, or a run resumed from before snapshots were kept) its best checkpoint; the best of its
    sequence-level training instead where that beat them."""
    paths = []
    for folder in folders:
        if (folder / "seq" / "best.pt").is_file():  # sequence-level training beat the cross-entropy checkpoints
            paths.append(folder / "seq" / "best.pt")
            continue
        snapshots = [path for _, path in snapshots_in(folder)][-args.snapshots :] if args.snapshots else []
        paths += snapshots or [folder / "best.pt"]
    return [path.absolute() for path in paths]  # ensemble.args then works from any working directory


def check_run_flags(args: argparse.Namespace) -> None:
    """The run's settings, checked before any data is read (a resumed run's flags come from its config.json)."""
    if total_models(args) > 1 and distributed.launched():  # under torchrun the processes share one model
        raise UserError(
            f"--members {args.members} --reverse-members {args.reverse_members} --r2l-members "
            f"{args.r2l_members} trains each model in a process of its own; under torchrun train (or "
            "resume) a single model, --members 1"
        )
    for flag, value, low in (
        ("--beam-size", args.beam_size, 1),
        ("--rerank-beam-size", args.rerank_beam_size, 1),
        ("--max-tokens", args.max_tokens, 1),
        ("--vocab-size", args.vocab_size, MIN_VOCAB),
        ("--length-penalty", args.length_penalty, None),
        ("--valid-sentences", args.valid_sentences, 1),
        ("--seq-steps", args.seq_steps, 0),
        ("--seq-samples", args.seq_samples, 2 if args.seq_baseline == "mean" else 1),
        ("--max-valid-pairs", args.max_valid_pairs, 1),
        ("--max-test-pairs", args.max_test_pairs, 1),
        ("--tokenizer-pairs", args.tokenizer_pairs, 1),
        ("--max-source-len", args.max_source_len, 1),
        ("--max-target-len", args.max_target_len, 1),
    ):
        check_range(flag, value, low=low)
    check_rerank_score_flags(args)
    limit, machine = most_side_by_side()
    if total_models(args) > limit:
        raise UserError(
            f"--members {args.members} --reverse-members {args.reverse_members} --r2l-members "
            f"{args.r2l_members}: {total_models(args)} models side by side, more than this machine runs "
            f"at once ({limit}: {machine}); train fewer"
        )
    check_range("--subword-alpha", args.subword_alpha, 0, 1, high_open=True)
    if args.subword_alpha and args.level == "word":
        raise UserError(
            f"--subword-alpha {args.subword_alpha}: sampled segmentations need sentencepiece tokenizers, not word"
        )
    # model k of each kind trains with --seed + k
    check_range("--seed", args.seed, 0, MAX_SEED + 1 - max(args.members, *(count(args, kind) for kind in RERANKERS)))
    if args.r2l_members and args.target_order == "right-to-left":
        raise UserError(
            "--r2l-members trains right-to-left models to rerank left-to-right ones; leave out "
            "--target-order right-to-left"
        )


def resumed_configs(args: argparse.Namespace, configs: dict) -> tuple[EncoderConfig, DecoderConfig]:
    """A resumed run's model configs, from its checkpoint; language flags given now must agree with them."""
    enc_config = configs["encoder"]
    for side in ("source_lang", "target_lang"):
        given, built = getattr(args, side).strip().lower(), getattr(enc_config, side)
        if given and given != built:
            raise UserError(
                f"--{side.replace('_', '-')} {given}: the run's models were built "
                f"{f'with {built}' if built else 'without language labels'}, and a resumed run "
                "keeps its models; leave it out, or start a new run"
            )
    return enc_config, configs["decoder"]


def train_models(run: RunSetup, out: Path, resume: list[Path | None], memory_flags: str) -> float | None:
    """Train every model of the run (side by side when several); the seconds it took, or None in a process
    other than the main one. Raises Interrupted when Ctrl-C or SIGTERM stopped it (its checkpoints saved)."""
    world = distributed.current()
    folders = model_folders(out, run.args)
    if world.main and not run.args.resume:
        remove_other_layouts(out, [folder for _, _, folder in folders])
    jobs = [
        partial(train_member, setup_for(run, kind), member, position, folder, resume[position])
        for position, (kind, member, folder) in enumerate(folders)
    ]
    started = time.perf_counter()
    finished = [jobs[0]()] if len(jobs) == 1 else run_side_by_side(jobs, memory_flags)
    if not all(finished):
        saved = all((folder / "last.pt").exists() for _, _, folder in folders)
        raise Interrupted(
            ""
            if not world.main
            else f"interrupted; continue with --resume {out}"
            if saved
            else "interrupted before every model saved a checkpoint; start afresh with --overwrite"
        )
    return time.perf_counter() - started if world.main else None


def run_checkpoints(args: argparse.Namespace, out: Path) -> dict[str, list[Path]]:
    """The checkpoints the test uses, by kind of model: forward, reverse, r2l."""
    folders = model_folders(out, args)
    return {
        kind: ensemble_checkpoints(args, [folder for k, _, folder in folders if k == kind])
        for kind in ("forward", *RERANKERS)
    }
