"""CIDEr-D (Vedantam, Zitnick and Parikh, 2015), the captioning field's main metric: how well a caption agrees
with the consensus of a picture's references, n-grams weighted by TF-IDF over the evaluated pictures.

For n = 1..4, each sentence becomes a vector of n-gram counts times log(pictures / pictures whose references
hold the n-gram). A candidate's score against one reference is the cosine of their vectors, with the
candidate's counts clipped at the reference's (the "-D": repeating a word does not pay) and a Gaussian penalty
on their length difference (sigma 6); it is averaged over n and over the references, and scaled by 10.
Sentences come tokenized: words separated by spaces (lowercase them first, as captioning evaluations do).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

SIGMA = 6.0
MAX_N = 4


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _vectors(sentence: str, df: list[Counter], log_pictures: float) -> tuple[list[dict], list[float], int]:
    """Per n: the TF-IDF vector, its norm; and the sentence's length in words."""
    words = sentence.split()
    vectors, norms = [], []
    for n in range(1, MAX_N + 1):
        vector = {
            g: count * (log_pictures - math.log(max(1.0, df[n - 1][g]))) for g, count in _ngrams(words, n).items()
        }
        vectors.append(vector)
        norms.append(math.sqrt(sum(v * v for v in vector.values())))
    return vectors, norms, len(words)


class CiderD:
    """CIDEr-D with the document frequencies of one set of pictures' references: the scored pictures' own
    (`cider_d`, as evaluations compute it), or the training pictures' (the reward of sequence-level training, so
    that no test or validation reference is ever read)."""

    def __init__(self, references: Sequence[Sequence[str]]):
        if any(not refs for refs in references):
            raise ValueError("every picture needs at least one reference")
        self.df: list[Counter[tuple[str, ...]]] = [Counter() for _ in range(MAX_N)]  # pictures holding each n-gram
        for refs in references:
            for n in range(1, MAX_N + 1):
                self.df[n - 1].update(set().union(*(_ngrams(r.split(), n) for r in refs)))
        self.log_pictures = math.log(float(max(1, len(references))))

    def scores(self, candidates: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
        """Each candidate's CIDEr-D against its own references (references[i] are candidate i's)."""
        if len(candidates) != len(references):
            raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
        scores = []
        for candidate, refs in zip(candidates, references):
            cand, cand_norms, cand_len = _vectors(candidate, self.df, self.log_pictures)
            total = 0.0
            for ref in refs:
                vec, norms, ref_len = _vectors(ref, self.df, self.log_pictures)
                penalty = math.exp(-((cand_len - ref_len) ** 2) / (2 * SIGMA**2))
                for n in range(MAX_N):
                    dot = sum(min(value, vec[n][g]) * vec[n][g] for g, value in cand[n].items() if g in vec[n])
                    if cand_norms[n] and norms[n]:
                        total += penalty * dot / (cand_norms[n] * norms[n])
            scores.append(10.0 * total / MAX_N / len(refs))
        return scores


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """The corpus CIDEr-D (the mean over pictures) and each picture's score; references[i] are picture i's."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    scores = CiderD(references).scores(candidates, references)
    return sum(scores) / len(scores), scores
