"""The three task objects as the server serves them: the JSON each endpoint takes (its search options are
SearchConfig's fields, with their ranges and rules, never restated), the bounds a request must keep, and how a
batch of requests becomes one call of the task object's batched method."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Sequence
from dataclasses import asdict, astuple, fields, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, create_model

from captioning.captioner import DEFAULT_SEARCH as CAPTION_SEARCH
from captioning.captioner import Captioner
from core.errors import UserError
from core.lm import DEFAULT_SEARCH as TEXTGEN_SEARCH
from core.lm import LanguageModel
from core.search_config import SearchConfig
from recipes.server.limits import Limits
from seq2seq.translator import DEFAULT_SEARCH as TRANSLATE_SEARCH
from seq2seq.translator import MAX_SOURCE_LEN, Translator

_SEARCH_TYPES = {"method": Literal["greedy", "sample", "beam"], "max_len": int, "min_len": int, "temperature": float,
                 "top_k": int, "top_p": float, "seed": int, "beam_size": int, "length_penalty": float, "n_best": int,
                 "no_repeat_ngram": int, "repetition_penalty": float}  # fmt: skip
assert set(_SEARCH_TYPES) == {f.name for f in fields(SearchConfig)}, "every search option is a request field"
SearchOptions = create_model(  # every field optional: what is left out keeps the model's default
    "SearchOptions",
    __config__=ConfigDict(extra="forbid", strict=True),  # strict: true is not a number, nor "5" (JSON has types)
    **{name: (kind | None, None) for name, kind in _SEARCH_TYPES.items()},
)


class GenerateRequest(SearchOptions):
    prompt: str = ""
    num_samples: int = 1


class TranslateRequest(SearchOptions):
    sentences: list[str]
    attention: bool = False


_alone = itertools.count()  # a seeded sample is decoded alone: its draws then depend on its seed alone


class Served:
    """One loaded task object: its defaults within the server's bounds, what /api/models says of it, and the
    batched call that answers a batch of its requests."""

    task = ""
    default = SearchConfig()

    def __init__(self, model: Any, checkpoint: str | Path, limits: Limits):
        self.model, self.checkpoint, self.limits = model, Path(checkpoint).name, limits
        self.default = replace(self.default, max_len=min(self.default.max_len, limits.max_len))

    def config(self, options: BaseModel | dict[str, Any]) -> SearchConfig:
        """The search a request asks for: its options over this model's defaults, checked against SearchConfig's
        ranges and rules and against the server's bounds (UserError, one line naming the field)."""
        given = options if isinstance(options, dict) else options.model_dump(exclude_unset=True)
        given = {name: value for name, value in given.items() if name in _SEARCH_TYPES and value is not None}
        config = SearchConfig.of(None, self.default, **given)
        for name, bound in (("max_len", self.limits.max_len), ("beam_size", self.limits.max_beam)):
            within(name, getattr(config, name), bound)
        return config

    def kind(self, config: SearchConfig, *extra: Any) -> Hashable:
        """Requests of one kind batch together: the same search (a seeded sample alone)."""
        alone = next(_alone) if config.method == "sample" and config.seed is not None else None
        return (astuple(config), *extra, alone)

    def request(self, body: Any) -> tuple[Hashable, Any, int]:
        """(kind, request, size) of a request's body, checked: what `submit` takes."""
        raise NotImplementedError

    def info(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "checkpoint": self.checkpoint,
            "search_defaults": asdict(self.default),
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }


def within(field: str, value: int, bound: int) -> None:
    if value > bound:
        raise UserError(f"{field} = {value} is over this server's bound of {bound}")


def check_text(field: str, texts: Sequence[str], limits: Limits) -> None:
    """Each text within the bound, and text: JSON's escapes can spell a lone surrogate, which no tokenizer reads."""
    for i, text in enumerate(texts):
        if len(text) > limits.max_chars:
            raise UserError(f"{field}[{i}] has {len(text)} characters, over this server's bound of {limits.max_chars}")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as err:
            raise UserError(f"{field}[{i}] is not text: a lone surrogate at character {err.start}") from None


class ServedTextgen(Served):
    task, default = "textgen", TEXTGEN_SEARCH
    model: LanguageModel

    def request(self, body: GenerateRequest) -> tuple[Hashable, tuple[str, int], int]:
        """(kind, request, size) of a generate request, checked. Beam search gives its `num_samples` best."""
        within("num_samples", body.num_samples, self.limits.max_samples)
        if body.num_samples < 1:
            raise UserError(f"num_samples = {body.num_samples} is out of range; allowed: [1, inf)")
        if body.n_best is not None:
            raise UserError("n_best: /api/generate returns num_samples continuations (the n best, with method beam)")
        check_text("prompt", [body.prompt], self.limits)
        config = self.config(body)
        if config.method == "beam":
            if body.num_samples > config.beam_size:
                raise UserError(f"num_samples = {body.num_samples} is over beam_size = {config.beam_size}: a beam "
                                "search gives at most beam_size continuations")  # fmt: skip
            config = SearchConfig.of(config, config, n_best=body.num_samples)
        return self.kind(config), (body.prompt, body.num_samples), body.num_samples

    def run(self, kind: Hashable, requests: list[tuple[str, int]]) -> list[list[str]]:
        config = SearchConfig(*kind[0])
        if config.method == "beam":  # n_best continuations per prompt
            found = self.model.search([prompt for prompt, _ in requests], config)
            return [[self.model.tokenizer.decode(h.tokens) for h in nbest] for nbest in found]
        rows = [prompt for prompt, n in requests for _ in range(n)]  # each draw a row
        texts = iter(self.model.tokenizer.decode(nbest[0].tokens) for nbest in self.model.search(rows, config))
        return [[next(texts) for _ in range(n)] for _, n in requests]

    def info(self) -> dict[str, Any]:
        return super().info() | {"vocab_size": self.model.tokenizer.vocab_size}


class ServedTranslator(Served):
    task, default = "translation", TRANSLATE_SEARCH
    model: Translator

    def __init__(
        self,
        model: Translator,
        others: list[Translator],
        checkpoints: Sequence[str | Path],
        limits: Limits,
        max_source_len: int = MAX_SOURCE_LEN,
    ):
        super().__init__(model, checkpoints[0], limits)
        self.others, self.max_source_len = others, max_source_len
        self.checkpoints = [Path(c).name for c in checkpoints]

    def request(self, body: TranslateRequest) -> tuple[Hashable, tuple[list[str], bool], int]:
        if not body.sentences or len(body.sentences) > self.limits.max_sentences:
            raise UserError(
                f"sentences holds {len(body.sentences)}; between 1 and {self.limits.max_sentences} "
                "(this server's bound)"
            )
        check_text("sentences", body.sentences, self.limits)
        self.model.check_source_lengths(body.sentences, self.max_source_len)
        return self.kind(self.config(body)), (body.sentences, body.attention), len(body.sentences)

    def run(self, kind: Hashable, requests: list[tuple[list[str], bool]]) -> list[dict[str, Any]]:
        config = SearchConfig(*kind[0])
        sentences = [s for batch, _ in requests for s in batch]
        found = iter(self.model.search(sentences, config, ensemble_with=self.others, batch_size=len(sentences),
                                       max_source_len=self.max_source_len))  # fmt: skip
        answers = []
        for batch, attention in requests:
            nbests = [next(found) for _ in batch]
            answer: dict[str, Any] = {"translations": [self.model.target_text(n[0].tokens) for n in nbests]}
            if config.n_best > 1:
                answer["nbest"] = [[{"text": self.model.target_text(h.tokens), "score": h.score} for h in n]
                                   for n in nbests]  # fmt: skip
            if attention:
                answer["attention"] = [dict(zip(("source", "target", "weights"), self._pieces(s, n[0])))
                                       for s, n in zip(batch, nbests)]  # fmt: skip
            answers.append(answer)
        return answers

    def _pieces(self, sentence: str, hypothesis: Any) -> tuple[list[str], list[str], list[list[float]]]:
        source, target, weights = self.model.attention_of(sentence, hypothesis)
        return source, target, [[round(w, 4) for w in row] for row in weights.tolist()]

    def info(self) -> dict[str, Any]:
        c = self.model.encoder_config
        return super().info() | {
            "checkpoint": self.checkpoints,
            "source_lang": c.source_lang,
            "target_lang": c.target_lang,
            "vocab_size": self.model.tgt_tokenizer.vocab_size,
        }


class ServedCaptioner(Served):
    task, default = "captioning", CAPTION_SEARCH
    model: Captioner

    def run(self, kind: Hashable, requests: list[tuple[Any, bool]]) -> list[dict[str, Any]]:
        config = SearchConfig(*kind[0])
        found = self.model.search([picture for picture, _ in requests], config, batch_size=len(requests))
        answers = []
        for (picture, attention), nbest in zip(requests, found):
            answer: dict[str, Any] = {"captions": [self.model.tokenizer.decode(h.tokens) for h in nbest]}
            answer["view"] = self.view(*picture.size)
            if attention and self.model.decoder.attention is not None:
                words, maps = self.model.maps_of(nbest[0])
                answer["attention"] = {"words": words, "maps": [[[round(v, 4) for v in row] for row in grid]
                                                                 for grid in maps.tolist()]}  # fmt: skip
            answers.append(answer)
        return answers

    def view(self, width: int, height: int) -> dict[str, float]:
        """The square of the picture the model saw, in the picture's pixels (what an attention map covers): its
        centre cropped after the shorter side is resized, or the whole picture padded (left, top < 0)."""
        size, fit, spec = (
            self.model.image_config.image_size,
            self.model.image_config.fit,
            self.model.encoder.backbone.spec,
        )
        side = (
            min(width, height) * size / round(size * spec.resize / spec.size) if fit == "crop" else max(width, height)
        )
        return {"left": (width - side) / 2, "top": (height - side) / 2, "side": side}

    def info(self) -> dict[str, Any]:
        return super().info() | {
            "vocab_size": self.model.tokenizer.vocab_size,
            "backbone": self.model.image_config.backbone,
        }
