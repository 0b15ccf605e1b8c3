"""A training corpus as token ids, compactly: each side's ids (without <bos>/<eos>) in one flat numpy array with
offsets, two bytes a token for vocabularies of up to 65,536. Millions of pairs as Python lists of lists of ints
would take tens of bytes a token; here a 2-million-pair corpus takes ~0.2 GB, is encoded in large batches
(sentencepiece on every thread), and goes to the members' processes as a few buffers."""

from __future__ import annotations

import argparse
import itertools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from tqdm import tqdm

from core.errors import UserError
from core.tokenizers import BOS, EOS, SentencePieceTokenizer, Tokenizer, tokenizer_from_dict

CHUNK = 20_000  # pairs encoded at a time


def encode_texts(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    """`tokenizer.encode` of each text; sentencepiece encodes the whole list at once, on torch's threads."""
    if isinstance(tokenizer, SentencePieceTokenizer):
        return tokenizer.sp.encode(texts, num_threads=torch.get_num_threads())
    return [tokenizer.encode(text) for text in texts]


@dataclass(frozen=True)
class Side:
    """One side's token ids: sentence i is ids[offsets[i] : offsets[i + 1]]."""

    ids: np.ndarray
    offsets: np.ndarray

    @classmethod
    def of(cls, encoded: list[list[int]], vocab_size: int) -> Side:
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        dtype = np.uint16 if vocab_size <= 1 << 16 else np.int32
        ids = np.fromiter(itertools.chain.from_iterable(encoded), dtype=dtype, count=int(offsets[-1]))
        return cls(ids, offsets)

    @classmethod
    def joined(cls, parts: list[Side]) -> Side:
        starts = np.cumsum([0] + [len(part.ids) for part in parts[:-1]])
        offsets = [parts[0].offsets[:1]] + [part.offsets[1:] + start for part, start in zip(parts, starts)]
        return cls(np.concatenate([part.ids for part in parts]), np.concatenate(offsets))

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, i: int) -> list[int]:
        return self.ids[self.offsets[i] : self.offsets[i + 1]].tolist()


@dataclass(frozen=True)
class EncodedPairs:
    """(source, target) sentence pairs as token ids; `blank`: pairs with a side of white space alone (read from
    aligned files), which never train."""

    source: Side
    target: Side
    blank: np.ndarray

    def __len__(self) -> int:
        return len(self.blank)

    def swapped(self) -> EncodedPairs:
        """The pairs the other way round (target -> source), as a reverse model trains on them."""
        return replace(self, source=self.target, target=self.source)


def encode_pairs(
    pairs: Sequence[tuple[str, str]], tokenizers: tuple[Tokenizer, Tokenizer] | tuple[dict, dict], progress: bool = True
) -> EncodedPairs:
    """Encode every pair with the source and target tokenizers (or their plain data, as `RunSetup` holds them),
    with a progress bar."""
    src_tok, tgt_tok = (tokenizer_from_dict(t) if isinstance(t, dict) else t for t in tokenizers)
    sources, targets, blanks = [], [], []
    with tqdm(total=len(pairs), unit=" pairs", desc="encoding", delay=2, disable=not progress) as bar:
        for start in range(0, len(pairs), CHUNK):
            chunk = pairs[start : start + CHUNK]
            sources.append(Side.of(encode_texts(src_tok, [s for s, _ in chunk]), src_tok.vocab_size))
            targets.append(Side.of(encode_texts(tgt_tok, [t for _, t in chunk]), tgt_tok.vocab_size))
            blanks.append(np.array([not s.strip() or not t.strip() for s, t in chunk], dtype=bool))
            bar.update(len(chunk))
    if not pairs:
        empty = Side.of([], 1)
        return EncodedPairs(empty, empty, np.zeros(0, dtype=bool))
    return EncodedPairs(Side.joined(sources), Side.joined(targets), np.concatenate(blanks))


def trainable(encoded: EncodedPairs, args: argparse.Namespace, warn: bool) -> np.ndarray:
    """The indices of the training pairs with something on both sides and at most --max-source-len /
    --max-target-len tokens (what one batch holds, and so memory, is bounded by them); one warning counts those
    set aside."""
    whole = ~encoded.blank
    fits = (encoded.source.lengths() <= args.max_source_len) & (encoded.target.lengths() <= args.max_target_len)
    kept = np.flatnonzero(whole & fits)
    if warn and len(kept) < int(whole.sum()):
        warnings.warn(
            f"{int(whole.sum()) - len(kept)} of the {int(whole.sum())} training pairs are set aside: longer than "
            f"--max-source-len {args.max_source_len} or --max-target-len {args.max_target_len} tokens"
        )
    if not len(kept):
        raise UserError(
            f"no training pair is within --max-source-len {args.max_source_len} and --max-target-len "
            f"{args.max_target_len} tokens"
        )
    return kept


class Examples(Sequence):
    """The chosen pairs of an `EncodedPairs` as a translator's examples: (source ids + <eos>, <bos> + target ids
    in the order the model writes them + <eos>), each made when it is asked for."""

    def __init__(self, encoded: EncodedPairs, indices: np.ndarray, right_to_left: bool):
        self.encoded, self.indices, self.right_to_left = encoded, indices, right_to_left

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[list[int], list[int]]:  # type: ignore[override]
        pair = int(self.indices[i])
        target = self.encoded.target[pair]
        return self.encoded.source[pair] + [EOS], [BOS] + (target[::-1] if self.right_to_left else target) + [EOS]

    def target_lengths(self) -> np.ndarray:
        """len(example[1]) of every example."""
        return self.encoded.target.lengths()[self.indices] + 2
