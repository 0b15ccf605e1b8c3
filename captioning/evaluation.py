"""Scoring captions against every reference of their picture (BLEU-1..4 by sacreBLEU, CIDEr-D), the nearest-
neighbour baseline (each picture gets the caption of the training picture whose pooled feature is closest), and
the test of a trained captioner beside that baseline, with its pictures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch.nn.functional as F
from sacrebleu.metrics import BLEU
from torch import Tensor

from captioning.captioner import Captioner, normalise
from captioning.cider import cider_d
from captioning.data import ImageCaptions
from captioning.figures import save_caption_attention_png, save_samples_png
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


def test_report(
    model: Captioner,
    test: Sequence[ImageCaptions],
    inputs: Tensor | Sequence[Path],
    baseline: list[str],
    beam_size: int,
    out: Path,
) -> dict:
    """The captioner's greedy and beam captions of the test pictures (`inputs`: their regions or the pictures) and
    the baseline's, scored against every reference; printed side by side with examples; samples.png, and
    attention.png where the decoder attends."""
    captions = {
        "nearest neighbour": baseline,
        "greedy": model.caption(inputs, method="greedy"),
        f"beam {beam_size}": model.caption(inputs, method="beam", beam_size=beam_size),
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
    drawn = [
        save_samples_png(
            out / "samples.png",
            [test[i].image for i in shown],
            {name: [texts[i] for i in shown] for name, texts in captions.items()},
            references,
        )
    ]
    if model.decoder.attention is not None:  # (a decoder without attention has no maps to draw)
        words, maps = model.attention(test[0].image, method="beam", beam_size=beam_size)
        drawn.append(save_caption_attention_png(out / "attention.png", test[0].image, words, maps))
    print("\nwrote " + " and ".join(map(str, drawn)))
    return {"test_pictures": len(test), "scores": scores}
