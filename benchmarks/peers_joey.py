"""JoeyNMT 2.3.0 in `peers.py` (run in the peers venv): the model from `joeynmt.model.build_model` with a
recurrent encoder and decoder, decoding with `joeynmt.search.search` (its greedy and beam search) and
min_output_length = max_output_length = steps, training with the model's own loss (summed cross-entropy,
divided by the target tokens as Joey's trainer does) and torch's Adam."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import Tensor

UNK, PAD, BOS, EOS = 0, 1, 2, 3  # JoeyNMT's default special ids; word w is id 4 + w


def build_config(cfg: dict) -> dict:
    """The `model` section of a Joey configuration for the benchmark's model."""

    def side(hidden: int, **more) -> dict:
        return {
            "type": "recurrent",
            "rnn_type": "gru",
            "hidden_size": hidden,
            "num_layers": 1,
            "dropout": 0.0,
            "embeddings": {"embedding_dim": cfg["emb"], "dropout": 0.0},
            **more,
        }

    return {
        "encoder": side(cfg["hidden"], bidirectional=True),
        "decoder": side(
            cfg["dec_hidden"], attention="bahdanau", input_feeding=True, init_hidden="bridge", hidden_dropout=0.0
        ),
    }


class Adapter:
    name = "joeynmt"
    notes = [
        "output layer without bias (Joey's RecurrentDecoder), 8,000 parameters fewer",
        "the decoder projects the attention keys again at every decoding step (its forward is called per step)",
        "greedy and beam: joeynmt.search.search, min_output_length = max_output_length = 50",
        "loss: the model's summed cross-entropy divided by the target tokens (Joey's 'tokens' normalisation)",
    ]

    def __init__(self, cfg: dict):
        import joeynmt
        from joeynmt.model import build_model
        from joeynmt.vocabulary import Vocabulary

        self.version = joeynmt.__version__
        self.cfg = cfg
        specials = SimpleNamespace(
            unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>", sep_token=None, lang_tags=[],
            unk_id=UNK, pad_id=PAD, bos_id=BOS, eos_id=EOS, sep_id=None,
        )  # fmt: skip
        vocab = Vocabulary([f"w{i}" for i in range(cfg["vocab"] - 4)], specials)
        assert len(vocab) == cfg["vocab"], len(vocab)
        self.model = build_model(build_config(cfg), src_vocab=vocab, trg_vocab=vocab)
        self.model.loss_function = ("crossentropy", 0.0)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"])

    def step_module(self) -> torch.nn.Module:
        return self.model.decoder.rnn  # one call per decoder step

    def _batch(self, src_words: Tensor, trg: Tensor | None, train: bool):
        from joeynmt.batch import Batch

        src = torch.cat([src_words + 4, torch.full((src_words.size(0), 1), EOS)], dim=1)
        lengths = torch.full((src.size(0),), src.size(1))
        indices = torch.arange(src.size(0))
        return Batch(src, lengths, None, trg, None, indices, torch.device("cpu"), PAD, EOS, is_train=train)

    def source_batch(self, words: Tensor):
        return self._batch(words, None, False)

    def train_batch(self, src_words: Tensor, tgt_words: Tensor):
        n = tgt_words.size(0)
        trg = torch.cat([torch.full((n, 1), BOS), tgt_words + 4, torch.full((n, 1), EOS)], dim=1)
        return self._batch(src_words, trg, True)

    def _search(self, batch, beam_size: int) -> list[int]:
        from joeynmt.search import search

        self.model.eval()
        steps = self.cfg["steps"]
        output, _, _ = search(
            self.model, batch, max_output_length=steps, beam_size=beam_size, beam_alpha=1.0, min_output_length=steps
        )
        return [-1 if bool((row == EOS).any()) else len(row) for row in torch.as_tensor(output)]

    def greedy(self, batch) -> list[int]:
        return self._search(batch, 1)

    def beam(self, batch) -> list[int]:
        return self._search(batch, self.cfg["beam"])

    def train_step(self, batch) -> float:
        self.model.train()
        loss, _, _, _ = self.model(return_type="loss", **vars(batch))
        loss = batch.normalize(loss, "tokens")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()
