"""Tokenizers behind one interface: `encode(str) -> list[int]`, `decode(list[int]) -> str`, plain-data save/load.

Every vocabulary starts with the same four specials, so `PAD, BOS, EOS, UNK` are the same ids everywhere.
"""

from __future__ import annotations

import base64
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from core.errors import UserError, check_range

SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
PAD, BOS, EOS, UNK = range(4)
# Never a model's output: padding is no token, and <bos> only starts the decoder (label smoothing gives
# both a little probability, which sampling would otherwise draw now and then).
NOT_GENERATED = (PAD, BOS)
MIN_VOCAB = len(SPECIALS) + 1  # the specials and one symbol (sentencepiece asks for more: it names how many)


def _warn_unknown(unknown: Iterable[str]) -> None:
    shown = sorted(set(unknown))
    if shown:
        listed = ", ".join(repr(u) for u in shown[:10]) + (" ..." if len(shown) > 10 else "")
        warnings.warn(f"{len(shown)} symbol(s) not in the vocabulary were mapped to <unk>: {listed}", stacklevel=3)


class VocabTokenizer:
    """Shared logic of the character and word tokenizers: a symbol list, specials first.

    Subclasses define `split(text) -> pieces` and `join(pieces) -> text`.
    """

    kind = ""

    def split(self, text: str) -> list[str]:
        raise NotImplementedError  # each tokenizer says how its text falls into pieces

    def join(self, pieces: list[str]) -> str:
        raise NotImplementedError

    def __init__(self, symbols: list[str]):
        self.symbols = list(SPECIALS) + [s for s in symbols if s not in SPECIALS]
        self.index = {s: i for i, s in enumerate(self.symbols)}

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def vocab_size(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> list[int]:
        pieces = self.split(text)
        _warn_unknown(p for p in pieces if p not in self.index)
        return [self.index.get(p, UNK) for p in pieces]

    def decode(self, ids: Iterable[int]) -> str:
        return self.join([self.symbols[i] for i in ids if i not in (PAD, BOS, EOS)])

    def to_dict(self) -> dict:
        return {"kind": self.kind, "symbols": self.symbols[len(SPECIALS) :]}


class CharTokenizer(VocabTokenizer):
    """One token per Unicode code point; `decode(encode(s)) == s` for any text built from the vocabulary."""

    kind = "char"

    @classmethod
    def train(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    def split(self, text: str) -> list[str]:
        return list(text)

    def join(self, pieces: list[str]) -> str:
        return "".join(pieces)


_WORD_RE = re.compile(r"\n|\w+(?:'\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = set(".,;:!?)]}'\n")
_NO_SPACE_AFTER = set("([{\n")


class WordTokenizer(VocabTokenizer):
    """Words and punctuation marks as tokens (newlines kept); rare words become <unk>."""

    kind = "word"

    @classmethod
    def train(cls, text: str, max_size: int = 10000, min_count: int = 2) -> WordTokenizer:
        """The `max_size - 4` most frequent words seen at least `min_count` times, after the four specials."""
        check_range("the word vocabulary size", max_size, MIN_VOCAB)
        counts = Counter(_WORD_RE.findall(text))
        frequent = [w for w, c in counts.most_common() if c >= min_count][: max_size - len(SPECIALS)]
        return cls(sorted(frequent))

    def split(self, text: str) -> list[str]:
        return _WORD_RE.findall(text)

    def encode(self, text: str) -> list[int]:
        # Rare words are expected at word level: map them silently, as the vocabulary was cut on purpose.
        return [self.index.get(p, UNK) for p in self.split(text)]

    def join(self, pieces: list[str]) -> str:
        out = ""
        for p in pieces:
            if out and not out.endswith(tuple(_NO_SPACE_AFTER)) and p[0] not in _NO_SPACE_BEFORE:
                out += " "
            out += p
        return out


class SentencePieceTokenizer:
    """Subwords (BPE or unigram) from the sentencepiece library, lossless on any text via byte fallback."""

    kind = "sentencepiece"

    def __init__(self, model_proto: bytes):
        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)

    @classmethod
    def train(cls, text: str, vocab_size: int = 4000, model_type: str = "bpe") -> SentencePieceTokenizer:
        lines = [line for line in text.splitlines() if line.strip()]
        if not lines:
            raise UserError("cannot train a sentencepiece model on empty text")
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "corpus.txt"
            corpus.write_text("\n".join(lines), encoding="utf-8")
            try:
                spm.SentencePieceTrainer.train(
                    input=str(corpus),
                    model_prefix=str(Path(tmp) / "sp"),
                    vocab_size=vocab_size,
                    model_type=model_type,
                    character_coverage=1.0,
                    byte_fallback=True,
                    # identity normalisation and no dummy prefix keep decode(encode(s)) == s
                    normalization_rule_name="identity",
                    add_dummy_prefix=False,
                    remove_extra_whitespaces=False,
                    split_by_whitespace=True,
                    user_defined_symbols=["\n"],
                    pad_id=PAD,
                    bos_id=BOS,
                    eos_id=EOS,
                    unk_id=UNK,
                    hard_vocab_limit=False,
                    minloglevel=2,
                    num_threads=2,
                )
            except RuntimeError as err:
                if needed := re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(err)):
                    raise UserError(
                        f"vocabulary size {vocab_size} is too small for this text; the smallest allowed "
                        f"is {needed[1]} (the specials, 256 bytes and its characters)"
                    ) from None
                raise UserError(f"sentencepiece training failed: {str(err).splitlines()[-1]}") from None
            return cls((Path(tmp) / "sp.model").read_bytes())

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text)

    def sample(self, text: str, alpha: float) -> list[int]:
        """A random segmentation of text, for subword regularisation in training (Kudo, 2018). Unigram models
        draw from all segmentations with probabilities ~ p^alpha (smaller alpha: more varied); BPE models drop
        each merge with probability alpha (BPE-dropout). Draws follow `spm.set_random_generator_seed`."""
        return self.sp.encode(text, enable_sampling=True, alpha=alpha, nbest_size=-1)

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([i for i in ids if i not in (PAD, BOS, EOS)])

    def to_dict(self) -> dict:
        return {"kind": self.kind, "model": base64.b64encode(self.model_proto).decode("ascii")}


Tokenizer = CharTokenizer | WordTokenizer | SentencePieceTokenizer


def tokenizer_from_dict(data: dict) -> Tokenizer:
    """Rebuild a tokenizer from `to_dict()` output (plain data kept in checkpoints)."""
    kind = data.get("kind")
    if kind == "char":
        return CharTokenizer(data["symbols"])
    if kind == "word":
        return WordTokenizer(data["symbols"])
    if kind == "sentencepiece":
        return SentencePieceTokenizer(base64.b64decode(data["model"]))
    raise UserError(f"unknown tokenizer kind {kind!r}; expected char, word or sentencepiece")


def train_tokenizer(level: str, text: str, vocab_size: int = 4000) -> Tokenizer:
    """Build the tokenizer for `level` (char, word, bpe or unigram) from training text."""
    if level == "char":
        return CharTokenizer.train(text)
    if level == "word":
        return WordTokenizer.train(text, max_size=vocab_size)
    if level in ("bpe", "unigram"):
        return SentencePieceTokenizer.train(text, vocab_size=vocab_size, model_type=level)
    raise UserError(f"--level {level!r} is not one of char, word, bpe, unigram")
