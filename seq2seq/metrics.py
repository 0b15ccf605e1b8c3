"""Corpus and sentence scores with sacreBLEU (BLEU and chrF), with their signatures: the library's own scores,
so that they can be quoted with the signature, as the `sacrebleu` command prints them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sacrebleu.metrics import BLEU, CHRF
from sacrebleu.metrics.base import Metric

from core.errors import UserError

METRICS = ("bleu", "chrf")


def _metric(name: str, tokenize: str, lowercase: bool, sentence: bool) -> Metric:
    """A sacrebleu metric; sentence-level BLEU uses effective order, as `sacrebleu.sentence_bleu` does."""
    try:
        if name == "bleu":
            return BLEU(lowercase=lowercase, tokenize=tokenize, effective_order=sentence)
        return CHRF(lowercase=lowercase)
    except (ImportError, RuntimeError, OSError) as err:  # a tokenizer's missing extra or model download
        raise UserError(f"--tokenize {tokenize}: {' '.join(str(err).split())}") from None


def _check_lengths(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> None:
    if not refs:
        raise UserError("no reference given (use --ref REF)")
    for i, ref in enumerate(refs, start=1):
        if len(ref) != len(hyps):
            raise UserError(f"{len(hyps)} hypotheses but reference {i} has {len(ref)} lines")


def _details(score: Any) -> dict:
    """What a score holds beyond its value: n-gram statistics for BLEU, the settings for chrF."""
    if hasattr(score, "counts"):
        return {
            "counts": score.counts,
            "totals": score.totals,
            "precisions": score.precisions,
            "bp": score.bp,
            "sys_len": score.sys_len,
            "ref_len": score.ref_len,
        }
    return {"char_order": score.char_order, "word_order": score.word_order, "beta": score.beta}


def score_files(
    hyps: list[str],
    refs: list[list[str]],
    metrics: Sequence[str] = METRICS,
    tokenize: str = "13a",
    lowercase: bool = False,
) -> list[dict]:
    """Corpus scores of `hyps` against reference streams `refs` (each aligned with `hyps`), one dict per metric."""
    _check_lengths(hyps, refs)
    results = []
    for name in metrics:
        metric = _metric(name, tokenize, lowercase, sentence=False)
        score = metric.corpus_score(hyps, refs)
        signature = metric.get_signature().format()
        results.append(
            {
                "name": score.name,
                "score": score.score,
                "signature": signature,
                **_details(score),
                "text": score.format(width=2, signature=signature),
            }
        )
    return results


def sentence_scores(
    hyps: list[str],
    refs: list[list[str]],
    metrics: Sequence[str] = METRICS,
    tokenize: str = "13a",
    lowercase: bool = False,
) -> list[dict]:
    """Per-line scores, one dict per metric: name, signature and `scores` (one float per hypothesis)."""
    _check_lengths(hyps, refs)
    results = []
    for name in metrics:
        metric = _metric(name, tokenize, lowercase, sentence=True)
        scores = [metric.sentence_score(hyp, list(line_refs)) for hyp, *line_refs in zip(hyps, *refs)]
        results.append(
            {
                "name": scores[0].name if scores else name,
                "signature": metric.get_signature().format(),
                "scores": [s.score for s in scores],
            }
        )
    return results
