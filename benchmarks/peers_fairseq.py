"""fairseq 0.12.2 in `peers.py` (run in the peers venv). fairseq has no GRU model: its one RNN is the LSTM
model (`fairseq.models.lstm.LSTMModel.build_model`, bidirectional encoder, input feeding, Luong "general"
attention), so that is what runs, at the benchmark's sizes. Decoding is its `SequenceGenerator` (beam 1 is
fairseq's greedy); training is the model's forward + cross-entropy + torch's Adam.

fairseq 0.12.2 does not import on Python 3.11 as installed: its (and hydra-core 1.0's) dataclass configs use
instances as defaults, which Python 3.11 refuses unless their class is hashable. `import_fairseq` lets those
classes hash by identity while fairseq imports (Python 3.10's behaviour, which only refused list, dict and set
defaults) and undoes the patch after; the installed files are not edited.

SequenceGenerator runs max_len + 1 decoder steps, the last one forced to EOS, and bans EOS while step < min_len;
min_len = max_len = steps - 1 makes it run exactly `steps` decoder steps (steps - 1 tokens, then EOS)."""

from __future__ import annotations

import argparse
import dataclasses
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import Tensor

BOS, PAD, EOS, UNK = 0, 1, 2, 3  # fairseq.data.Dictionary's specials; word w is id 4 + w


def import_fairseq() -> None:
    """Import fairseq with its mutable dataclass defaults allowed (see the module's docstring)."""
    original = dataclasses._process_class  # type: ignore[attr-defined]

    def process_class(cls, *args, **kwargs):
        cls = original(cls, *args, **kwargs)
        if cls.__module__.startswith(("fairseq", "hydra")) and cls.__hash__ is None:
            cls.__hash__ = object.__hash__
        return cls

    dataclasses._process_class = process_class  # type: ignore[attr-defined]
    try:
        import fairseq.models.lstm  # noqa: F401
        import fairseq.sequence_generator  # noqa: F401
    finally:
        dataclasses._process_class = original  # type: ignore[attr-defined]


def model_args(cfg: dict) -> argparse.Namespace:
    """The `fairseq-train --arch lstm` arguments of the benchmark's model."""
    zero = dict(dropout=0.0, encoder_dropout_in=0.0, encoder_dropout_out=0.0)
    zero.update(decoder_dropout_in=0.0, decoder_dropout_out=0.0)
    return argparse.Namespace(
        arch="lstm", criterion="cross_entropy", encoder_embed_dim=cfg["emb"], encoder_hidden_size=cfg["hidden"],
        encoder_layers=1, encoder_bidirectional=True, decoder_embed_dim=cfg["emb"],
        decoder_hidden_size=cfg["dec_hidden"], decoder_out_embed_dim=cfg["dec_hidden"], decoder_layers=1,
        decoder_attention="1", share_decoder_input_output_embed=False, share_all_embeddings=False, **zero,
    )  # fmt: skip


def steps_of(tokens: Tensor) -> int:
    """The decoder steps behind one hypothesis: its tokens with the forced final EOS; -1 where EOS came early."""
    early = bool((tokens[:-1] == EOS).any()) or int(tokens[-1]) != EOS
    return -1 if early else len(tokens)


class Adapter:
    name = "fairseq"
    notes = [
        "LSTM, not GRU: fairseq has no GRU model (LSTMModel is its only RNN); 4 gates instead of 3",
        "Luong 'general' attention (query projected to the memory, dot product), not Bahdanau",
        "bridge: Linear(final fwd+bwd) for h0 and another for c0, without tanh; combine layer without bias",
        "greedy = SequenceGenerator with beam 1; min_len = max_len = 49: 49 tokens + forced EOS = 50 decoder steps",
    ]

    def __init__(self, cfg: dict):
        import_fairseq()
        import fairseq
        from fairseq.data import Dictionary
        from fairseq.models.lstm import LSTMModel

        self.version = fairseq.__version__
        self.cfg = cfg
        self.dictionary = Dictionary()
        for i in range(cfg["vocab"] - len(self.dictionary)):
            self.dictionary.add_symbol(f"w{i}")
        assert (self.dictionary.bos(), self.dictionary.pad(), self.dictionary.eos()) == (BOS, PAD, EOS)
        task = SimpleNamespace(source_dictionary=self.dictionary, target_dictionary=self.dictionary)
        self.model = LSTMModel.build_model(model_args(cfg), task)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"])
        self.generators = {"greedy": self._generator(1), "beam": self._generator(cfg["beam"])}

    def _generator(self, beam_size: int):
        from fairseq.sequence_generator import SequenceGenerator

        steps = self.cfg["steps"] - 1  # + the forced EOS step
        return SequenceGenerator(
            [self.model], self.dictionary, beam_size=beam_size, max_len_a=0, max_len_b=steps, min_len=steps
        )

    def step_module(self) -> torch.nn.Module:
        return self.model.decoder.layers[0]  # its LSTMCell: one call per decoder step

    def source_batch(self, words: Tensor) -> dict:
        src = torch.cat([words + 4, torch.full((words.size(0), 1), EOS)], dim=1)
        return {"net_input": {"src_tokens": src, "src_lengths": torch.full((src.size(0),), src.size(1))}}

    def train_batch(self, src_words: Tensor, tgt_words: Tensor) -> tuple[dict, Tensor]:
        n = tgt_words.size(0)
        prev = torch.cat([torch.full((n, 1), EOS), tgt_words + 4], dim=1)  # fairseq starts the decoder with EOS
        target = torch.cat([tgt_words + 4, torch.full((n, 1), EOS)], dim=1)
        sample = self.source_batch(src_words)
        sample["net_input"]["prev_output_tokens"] = prev
        return sample, target

    def _generate(self, sample: dict, kind: str) -> list[int]:
        self.model.eval()
        found = self.generators[kind].generate([self.model], sample)
        return [steps_of(hyps[0]["tokens"]) for hyps in found]

    def greedy(self, sample: dict) -> list[int]:
        return self._generate(sample, "greedy")

    def beam(self, sample: dict) -> list[int]:
        return self._generate(sample, "beam")

    def train_step(self, batch: tuple[dict, Tensor]) -> float:
        sample, target = batch
        self.model.train()
        logits, _ = self.model(**sample["net_input"])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), target.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()
