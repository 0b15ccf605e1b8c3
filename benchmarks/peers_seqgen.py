"""This toolkit in `peers.py`, through its public API alone, as a user's code would call it: a `Translator`
built from `EncoderConfig` and `DecoderConfig` with word tokenizers, `Translator.search` on text with
min_len = max_len = steps (EOS banned at every step) on all the sentences at once with
batch_size 64, and `seq2seq_forward` + cross-entropy + Adam for training.
No command-line-only setting (such as core.console.keep_freed_memory) is applied."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from core import BOS, EOS, SPECIALS, DecoderConfig, WordTokenizer
from seq2seq.translator import EncoderConfig, Translator, seq2seq_forward


class Adapter:
    name = "seqgen"
    notes = ["this toolkit: seq2seq.Translator (EncoderConfig + DecoderConfig), Translator.search on text"]
    version = "this checkout"
    batches_itself = True  # Translator.search takes every sentence and decodes them batch_size at a time

    def __init__(self, cfg: dict):
        self.cfg = cfg
        words = WordTokenizer([f"w{i}" for i in range(cfg["vocab"] - len(SPECIALS))])
        encoder = EncoderConfig(
            enc_emb_dim=cfg["emb"], enc_hidden_dim=cfg["hidden"], enc_cell="gru", enc_dropout=0.0, bridge="learned"
        )
        decoder = DecoderConfig(
            emb_dim=cfg["emb"],
            hidden_dim=cfg["dec_hidden"],
            cell="gru",
            attention="bahdanau",
            dropout=0.0,
            input_feeding=True,
        )
        self.model = Translator(words, words, encoder, decoder)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"])

    def step_module(self) -> None:
        return None  # the output lengths show the steps: a hypothesis has one token per step

    def source_batch(self, words: Tensor) -> list[str]:
        """Sentences of words w0 w1 ...; the translator appends EOS, so each is words + 1 tokens."""
        return [" ".join(f"w{int(w)}" for w in row) for row in words]

    def train_batch(self, src_words: Tensor, tgt_words: Tensor) -> tuple[Tensor, ...]:
        off, n = len(SPECIALS), tgt_words.size(0)  # word w is id 4 + w
        src = torch.cat([src_words + off, torch.full((n, 1), EOS)], dim=1)
        lengths = torch.full((n,), src.size(1))
        tgt_in = torch.cat([torch.full((n, 1), BOS), tgt_words + off], dim=1)
        tgt_out = torch.cat([tgt_words + off, torch.full((n, 1), EOS)], dim=1)
        return src, lengths, tgt_in, tgt_out

    def _search(self, sentences: list[str], **options) -> list[int]:
        steps = self.cfg["steps"]
        found = self.model.search(sentences, max_len=steps, min_len=steps, batch_size=self.cfg["batch"], **options)
        return [len(hyps[0].tokens) if not hyps[0].finished else -1 for hyps in found]

    def greedy(self, sentences: list[str]) -> list[int]:
        return self._search(sentences, method="greedy")

    def beam(self, sentences: list[str]) -> list[int]:
        return self._search(sentences, method="beam", beam_size=self.cfg["beam"])

    def train_step(self, batch: tuple[Tensor, ...]) -> float:
        self.model.train()
        logits, targets, _ = seq2seq_forward(self.model, batch, None)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()
