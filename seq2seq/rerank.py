"""Reranking a translator's n best with other models: reverse models (the noisy channel of Yee et al., 2019,
without their language model) and right-to-left models (Sennrich et al., 2016), with the command-line flags.

The score of a candidate y for source x is log p(y | x) / GNMT penalty(|y|, RERANK_LENGTH_PENALTY)
+ RERANK_WEIGHT x log p(x | y) under the reverse models + R2L_WEIGHT x log p(y | x) under the right-to-left
ones. The defaults were chosen on the Ding validation split (docs/experiments.md).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from core.cli import path_arg
from core.errors import UserError, check_range
from core.search import gnmt_penalty
from core.search_config import SearchConfig
from seq2seq.translator import MAX_SOURCE_LEN, Translator, load_ensemble, sentences_of

RERANK_LENGTH_PENALTY = 0.5
RERANK_WEIGHT = 0.5
R2L_WEIGHT = 0.5


def translate_reranked(
    model: Translator,
    sentences: Sequence[str],
    reverse: Translator | Sequence[Translator] = (),
    weight: float = RERANK_WEIGHT,
    beam_size: int = 5,
    right_to_left: Translator | Sequence[Translator] = (),
    right_to_left_weight: float = R2L_WEIGHT,
    rerank_length_penalty: float = RERANK_LENGTH_PENALTY,
    config: SearchConfig | None = None,
    **options: Any,
) -> list[str]:
    """The beam's `beam_size` best translations of each sentence by `model`, reranked: the one with the highest
    log p(translation | sentence) / GNMT penalty(its length, `rerank_length_penalty`) + `weight` *
    log p(sentence | translation) under `reverse` + `right_to_left_weight` * log p(translation | sentence)
    under `right_to_left`. Each of the two is a model or an ensemble (a list). A translation that leaves out or
    invents content explains its source badly, whatever its fluency; that also punishes translations cut short,
    which is why the forward score needs a smaller length penalty here than in the beam (the config's
    `length_penalty` only decides what the beam keeps). `right_to_left` writes from the last token to the first
    (`EncoderConfig.target_order`), so it judges each ending without the beam's left-to-right commitment."""
    sentences, reverse, right_to_left = sentences_of(sentences), _model_list(reverse), _model_list(right_to_left)
    for models, is_reverse in ((reverse, True), (right_to_left, False)):
        for other in models:
            model.check_direction(other, reverse=is_reverse)
    nbest = model.search(
        sentences, config, **{**options, "method": "beam", "beam_size": beam_size, "n_best": beam_size}
    )
    sources = [source for source, hyps in zip(sentences, nbest) for _ in hyps]
    texts = [model.target_text(h.tokens) for hyps in nbest for h in hyps]
    combined = [
        h.log_prob / gnmt_penalty(len(h.tokens) + h.finished, rerank_length_penalty)  # EOS counts
        for hyps in nbest
        for h in hyps
    ]
    for models, w, pairs in (
        (reverse, weight, (texts, sources)),
        (right_to_left, right_to_left_weight, (sources, texts)),
    ):
        if models:
            extra = models[0].score(*pairs, ensemble_with=models[1:])
            combined = [c + w * e for c, e in zip(combined, extra)]
    chosen, scores, text = [], iter(combined), iter(texts)
    for hyps in nbest:
        mine, theirs = [next(scores) for _ in hyps], [next(text) for _ in hyps]
        chosen.append(theirs[mine.index(max(mine))])  # ties: the beam's own order
    return chosen


def _model_list(models: Translator | Sequence[Translator]) -> list[Translator]:
    return [models] if isinstance(models, Translator) else list(models)


def load_rerankers(
    reverse: Sequence[str | Path] = (),
    right_to_left: Sequence[str | Path] = (),
    weight: float = RERANK_WEIGHT,
    right_to_left_weight: float = R2L_WEIGHT,
    rerank_length_penalty: float = RERANK_LENGTH_PENALTY,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    forward: Translator | None = None,
) -> dict[str, Any]:
    """`translate_reranked`'s options from checkpoint paths: the reverse models and the right-to-left models
    (each list an ensemble) with their weights; {} when there are neither (no reranking). With `forward`, the
    model whose n best they rerank, each must translate its language pair (the reverse ones the other way)."""
    if not reverse and not right_to_left:
        return {}

    def ensemble(paths: Sequence[str | Path]) -> list[Translator]:
        if not paths:
            return []
        first, others = load_ensemble(paths, device, dtype)
        return [first, *others]

    backwards, reverse_models = ensemble(right_to_left), ensemble(reverse)
    if backwards and not backwards[0].right_to_left:
        raise UserError(
            f"{right_to_left[0]} writes left to right; reranking needs a right-to-left model "
            "(trained with --target-order right-to-left)"
        )
    for paths, models, is_reverse in ((reverse, reverse_models, True), (right_to_left, backwards, False)):
        if forward is not None and models:
            try:
                forward.check_direction(models[0], reverse=is_reverse)
            except ValueError as err:
                raise UserError(f"{paths[0]} cannot rerank this model's translations: {err}") from None
    return dict(
        reverse=reverse_models,
        weight=weight,
        right_to_left=backwards,
        right_to_left_weight=right_to_left_weight,
        rerank_length_penalty=rerank_length_penalty,
    )


def translate_file(
    checkpoints: Sequence[str | Path],
    src_lines: list[str],
    config: SearchConfig,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    **rerank: Any,
) -> list[str]:
    """Translate lines with one checkpoint or an ensemble of several (`python -m seq2seq.bleu --checkpoint`),
    reranking the beam's n best when `rerank` names reverse or right-to-left checkpoints (`load_rerankers`)."""
    model, others = load_ensemble(checkpoints, device, dtype)
    model.check_source_lengths(src_lines, MAX_SOURCE_LEN, "line {} of the source file", first=1)
    rerankers = load_rerankers(**rerank, device=device, dtype=dtype, forward=model)
    if not rerankers:
        return model.translate(src_lines, config, ensemble_with=others)
    return translate_reranked(
        model, src_lines, config=config, beam_size=config.beam_size, ensemble_with=others, **rerankers
    )


# ---- command-line flags ---------------------------------------------------------------------------------


def add_rerank_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument(
        "--rerank-with",
        metavar="CK",
        action="append",
        type=path_arg(stream=True),
        help="a checkpoint trained in the opposite direction (target -> source): of the beam's "
        "--beam-size best translations, keep the one with the highest log p(translation | source) "
        "/ length penalty (--rerank-length-penalty) + --rerank-weight x log p(source | "
        "translation) (noisy-channel reranking); repeat it to score with an ensemble of reverse "
        "models, or give a recipe run's list: @runs/translate/reverse.args",
    )
    parser.add_argument(
        "--rerank-r2l",
        metavar="CK",
        action="append",
        type=path_arg(stream=True),
        help="a checkpoint of the same direction that writes right to left (--target-order "
        "right-to-left): adds --rerank-r2l-weight x its log p(translation | source) to the "
        "score that reranks the beam's best; repeat it for an ensemble, or give a recipe run's "
        "list: @runs/translate/r2l.args",
    )
    add_rerank_score_flags(parser)


def add_rerank_score_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """How the reranking scores each of the n best: the command lines' flags and the translation recipe's."""
    parser.add_argument(
        "--rerank-weight",
        type=float,
        default=RERANK_WEIGHT,
        help="weight of the reverse models' log p(source | translation) (default: %(default)s)",
    )
    parser.add_argument(
        "--rerank-length-penalty",
        type=float,
        default=RERANK_LENGTH_PENALTY,
        help="GNMT alpha of the forward log-probability in the reranking score; --length-penalty "
        "still decides what the beam keeps (default: %(default)s)",
    )
    parser.add_argument(
        "--rerank-r2l-weight",
        type=float,
        default=R2L_WEIGHT,
        help="weight of the right-to-left models' log p(translation | source) (default: %(default)s)",
    )


def check_rerank_score_flags(args: argparse.Namespace) -> None:
    check_range("--rerank-weight", args.rerank_weight, low=0)
    check_range("--rerank-r2l-weight", args.rerank_r2l_weight, low=0)
    check_range("--rerank-length-penalty", args.rerank_length_penalty)


def check_rerank_flags(args: argparse.Namespace) -> str | None:
    """One-line errors for reranking flags that do not fit together, before any model is loaded; the
    reranking flag given (for further errors), or None."""
    flag = "--rerank-with" if args.rerank_with else "--rerank-r2l" if args.rerank_r2l else None
    if flag is None:
        return None
    if args.method != "beam":
        raise UserError(f"{flag} reorders the n best of beam search; it does not go with --method {args.method}")
    check_rerank_score_flags(args)
    return flag


def rerank_options(args: argparse.Namespace) -> dict:
    """The reranking flags as `load_rerankers` takes them."""
    return dict(
        reverse=args.rerank_with or (),
        weight=args.rerank_weight,
        right_to_left=args.rerank_r2l or (),
        right_to_left_weight=args.rerank_r2l_weight,
        rerank_length_penalty=args.rerank_length_penalty,
    )
