"""`Translator`: RNN encoder + the shared attention decoder + source/target tokenizers, with `translate`."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.batching import pad
from core.decoder import DecoderConfig, RNNDecoder, build_decoder
from core.ensemble import Ensemble
from core.errors import UserError, check_int, check_range
from core.search import Hypothesis, search_with, seeded
from core.search_config import SearchConfig
from core.task import load_task, save_task, task_payload
from core.tokenizers import BOS, EOS, NOT_GENERATED, PAD, Tokenizer
from seq2seq.encoder import RNNEncoder

TASK = "translation"
# source tokens a sentence may have: beyond it a sentence is refused rather than cut (a translation of part of a
# line would pass for the whole), and decoding memory grows with it
MAX_SOURCE_LEN = 1000


@dataclass
class EncoderConfig:
    enc_emb_dim: int = 256
    enc_hidden_dim: int = 256
    enc_layers: int = 1
    enc_cell: str = "gru"
    enc_dropout: float = 0.3
    enc_word_dropout: float = 0.0
    bridge: str = "learned"
    share_embeddings: bool = False  # one embedding matrix for source and target (needs one joint vocabulary)
    # right-to-left: the decoder writes each translation from its last token to its first, a second view of
    # the same translations that scores the left-to-right model's n best (`translate_reranked`)
    target_order: str = "left-to-right"
    # labels of the two languages (fairseq's --source-lang / --target-lang, e.g. de, en), so that ensembles and
    # reranking models of the wrong direction are refused; empty: not known, nothing is checked
    source_lang: str = ""
    target_lang: str = ""

    CHOICES = {
        "enc_cell": ["gru", "lstm"],
        "bridge": ["learned", "last", "zero"],
        "target_order": ["left-to-right", "right-to-left"],
    }
    RANGES = {
        "enc_emb_dim": (1,),
        "enc_hidden_dim": (1,),
        "enc_layers": (1,),
        "enc_dropout": (0, 1, False, True),
        "enc_word_dropout": (0, 1, False, True),
    }  # core.errors.check_config


CONFIGS = {"encoder": EncoderConfig, "decoder": DecoderConfig}  # a translation checkpoint's configs, by name


def build_encoder(vocab_size: int, config: EncoderConfig, decoder: DecoderConfig) -> RNNEncoder:
    """Flatten the configs into RNNEncoder arguments."""
    return RNNEncoder(
        vocab_size,
        config.enc_emb_dim,
        config.enc_hidden_dim,
        config.enc_layers,
        cell=config.enc_cell,
        dropout=config.enc_dropout,
        bridge=config.bridge,
        decoder_hidden=decoder.hidden_dim,
        decoder_layers=decoder.num_layers,
        word_dropout=config.enc_word_dropout,
    )


def seq2seq_forward(model: Seq2Seq, batch: tuple[Tensor, ...], carry: Any) -> tuple[Tensor, Tensor, None]:
    """Trainer step: (src, src_lengths, tgt_in, tgt_out) -> logits (B, T, V), targets (B, T)."""
    src, src_lengths, tgt_in, tgt_out = batch
    return model(src, src_lengths, tgt_in), tgt_out, None


class Seq2Seq(nn.Module):
    """The network of the many-to-many pattern: an RNNEncoder reads the source into a Context (memory, mask,
    initial state) and the shared RNNDecoder, attending to that memory, writes the target. `Translator` adds
    the tokenizers, the configs, search and checkpoints."""

    def __init__(self, encoder: RNNEncoder, decoder: RNNDecoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder

    def forward(self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing: src (B, S) padded ids, src_lengths (B,), tgt_in (B, T) -> logits (B, T, V)."""
        return self.decoder(tgt_in, self.encoder(src, src_lengths))


class Translator(Seq2Seq):
    """Source tokenizer -> RNNEncoder -> Context -> RNNDecoder (attention) -> target tokenizer."""

    task = TASK

    def __init__(
        self, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, encoder: EncoderConfig, decoder: DecoderConfig
    ):
        if decoder.attention == "none":
            raise ValueError("a translator's decoder needs attention: 'bahdanau' or 'luong'")
        if encoder.target_order not in EncoderConfig.CHOICES["target_order"]:
            raise ValueError(
                f"target_order must be one of {EncoderConfig.CHOICES['target_order']}, got {encoder.target_order!r}"
            )
        network = build_encoder(src_tokenizer.vocab_size, encoder, decoder)
        super().__init__(network, build_decoder(tgt_tokenizer.vocab_size, decoder, memory_dim=network.memory_dim))
        self.src_tokenizer, self.tgt_tokenizer = src_tokenizer, tgt_tokenizer
        self.encoder_config, self.decoder_config = encoder, decoder
        self.right_to_left = encoder.target_order == "right-to-left"
        if encoder.share_embeddings:
            if src_tokenizer.to_dict() != tgt_tokenizer.to_dict():
                raise ValueError(
                    "share_embeddings needs one joint source and target vocabulary: with "
                    "--separate-vocab, add --share-embeddings false"
                )
            if encoder.enc_emb_dim != decoder.emb_dim:
                raise ValueError(
                    f"share_embeddings needs enc_emb_dim == emb_dim, got {encoder.enc_emb_dim} and "
                    f"{decoder.emb_dim} (or --share-embeddings false)"
                )
            self.encoder.embedding.weight = self.decoder.embedding.weight

    @property
    def device(self) -> torch.device:
        return self.decoder.embedding.weight.device

    # -- data -----------------------------------------------------------------------------------------
    def source_ids(self, sentence: str) -> list[int]:
        return self.src_tokenizer.encode(sentence) + [EOS]

    def target_ids(self, sentence: str) -> list[int]:
        return [BOS] + self.in_target_order(self.tgt_tokenizer.encode(sentence)) + [EOS]

    def in_target_order(self, ids: list[int]) -> list[int]:
        """Target tokens in the order the decoder writes them, or written tokens back in reading order (for a
        right-to-left model both reverse them)."""
        return ids[::-1] if self.right_to_left else ids

    def target_text(self, tokens: list[int]) -> str:
        """The detokenized text of tokens the decoder wrote."""
        return self.tgt_tokenizer.decode(self.in_target_order(tokens))

    def collate(self, pairs: list[tuple[list[int], list[int]]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Encoded (source, target) pairs -> src (B, S), src_lengths (B,), tgt_in (B, T), tgt_out (B, T)."""
        src, src_lengths = pad([s for s, _ in pairs])
        tgt_in, _ = pad([t[:-1] for _, t in pairs])
        tgt_out, _ = pad([t[1:] for _, t in pairs])
        return src, src_lengths, tgt_in, tgt_out

    # -- checkpoints --------------------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        return task_payload(
            TASK,
            {"encoder": self.encoder_config, "decoder": self.decoder_config},
            {"source": self.src_tokenizer, "target": self.tgt_tokenizer},
        )

    def save(self, path: str | Path) -> Path:
        return save_task(self, path)

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> Translator:
        """A checkpoint's translator in eval mode on `device`, its weights in `dtype` (bfloat16: faster decoding
        where the hardware multiplies it natively, scores rounded differently)."""
        build = lambda c, t: cls(t["source"], t["target"], c["encoder"], c["decoder"])  # noqa: E731
        return load_task(path, TASK, CONFIGS, build, device, dtype)

    # -- translation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def search(
        self,
        sentences: Sequence[str],
        config: SearchConfig | None = None,
        *,
        max_len_ratio: float = 1.5,
        batch_size: int = 64,
        ensemble_with: Sequence[Translator] = (),
        max_source_len: int = MAX_SOURCE_LEN,
        **options: Any,
    ) -> list[list[Hypothesis]]:
        """The n best hypotheses per sentence (greedy and sampling give one), as `config` says (default: beam 5,
        length penalty 1) with any of its fields overridden by keyword. A translation stops at `max_len_ratio`
        times its own source's tokens, plus 10 (or at config.max_len), so that what shares its batch changes
        nothing of it. Empty sentences get an empty hypothesis. A
        right-to-left model's tokens come as it wrote them, last word first (`target_text` reads them out).
        Sampling draws with one generator seeded by config.seed for the whole call (the same seed, sentences
        and batch size: the same draws). `ensemble_with`: other translators with the same vocabularies,
        searched together with this one (the mean of their next-token probabilities; `core.Ensemble`).
        A sentence of more than `max_source_len` source tokens is refused (`check_source_lengths`): the memory
        decoding holds, at most batch_size x beam_size x max_len x max_source_len float32 attention weights
        (1.3 GB at the defaults), is bounded whatever the input."""
        config = SearchConfig.of(config, DEFAULT_SEARCH, **options)
        sentences = sentences_of(sentences)
        check_int("batch_size", batch_size, 1)
        check_range("max_len_ratio", max_len_ratio, 0, 10)
        members = self._members(ensemble_with)
        for m in members:
            m.eval()
        decoder = Ensemble([m.decoder for m in members]) if len(members) > 1 else self.decoder
        generator = seeded(config.seed, self.device)
        results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0, True)] for _ in sentences]
        ids = self.check_source_lengths(sentences, max_source_len)
        encoded = {i: ids[i] for i, s in enumerate(sentences) if s.strip()}
        order = sorted(encoded, key=lambda i: len(encoded[i]))  # similar lengths together: little padding
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            src, lengths = pad([encoded[i] for i in rows])
            contexts = [m.encoder(src.to(m.device), lengths.to(m.device)) for m in members]
            ctx = decoder.join([c.to(self.device) for c in contexts]) if isinstance(decoder, Ensemble) else contexts[0]
            bos = torch.full((len(rows),), BOS, device=self.device)
            # each sentence's own limit, whatever else shares its batch
            max_len = lengths.mul(max_len_ratio).long().add(10).clamp(max=config.max_len).to(self.device)  # (B,)
            found = search_with(
                config, decoder, ctx, bos, eos=EOS, forbid=NOT_GENERATED, max_len=max_len, generator=generator
            )
            for i, hyps in zip(rows, found):
                results[i] = hyps
        return results

    def check_source_lengths(
        self,
        sentences: Sequence[str],
        max_source_len: int = MAX_SOURCE_LEN,
        name: str = "sentences[{}]",
        first: int = 0,
    ) -> list[list[int]]:
        """Each sentence's source ids (EOS included); a UserError naming the first sentence (`name` formatted with
        its number, counted from `first`) of more than `max_source_len` tokens, before anything is translated."""
        check_int("max_source_len", max_source_len, 1)
        ids = [self.source_ids(s) for s in sentences]
        for i, sentence_ids in enumerate(ids):
            if len(sentence_ids) - 1 > max_source_len:
                raise UserError(
                    f"{name.format(first + i)} has {len(sentence_ids) - 1} source tokens, more than "
                    f"{max_source_len} (the maximum source length); split it, or raise the maximum"
                )
        return ids

    @functools.cached_property
    def _pieces(self) -> dict[str, list[str]]:
        """Each side's piece for every id, made once (~12 ms for 4k pieces): ensemble members must map every
        id to the same piece, though their tokenizer files may differ in bytes (sentencepiece stores training
        details), and `search` checks that on every call."""
        return {
            side: [tok.decode([i]) for i in range(tok.vocab_size)]
            for side, tok in (("source", self.src_tokenizer), ("target", self.tgt_tokenizer))
        }

    @property
    def direction(self) -> str:
        """ "de->en", say, or "" when a language is not known."""
        c = self.encoder_config
        return f"{c.source_lang}->{c.target_lang}" if c.source_lang and c.target_lang else ""

    def check_direction(self, other: Translator, reverse: bool = False) -> None:
        """A ValueError when `other` translates another language pair than this model (or, with `reverse`,
        than the opposite direction); nothing when either direction is not known."""
        c = other.encoder_config
        expected = f"{c.target_lang}->{c.source_lang}" if reverse else other.direction
        if self.direction and other.direction and expected != self.direction:
            raise ValueError(
                f"it translates {other.direction}, and this model {self.direction}"
                + ("; a reverse model must translate the other way" if reverse else "")
            )

    def _members(self, ensemble_with: Sequence[Translator]) -> list[Translator]:
        """This model and those it searches with, checked and in eval mode."""
        others = list(ensemble_with) if not isinstance(ensemble_with, Translator) else [ensemble_with]
        for i, other in enumerate(others):
            if not isinstance(other, Translator):
                raise TypeError(f"ensemble_with[{i}] is a {type(other).__name__}, not a Translator")
            self._check_joinable(other)
        for m in (self, *others):
            m.eval()
        return [self, *others]

    def _check_joinable(self, other: Translator) -> None:
        self.check_direction(other)
        if other.right_to_left != self.right_to_left:
            raise ValueError(
                "ensemble members need the same target order; one writes left to right, the other right to left"
            )
        for side, pieces in self._pieces.items():
            if pieces != other._pieces[side]:
                raise ValueError(
                    f"ensemble members need the same vocabularies; the {side} vocabularies differ "
                    f"({len(pieces)} and {len(other._pieces[side])} entries)"
                )

    def translate(self, sentences: Sequence[str], config: SearchConfig | None = None, **options: Any) -> list[str]:
        """Translate each sentence (detokenized text); `config` and options as in `search`."""
        return [self.target_text(hyps[0].tokens) for hyps in self.search(sentences, config, **options)]

    def translate_nbest(
        self, sentences: Sequence[str], n_best: int, config: SearchConfig | None = None, **options: Any
    ) -> list[list[tuple[str, float]]]:
        """The n best translations of each sentence (beam search, n_best <= beam_size) with their scores."""
        return [
            [(self.target_text(h.tokens), h.score) for h in hyps]
            for hyps in self.search(sentences, config, **{**options, "n_best": n_best, "method": "beam"})
        ]

    @torch.no_grad()
    def score(
        self, sources: list[str], targets: list[str], batch_size: int = 64, ensemble_with: Sequence[Translator] = ()
    ) -> list[float]:
        """log p(target | source) for each pair, by teacher forcing, EOS included: the log_prob that search
        reports for a finished hypothesis of those tokens. With `ensemble_with`, each token's probability is
        the mean of the members', as in an ensemble's search."""
        sources, targets = sentences_of(sources, "sources"), sentences_of(targets, "targets")
        if len(sources) != len(targets):
            raise ValueError(
                f"score needs one target per source, got {len(sources)} sources and {len(targets)} targets"
            )
        check_int("batch_size", batch_size, 1)
        members = self._members(ensemble_with)
        scores: list[float] = []
        for start in range(0, len(sources), batch_size):
            pairs = [
                (self.source_ids(s), self.target_ids(t))
                for s, t in zip(sources[start : start + batch_size], targets[start : start + batch_size])
            ]
            batch = self.collate(pairs)
            per_member = []
            for m in members:
                logits, tgt_out, _ = seq2seq_forward(m, tuple(t.to(m.device) for t in batch), None)
                log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)
                per_member.append(log_probs.to(self.device))
            log_probs = torch.stack(per_member).logsumexp(dim=0) - math.log(len(members))
            scores += log_probs.masked_fill(batch[3].to(self.device) == PAD, 0.0).sum(dim=1).tolist()
        return scores

    def attention(
        self, sentence: str, config: SearchConfig | None = None, **options: Any
    ) -> tuple[list[str], list[str], Tensor]:
        """Source pieces, target pieces and the attention matrix (target x source) of one translation."""
        return self.attention_of(sentence, self.search([sentence], config, **options)[0][0])

    def attention_of(self, sentence: str, hyp: Hypothesis) -> tuple[list[str], list[str], Tensor]:
        """The source pieces, target pieces and attention matrix (target x source) of `hyp`, a translation of
        `sentence`, in reading order."""
        src = [self.src_tokenizer.decode([i]) for i in self.source_ids(sentence)[:-1]] + ["</s>"]
        tgt = [self.tgt_tokenizer.decode([i]) for i in self.in_target_order(hyp.tokens)]
        if hyp.attention is None:
            return src, tgt, torch.zeros(0, len(src))
        return src, tgt, hyp.attention.flip(0) if self.right_to_left else hyp.attention


def load_ensemble(
    checkpoints: Sequence[str | Path], device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Translator, list[Translator]]:
    """The first checkpoint's translator and the others, to pass to `search(..., ensemble_with=...)`."""
    first, *others = [Translator.load(path, device=device, dtype=dtype) for path in checkpoints]
    for other, path in zip(others, checkpoints[1:]):
        try:
            first._check_joinable(other)
        except ValueError as err:
            raise UserError(f"{path} cannot join {checkpoints[0]} in an ensemble: {err}") from None
    return first, others


DEFAULT_SEARCH = SearchConfig(method="beam", beam_size=5, length_penalty=1.0, max_len=1000)


def sentences_of(sentences: Any, name: str = "sentences") -> list[str]:
    """The sentences of a list (or any iterable, read once) of strings; a TypeError naming what is not."""
    if isinstance(sentences, (str, bytes)):
        raise TypeError(f"{name} must be a list of strings, not one string (wrap it: [sentence])")
    try:
        sentences = list(sentences)
    except TypeError:
        raise TypeError(f"{name} must be a list of strings, not {type(sentences).__name__}") from None
    for i, sentence in enumerate(sentences):
        if not isinstance(sentence, str):
            raise TypeError(f"{name}[{i}] is a {type(sentence).__name__}, not a string")
    return sentences
