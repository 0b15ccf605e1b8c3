"""Scoring captions against every reference of their picture (BLEU-1..4 by sacreBLEU, CIDEr-D), and the nearest-
neighbour baseline: each picture gets the caption of the training picture whose pooled feature is closest."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from sacrebleu.metrics import BLEU
from torch import Tensor

from captioning.captioner import normalise
from captioning.cider import cider_d
from core.tokenizers import WordTokenizer

_WORDS = WordTokenizer([])  # only its split: words and punctuation apart, as CIDEr-D wants them


def tokenized(caption: str) -> str:
    """A caption as CIDEr-D reads it: lower case, words and punctuation separated by single spaces."""
    return " ".join(_WORDS.split(normalise(caption)))


def caption_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float | str]:
    """BLEU-1..4 (sacreBLEU, lower-cased, all references of each picture) and CIDEr-D (x100, as papers quote it),
    with sacreBLEU's signature for BLEU-4."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} captions but {len(references)} reference sets")
    most = max((len(refs) for refs in references), default=0)
    # sacreBLEU wants as many reference streams as the picture with most: repeat a picture's first reference,
    # which changes no clipped count and no closest length
    streams = [[normalise(refs[min(i, len(refs) - 1)]) for refs in references] for i in range(most)]
    hyps = [normalise(h) for h in hypotheses]
    scores: dict[str, float | str] = {}
    for n in range(1, 5):
        bleu = BLEU(max_ngram_order=n, lowercase=True)
        scores[f"bleu{n}"] = round(bleu.corpus_score(hyps, streams).score, 2)
    scores["bleu_signature"] = bleu.get_signature().format()
    corpus, _ = cider_d([tokenized(h) for h in hypotheses], [[tokenized(r) for r in refs] for refs in references])
    scores["cider_d"] = round(100 * corpus, 2)
    return scores


def pooled(regions: Tensor) -> Tensor:
    """Feature regions (N, S, C) -> unit-length mean features (N, C)."""
    return F.normalize(regions.float().mean(dim=1), dim=1)


def nearest_neighbour(
    train_regions: Tensor, train_captions: Sequence[str], regions: Tensor, chunk: int = 256
) -> list[str]:
    """For each picture of `regions` (N, S, C), the caption of the training picture (rows of `train_regions`,
    captions aligned) with the highest cosine similarity of pooled features."""
    if len(train_captions) != train_regions.size(0):
        raise ValueError(f"{train_regions.size(0)} training pictures but {len(train_captions)} captions")
    library = pooled(train_regions)  # (M, C)
    found: list[str] = []
    for start in range(0, regions.size(0), chunk):
        nearest = (pooled(regions[start : start + chunk]) @ library.T).argmax(dim=1)  # (n,)
        found += [train_captions[int(i)] for i in nearest]
    return found
