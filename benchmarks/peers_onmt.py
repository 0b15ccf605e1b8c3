"""OpenNMT-py 3.5.1 in `peers.py` (run in the peers venv): the model from `onmt.model_builder.build_model` with
the options `onmt_train` would parse (-encoder_type brnn -rnn_type GRU -global_attention mlp -input_feed 1
-bridge), decoding with `onmt.translate.Translator.translate_batch` (GreedySearch with top-k 1, i.e. argmax,
and BeamSearch) with min_length = max_length = steps, training with `NMTModel.forward` + the generator +
cross-entropy + torch's Adam.

OpenNMT's attention attends over memory vectors of the decoder's own size, so a decoder of 512 needs an
encoder of 512 in all: 256 per direction, not 512 (the memory is 512 wide, not 1024)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

UNK, PAD, BOS, EOS = 0, 1, 2, 3  # the vocabulary's order below; word w is id 4 + w


def model_options(cfg: dict) -> list[str]:
    """The `onmt_train` flags of the benchmark's model (the data flags only satisfy the parser)."""
    return [
        "-data", "{}", "-save_data", "unused", "-src_vocab", "unused", "-tgt_vocab", "unused",
        "-encoder_type", "brnn", "-decoder_type", "rnn", "-rnn_type", "GRU", "-enc_layers", "1", "-dec_layers", "1",
        "-enc_hid_size", str(cfg["dec_hidden"]), "-dec_hid_size", str(cfg["dec_hidden"]),
        "-word_vec_size", str(cfg["emb"]), "-global_attention", "mlp", "-input_feed", "1", "-bridge",
        "-dropout", "0", "-attention_dropout", "0", "-param_init", "0.1",
    ]  # fmt: skip


class Adapter:
    name = "opennmt-py"
    notes = [
        "encoder 256 per direction (memory 512): OpenNMT's attention needs memory vectors of the decoder's size",
        "bridge: OpenNMT's -bridge, ReLU(Linear) on each direction's final state (not tanh of one Linear)",
        "'mlp' attention: Bahdanau scores, but its attentional vector Linear([c; h]) has no tanh",
        "the attention keys are projected again at every decoding step",
        "greedy: GreedySearch with random_sampling_topk 1 (argmax); beam: BeamSearch; min_length = max_length = 50",
    ]

    def __init__(self, cfg: dict):
        import onmt
        import pyonmttok
        from onmt.constants import DefaultTokens
        from onmt.model_builder import build_model
        from onmt.opts import train_opts
        from onmt.utils.parse import ArgumentParser

        self.version = onmt.__version__
        self.cfg = cfg
        parser = ArgumentParser(description="peers")
        train_opts(parser)
        opt = parser.parse_args(model_options(cfg))
        ArgumentParser.update_model_opts(opt)
        ArgumentParser.validate_model_opts(opt)
        specials = [DefaultTokens.UNK, DefaultTokens.PAD, DefaultTokens.BOS, DefaultTokens.EOS]
        vocab = pyonmttok.build_vocab_from_tokens(specials + [f"w{i}" for i in range(cfg["vocab"] - 4)])
        assert (vocab[DefaultTokens.PAD], vocab[DefaultTokens.BOS], vocab[DefaultTokens.EOS]) == (PAD, BOS, EOS)
        self.vocabs = {"src": vocab, "tgt": vocab, "data_task": "seq2seq", "decoder_start_token": DefaultTokens.BOS}
        self.model = build_model(opt, opt, self.vocabs, None, -1)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"])
        self.translators = {"greedy": self._translator(1, 1), "beam": self._translator(cfg["beam"], 0)}

    def _translator(self, beam_size: int, topk: int):
        from onmt.translate import GNMTGlobalScorer, Translator

        scorer = GNMTGlobalScorer(alpha=0.0, beta=0.0, length_penalty="none", coverage_penalty="none")
        steps = self.cfg["steps"]
        return Translator(
            self.model, self.vocabs, gpu=-1, n_best=1, min_length=steps, max_length=steps, max_length_ratio=0,
            beam_size=beam_size, random_sampling_topk=topk, global_scorer=scorer, report_score=False,
        )  # fmt: skip

    def step_module(self) -> torch.nn.Module:
        return self.model.decoder.rnn  # one call per decoder step

    def source_batch(self, words: Tensor) -> dict:
        src = torch.cat([words + 4, torch.full((words.size(0), 1), EOS)], dim=1)
        n = src.size(0)
        return {"src": src.unsqueeze(2), "srclen": torch.full((n,), src.size(1)), "indices": torch.arange(n)}

    def train_batch(self, src_words: Tensor, tgt_words: Tensor) -> tuple[dict, Tensor]:
        n = tgt_words.size(0)
        tgt = torch.cat([torch.full((n, 1), BOS), tgt_words + 4, torch.full((n, 1), EOS)], dim=1)
        return self.source_batch(src_words), tgt.unsqueeze(2)  # NMTModel feeds all but the last token

    def _translate(self, batch: dict, kind: str) -> list[int]:
        self.model.eval()
        results = self.translators[kind].translate_batch(batch, attn_debug=False)
        return [-1 if bool((best[0] == EOS).any()) else len(best[0]) for best in results["predictions"]]

    def greedy(self, batch: dict) -> list[int]:
        return self._translate(batch, "greedy")

    def beam(self, batch: dict) -> list[int]:
        return self._translate(batch, "beam")

    def train_step(self, batch: tuple[dict, Tensor]) -> float:
        source, tgt = batch
        self.model.train()
        out, _ = self.model(source["src"], tgt, source["srclen"])
        logits = self.model.generator(out)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt[:, 1:, 0].reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()
