"""`Translator`: RNN encoder + the shared attention decoder + source/target tokenizers, with `translate`."""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import sentencepiece as spm
import torch
from torch import Tensor, nn

from core.batching import BucketBatches, pad
from core.checkpoint import load_checkpoint, save_checkpoint
from core.errors import MAX_SEED, UserError, check_range
from core.decoder import DecoderConfig, RNNDecoder, build_decoder
from core.ensemble import Ensemble
from core.search import Hypothesis, beam_search, generate, gnmt_penalty
from core.tokenizers import BOS, EOS, NOT_GENERATED, PAD, SentencePieceTokenizer, Tokenizer, tokenizer_from_dict
from seq2seq import R2L_WEIGHT, RERANK_LENGTH_PENALTY, RERANK_WEIGHT
from seq2seq.encoder import RNNEncoder

TASK = "translation"


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

    CHOICES = {"enc_cell": ["gru", "lstm"], "bridge": ["learned", "last", "zero"],
               "target_order": ["left-to-right", "right-to-left"]}
    RANGES = {"enc_emb_dim": (1,), "enc_hidden_dim": (1,), "enc_layers": (1,), "enc_dropout": (0, 1, False, True),
              "enc_word_dropout": (0, 1, False, True)}  # core.errors.check_config


def build_encoder(vocab_size: int, config: EncoderConfig, decoder: DecoderConfig) -> RNNEncoder:
    """Flatten the configs into RNNEncoder arguments."""
    return RNNEncoder(vocab_size, config.enc_emb_dim, config.enc_hidden_dim, config.enc_layers, cell=config.enc_cell,
                      dropout=config.enc_dropout, bridge=config.bridge, decoder_hidden=decoder.hidden_dim,
                      decoder_layers=decoder.num_layers, word_dropout=config.enc_word_dropout)


def seq2seq_forward(model: "Seq2Seq", batch: tuple[Tensor, ...], carry: Any) -> tuple[Tensor, Tensor, None]:
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

    def __init__(self, src_tokenizer: Tokenizer, tgt_tokenizer: Tokenizer, encoder: EncoderConfig,
                 decoder: DecoderConfig):
        if decoder.attention == "none":
            raise ValueError("a translator's decoder needs attention: 'bahdanau' or 'luong'")
        if encoder.target_order not in EncoderConfig.CHOICES["target_order"]:
            raise ValueError(f"target_order must be one of {EncoderConfig.CHOICES['target_order']}, got "
                             f"{encoder.target_order!r}")
        network = build_encoder(src_tokenizer.vocab_size, encoder, decoder)
        super().__init__(network, build_decoder(tgt_tokenizer.vocab_size, decoder, memory_dim=network.memory_dim))
        self.src_tokenizer, self.tgt_tokenizer = src_tokenizer, tgt_tokenizer
        self.encoder_config, self.decoder_config = encoder, decoder
        self.right_to_left = encoder.target_order == "right-to-left"
        if encoder.share_embeddings:
            if src_tokenizer.to_dict() != tgt_tokenizer.to_dict():
                raise ValueError("share_embeddings needs one joint source and target vocabulary: with "
                                 "--separate-vocab, add --share-embeddings false")
            if encoder.enc_emb_dim != decoder.emb_dim:
                raise ValueError(f"share_embeddings needs enc_emb_dim == emb_dim, got {encoder.enc_emb_dim} and "
                                 f"{decoder.emb_dim} (or --share-embeddings false)")
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
        return {"task": TASK, "config": {"encoder": asdict(self.encoder_config), "decoder": asdict(self.decoder_config)},
                "tokenizers": {"source": self.src_tokenizer.to_dict(), "target": self.tgt_tokenizer.to_dict()}}

    def save(self, path: str | Path) -> Path:
        return save_checkpoint(path, {**self.payload(), "model": self.state_dict()})

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
             ) -> "Translator":
        """A checkpoint's translator in eval mode on `device`, its weights in `dtype` (bfloat16: faster decoding
        where the hardware multiplies it natively, scores rounded differently)."""
        ckpt = load_checkpoint(path, task=TASK, map_location=device)
        model = cls(tokenizer_from_dict(ckpt["tokenizers"]["source"]), tokenizer_from_dict(ckpt["tokenizers"]["target"]),
                    EncoderConfig(**ckpt["config"]["encoder"]), DecoderConfig(**ckpt["config"]["decoder"]))
        model.load_state_dict(ckpt["model"])
        return model.to(device, dtype).eval()

    # -- translation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def search(self, sentences: list[str], *, method: str = "beam", beam_size: int = 5, n_best: int = 1,
               length_penalty: float = 1.0, max_len_ratio: float = 1.5, batch_size: int = 64,
               no_repeat_ngram: int = 0, repetition_penalty: float = 1.0, temperature: float = 1.0,
               top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
               ensemble_with: Sequence["Translator"] = ()) -> list[list[Hypothesis]]:
        """The n best hypotheses per sentence (greedy and sampling give one). Empty sentences get an empty
        hypothesis. A right-to-left model's tokens come as it wrote them, last word first (`target_text` reads
        them out). Sampling (`method="sample"`) draws from softmax(logits / temperature), cut to the top k or
        the top-p nucleus, with a generator seeded by `seed` (the same seed, sentences and batch size: the same
        draws). `ensemble_with`: other translators with the same vocabularies, searched together with this one
        (the mean of their next-token probabilities; `core.Ensemble`)."""
        members = [self, *ensemble_with]
        for other in ensemble_with:
            self._check_joinable(other)
        for m in members:
            m.eval()
        decoder = Ensemble([m.decoder for m in members]) if ensemble_with else self.decoder
        if seed is not None:
            check_range("seed", seed, 0, MAX_SEED)
        generator = None if seed is None else torch.Generator(self.device).manual_seed(seed)
        results: list[list[Hypothesis]] = [[Hypothesis([], 0.0, 0.0, True)] for _ in sentences]
        encoded = {i: self.source_ids(s) for i, s in enumerate(sentences) if s.strip()}
        order = sorted(encoded, key=lambda i: len(encoded[i]))  # similar lengths together: little padding
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            src, lengths = pad([encoded[i] for i in rows])
            contexts = [m.encoder(src.to(m.device), lengths.to(m.device)) for m in members]
            ctx = decoder.join([c.to(self.device) for c in contexts]) if ensemble_with else contexts[0]
            bos = torch.full((len(rows),), BOS, device=self.device)
            common = dict(max_len=int(src.size(1) * max_len_ratio) + 10, eos=EOS, no_repeat_ngram=no_repeat_ngram,
                          repetition_penalty=repetition_penalty, forbid=NOT_GENERATED)
            if method == "beam":
                found = beam_search(decoder, ctx, bos, beam_size=beam_size, n_best=n_best,
                                    length_penalty=length_penalty, **common)
            else:
                found = [[h] for h in generate(decoder, ctx, bos, method=method, temperature=temperature,
                                               top_k=top_k, top_p=top_p, generator=generator, **common)]
            for i, hyps in zip(rows, found):
                results[i] = hyps
        return results

    @functools.cached_property
    def _pieces(self) -> dict[str, list[str]]:
        """Each side's piece for every id, made once (~12 ms for 4k pieces): ensemble members must map every
        id to the same piece, though their tokenizer files may differ in bytes (sentencepiece stores training
        details), and `search` checks that on every call."""
        return {side: [tok.decode([i]) for i in range(tok.vocab_size)]
                for side, tok in (("source", self.src_tokenizer), ("target", self.tgt_tokenizer))}

    @property
    def direction(self) -> str:
        """"de->en", say, or "" when a language is not known."""
        c = self.encoder_config
        return f"{c.source_lang}->{c.target_lang}" if c.source_lang and c.target_lang else ""

    def check_direction(self, other: "Translator", reverse: bool = False) -> None:
        """A ValueError when `other` translates another language pair than this model (or, with `reverse`,
        than the opposite direction); nothing when either direction is not known."""
        c = other.encoder_config
        expected = f"{c.target_lang}->{c.source_lang}" if reverse else other.direction
        if self.direction and other.direction and expected != self.direction:
            raise ValueError(f"it translates {other.direction}, and this model {self.direction}"
                             + ("; a reverse model must translate the other way" if reverse else ""))

    def _check_joinable(self, other: "Translator") -> None:
        self.check_direction(other)
        if other.right_to_left != self.right_to_left:
            raise ValueError("ensemble members need the same target order; one writes left to right, the other "
                             "right to left")
        for side, pieces in self._pieces.items():
            if pieces != other._pieces[side]:
                raise ValueError(f"ensemble members need the same vocabularies; the {side} vocabularies differ "
                                 f"({len(pieces)} and {len(other._pieces[side])} entries)")

    def translate(self, sentences: list[str], **options: Any) -> list[str]:
        """Translate each sentence (detokenized text); options as in `search`."""
        return [self.target_text(hyps[0].tokens) for hyps in self.search(sentences, **options)]

    def translate_nbest(self, sentences: list[str], n_best: int, **options: Any) -> list[list[tuple[str, float]]]:
        """The n best translations of each sentence (beam search, n_best <= beam_size) with their scores."""
        return [[(self.target_text(h.tokens), h.score) for h in hyps]
                for hyps in self.search(sentences, n_best=n_best, **{**options, "method": "beam"})]

    @torch.no_grad()
    def score(self, sources: list[str], targets: list[str], batch_size: int = 64,
              ensemble_with: Sequence["Translator"] = ()) -> list[float]:
        """log p(target | source) for each pair, by teacher forcing, EOS included: the log_prob that search
        reports for a finished hypothesis of those tokens. With `ensemble_with`, each token's probability is
        the mean of the members', as in an ensemble's search."""
        if len(sources) != len(targets):
            raise ValueError(f"score needs one target per source, got {len(sources)} sources and "
                             f"{len(targets)} targets")
        members = [self, *ensemble_with]
        for other in ensemble_with:
            self._check_joinable(other)
        for m in members:
            m.eval()
        scores: list[float] = []
        for start in range(0, len(sources), batch_size):
            pairs = [(self.source_ids(s), self.target_ids(t))
                     for s, t in zip(sources[start:start + batch_size], targets[start:start + batch_size])]
            batch = self.collate(pairs)
            per_member = []
            for m in members:
                logits, tgt_out, _ = seq2seq_forward(m, tuple(t.to(m.device) for t in batch), None)
                log_probs = torch.log_softmax(logits.float(), dim=-1).gather(-1, tgt_out.unsqueeze(-1)).squeeze(-1)
                per_member.append(log_probs.to(self.device))
            log_probs = torch.stack(per_member).logsumexp(dim=0) - math.log(len(members))
            scores += log_probs.masked_fill(batch[3].to(self.device) == PAD, 0.0).sum(dim=1).tolist()
        return scores

    def translate_reranked(self, sentences: list[str], reverse: "Translator | Sequence[Translator]" = (),
                           weight: float = RERANK_WEIGHT, beam_size: int = 5,
                           right_to_left: "Translator | Sequence[Translator]" = (),
                           right_to_left_weight: float = R2L_WEIGHT,
                           rerank_length_penalty: float = RERANK_LENGTH_PENALTY, **options: Any) -> list[str]:
        """The beam's `beam_size` best translations of each sentence, reranked: the one with the highest
        log p(translation | sentence) / GNMT penalty(its length, `rerank_length_penalty`) + `weight` *
        log p(sentence | translation) under `reverse` + `right_to_left_weight` * log p(translation | sentence)
        under `right_to_left`. Each of the two is a model or an ensemble (a list). `reverse` is trained in the
        opposite direction: the channel model of Yee et al. (2019), without their language model; a translation
        that leaves out or invents content explains its source badly, whatever its fluency. That also punishes
        translations cut short, which is why the forward score needs a smaller length penalty here than in the
        beam (`options`' `length_penalty`, which only decides what the beam keeps). `right_to_left` translates in
        this model's direction but writes from the last token to the first (`EncoderConfig.target_order`), so it
        judges each ending without the beam's left-to-right commitment, as in Sennrich et al. (2016)."""
        reverse, right_to_left = _model_list(reverse), _model_list(right_to_left)
        for models, is_reverse in ((reverse, True), (right_to_left, False)):
            for model in models:
                self.check_direction(model, reverse=is_reverse)
        nbest = self.search(sentences, beam_size=beam_size, n_best=beam_size, **{**options, "method": "beam"})
        sources = [source for source, hyps in zip(sentences, nbest) for _ in hyps]
        texts = [self.target_text(h.tokens) for hyps in nbest for h in hyps]
        combined = [h.log_prob / gnmt_penalty(len(h.tokens) + h.finished, rerank_length_penalty)  # EOS counts
                    for hyps in nbest for h in hyps]
        for models, w, pairs in ((reverse, weight, (texts, sources)), (right_to_left, right_to_left_weight,
                                                                       (sources, texts))):
            if models:
                extra = models[0].score(*pairs, ensemble_with=models[1:])
                combined = [c + w * e for c, e in zip(combined, extra)]
        chosen, scores, text = [], iter(combined), iter(texts)
        for hyps in nbest:
            mine, theirs = [next(scores) for _ in hyps], [next(text) for _ in hyps]
            chosen.append(theirs[mine.index(max(mine))])  # ties: the beam's own order
        return chosen

    def attention(self, sentence: str, **options: Any) -> tuple[list[str], list[str], Tensor]:
        """Source pieces, target pieces and the attention matrix (target x source) of one translation."""
        hyp = self.search([sentence], **options)[0][0]
        src = [self.src_tokenizer.decode([i]) for i in self.source_ids(sentence)[:-1]] + ["</s>"]
        tgt = [self.tgt_tokenizer.decode([i]) for i in self.in_target_order(hyp.tokens)]
        if hyp.attention is None:
            return src, tgt, torch.zeros(0, len(src))
        return src, tgt, hyp.attention.flip(0) if self.right_to_left else hyp.attention


def _model_list(models: "Translator | Sequence[Translator]") -> list["Translator"]:
    return [models] if isinstance(models, Translator) else list(models)


def load_ensemble(checkpoints: Sequence[str | Path], device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32) -> tuple["Translator", list["Translator"]]:
    """The first checkpoint's translator and the others, to pass to `search(..., ensemble_with=...)`."""
    first, *others = [Translator.load(path, device=device, dtype=dtype) for path in checkpoints]
    for other, path in zip(others, checkpoints[1:]):
        try:
            first._check_joinable(other)
        except ValueError as err:
            raise UserError(f"{path} cannot join {checkpoints[0]} in an ensemble: {err}") from None
    return first, others


def load_rerankers(reverse: Sequence[str | Path] = (), right_to_left: Sequence[str | Path] = (),
                   weight: float = RERANK_WEIGHT, right_to_left_weight: float = R2L_WEIGHT,
                   rerank_length_penalty: float = RERANK_LENGTH_PENALTY, device: str | torch.device = "cpu",
                   dtype: torch.dtype = torch.float32, forward: Translator | None = None) -> dict[str, Any]:
    """`translate_reranked`'s options from checkpoint paths: the reverse models and the right-to-left models
    (each list an ensemble) with their weights; {} when there are neither (no reranking). With `forward`, the
    model whose n best they rerank, each must translate its language pair (the reverse ones the other way)."""
    if not reverse and not right_to_left:
        return {}

    def ensemble(paths: Sequence[str | Path]) -> list[Translator]:
        if not paths:
            return []
        first, others = load_ensemble(paths, device, dtype)
        return [first, *others]
    backwards, reverse_models = ensemble(right_to_left), ensemble(reverse)
    if backwards and not backwards[0].right_to_left:
        raise UserError(f"{right_to_left[0]} writes left to right; reranking needs a right-to-left model "
                        "(trained with --target-order right-to-left)")
    for paths, models, is_reverse in ((reverse, reverse_models, True), (right_to_left, backwards, False)):
        if forward is not None and models:
            try:
                forward.check_direction(models[0], reverse=is_reverse)
            except ValueError as err:
                raise UserError(f"{paths[0]} cannot rerank this model's translations: {err}") from None
    return dict(reverse=reverse_models, weight=weight, right_to_left=backwards,
                right_to_left_weight=right_to_left_weight, rerank_length_penalty=rerank_length_penalty)


def translate_file(checkpoints: Sequence[str | Path], src_lines: list[str], beam_size: int, method: str,
                   device: torch.device, dtype: torch.dtype = torch.float32, length_penalty: float = 1.0,
                   **rerank: Any) -> list[str]:
    """Translate lines with one checkpoint or an ensemble of several (`python -m seq2seq.bleu --checkpoint`),
    reranking the beam's n best when `rerank` names reverse or right-to-left checkpoints (`load_rerankers`)."""
    model, others = load_ensemble(checkpoints, device, dtype)
    rerankers = load_rerankers(**rerank, device=device, dtype=dtype, forward=model)
    options = dict(beam_size=beam_size, length_penalty=length_penalty, ensemble_with=others)
    if not rerankers:
        return model.translate(src_lines, method=method, **options)
    return model.translate_reranked(src_lines, **options, **rerankers)


class SampledSubwords(BucketBatches):
    """Training batches in which every sentence gets a fresh random segmentation each time it is seen
    (subword regularisation: `SentencePieceTokenizer.sample`). Batches are cut by the lengths of the usual
    segmentation; sentencepiece's generator is seeded from (seed, epoch, index) before each batch, so a resumed
    run draws the same segmentations as an uninterrupted one."""

    def __init__(self, model: Translator, pairs: list[tuple[str, str]], max_tokens: int, alpha: float,
                 seed: int = 0):
        for side in (model.src_tokenizer, model.tgt_tokenizer):
            if not isinstance(side, SentencePieceTokenizer):
                raise ValueError(f"sampled segmentations need sentencepiece tokenizers, not {side.kind}")
        if not 0 < alpha < 1:
            raise ValueError(f"the sampling alpha must be in (0, 1), got {alpha}")
        self.model, self.alpha = model, alpha
        super().__init__(pairs, lambda pair: len(model.target_ids(pair[1])), self._collate, max_tokens, seed=seed)

    def batch(self, epoch: int, index: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        spm.set_random_generator_seed((self.seed * 1_000_003 + epoch * 100_003 + index) % 2 ** 31)
        return super().batch(epoch, index)

    def _collate(self, pairs: list[tuple[str, str]]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        src_tok, tgt_tok = self.model.src_tokenizer, self.model.tgt_tokenizer
        return self.model.collate([(src_tok.sample(src, self.alpha) + [EOS],
                                    [BOS] + self.model.in_target_order(tgt_tok.sample(tgt, self.alpha)) + [EOS])
                                   for src, tgt in pairs])
