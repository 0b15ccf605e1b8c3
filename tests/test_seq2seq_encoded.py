"""Training pairs as compact token ids (seq2seq.encoded): the batches they make are the very batches the text made."""

from __future__ import annotations

import argparse
import random
from dataclasses import replace

import numpy as np
import pytest
import torch

import seq2seq.encoded
from core import DecoderConfig, SentencePieceTokenizer, WordTokenizer
from core.errors import UserError
from seq2seq.batching import encoded_batches, pair_batches
from seq2seq.encoded import EncodedPairs, Side, encode_pairs, trainable
from seq2seq.training import trainable_pairs
from seq2seq.translator import EncoderConfig, Translator

WORDS = "haus baum katze hund maus vogel ball rot klein groß sieht den die der".split()


def sentences(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        words = rng.choices(WORDS, k=rng.randint(1, 9))
        pairs.append((" ".join(words) + " .", " ".join(reversed(words)) + " !"))
    return pairs


def translator(tokenizer, target_order: str = "left-to-right") -> Translator:
    return Translator(tokenizer, tokenizer, EncoderConfig(enc_emb_dim=4, enc_hidden_dim=4, target_order=target_order),
                      DecoderConfig(emb_dim=4, hidden_dim=4, attention="luong"))  # fmt: skip


@pytest.fixture(scope="module")
def tokenizers():
    text = "\n".join(s + "\n" + t for s, t in sentences(300, seed=0))
    return {"word": WordTokenizer.train(text), "unigram": SentencePieceTokenizer.train(text, 300, "unigram")}


@pytest.mark.parametrize("kind", ["word", "unigram"])
@pytest.mark.parametrize("target_order", ["left-to-right", "right-to-left"])
@pytest.mark.parametrize("swapped", [False, True])
def test_encoded_batches_are_the_batches_of_the_text(tokenizers, monkeypatch, kind, target_order, swapped):
    monkeypatch.setattr(seq2seq.encoded, "CHUNK", 37)  # several chunks, joined
    pairs = sentences(400, seed=1) + [("  ", "x ."), ("ein satz .", "")]  # blank sides never train
    model = translator(tokenizers[kind], target_order)
    encoded = encode_pairs(pairs, (tokenizers[kind].to_dict(),) * 2, progress=False)
    if swapped:  # a reverse model's pairs
        pairs, encoded = [(t, s) for s, t in pairs], encoded.swapped()
    args = argparse.Namespace(max_source_len=7, max_target_len=8)
    with pytest.warns(UserWarning, match="training pairs are set aside"):
        kept = trainable(encoded, args, warn=True)
    with pytest.warns(UserWarning, match="training pairs are set aside"):
        assert [pairs[i] for i in kept] == trainable_pairs(model, pairs, args, warn=True)
    from_text = pair_batches(model, [pairs[i] for i in kept], max_tokens=60, seed=5)
    from_ids = encoded_batches(model, encoded, kept, max_tokens=60, seed=5)
    assert len(from_ids) == len(from_text) > 5
    for epoch in range(2):
        for index in range(len(from_text)):
            for a, b in zip(from_ids.batch(epoch, index), from_text.batch(epoch, index)):
                assert torch.equal(a, b)


def test_ids_take_two_bytes_a_token_for_small_vocabularies_and_four_beyond():
    assert Side.of([[1, 2], [], [65_535]], vocab_size=65_536).ids.dtype == np.uint16
    wide = Side.of([[1, 2], [], [70_000]], vocab_size=70_001)
    assert wide.ids.dtype == np.int32 and [wide[i] for i in range(3)] == [[1, 2], [], [70_000]]
    joined = Side.joined([Side.of([[1], [2, 3]], 10), Side.of([[], [4, 5, 6]], 10)])
    assert [joined[i] for i in range(4)] == [[1], [2, 3], [], [4, 5, 6]] and joined.lengths().tolist() == [1, 2, 0, 3]


def test_no_trainable_pair_is_one_line(tokenizers):
    encoded = encode_pairs(sentences(20, seed=2), (tokenizers["word"],) * 2, progress=False)
    with pytest.raises(UserError, match="no training pair is within --max-source-len 1"):
        trainable(encoded, argparse.Namespace(max_source_len=1, max_target_len=1), warn=False)
    empty = encode_pairs([], (tokenizers["word"],) * 2, progress=False)
    assert len(empty) == 0 and isinstance(replace(empty), EncodedPairs)
