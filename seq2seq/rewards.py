"""What self-critical training (`core.self_critical`) needs from translation: a training batch as an `Episode`, and
a sentence-level metric as the reward (sacreBLEU's smoothed sentence BLEU, or chrF)."""

from __future__ import annotations

from typing import Any

import torch
from sacrebleu.metrics import BLEU, CHRF
from torch import Tensor

from core.self_critical import Episode, Reward
from core.tokenizers import BOS, EOS, NOT_GENERATED, PAD
from seq2seq.translator import Translator

REWARDS = ("bleu", "chrf")


def translation_episode(model: Translator, batch: tuple[Tensor, ...], max_len_ratio: float = 1.5) -> Episode:
    """A training batch (src, src_lengths, tgt_in, tgt_out) as self-critical training reads it: the references are
    the targets' text, as the target tokenizer gives it back; each output stops where `Translator.search` stops it
    (`max_len_ratio` times its source's tokens, plus 10)."""
    src, src_lengths, _, tgt_out = batch
    references = [model.target_text([t for t in row if t not in (PAD, EOS)]) for row in tgt_out.tolist()]
    starts = torch.full((src.size(0),), BOS, device=src.device)
    limits = src_lengths.mul(max_len_ratio).long().add(10).to(src.device)
    ctx = model.encoder(src, src_lengths)
    return Episode(model.decoder, ctx, starts, references, EOS, forbid=NOT_GENERATED, max_len=limits)


def sentence_reward(model: Translator, metric: str) -> Reward:
    """Each translation's sentence BLEU (exponential smoothing, effective order: a short sentence still gets a
    score) or chrF against its reference, on a 0..1 scale."""
    if metric not in REWARDS:
        raise ValueError(f"the reward must be one of {', '.join(REWARDS)}, got {metric!r}")
    scorer: Any = BLEU(effective_order=True) if metric == "bleu" else CHRF()

    def reward(hypotheses: list[list[int]], references: list) -> Tensor:
        texts = [model.target_text(tokens) for tokens in hypotheses]
        return torch.tensor([scorer.sentence_score(t, [r]).score / 100 for t, r in zip(texts, references)])

    return reward
