"""Text generation: the prompt encoder (the language model read over the prompt) and `LanguageModel`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from core.batching import pad
from core.context import Context
from core.decoder import DecoderConfig, DecoderState, RNNDecoder, build_decoder
from core.errors import check_int
from core.search import Hypothesis, search_with, seeded, stream
from core.search_config import SearchConfig
from core.task import load_task, save_task, task_payload
from core.tokenizers import BOS, EOS, NOT_GENERATED, Tokenizer

TASK = "textgen"
SAMPLE_BATCH = 64  # draws decoded together


class PromptEncoder(nn.Module):
    """Reads a prompt with the language model's own RNN and hands over the state as a `Context`.

    The prompt (B, P) starts with <bos>; all but each row's last token are read, so generation continues
    from the last one (`start_tokens`). A prompt of just <bos> reads nothing: the context is the zero state.
    """

    def __init__(self, decoder: RNNDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, prompt: Tensor, lengths: Tensor) -> Context:
        """prompt (B, P) padded ids, lengths (B,) -> Context with h0 (layers, B, H)."""
        dec, B = self.decoder, prompt.size(0)
        zeros = prompt.new_zeros((dec.num_layers, B, dec.hidden_dim), dtype=dec.embedding.weight.dtype)
        ctx = Context(zeros, zeros if dec.cell == "lstm" else None)
        read = (lengths - 1).tolist()
        if max(read) == 0:
            return ctx
        state = dec.start(ctx)
        if min(read) == max(read):  # one call over the whole prompt
            _, state, _ = dec.unroll(prompt[:, : read[0]], ctx, state)
        else:  # rows of different lengths: advance a row only while it still has prompt to read
            for t in range(max(read)):
                _, new, _ = dec.unroll(prompt[:, t : t + 1], ctx, state)
                active = (torch.tensor(read, device=prompt.device) > t).view(B, 1, 1)  # (B, 1, 1)
                state = DecoderState(
                    torch.where(active, new.h, state.h),
                    None if new.c is None or state.c is None else torch.where(active, new.c, state.c),
                    None,
                    None,
                )
        return Context(state.h.transpose(0, 1), None if state.c is None else state.c.transpose(0, 1))

    @staticmethod
    def start_tokens(prompt: Tensor, lengths: Tensor) -> Tensor:
        """Each row's last prompt token (B,), where generation continues."""
        return prompt.gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)


def lm_forward(
    model: LanguageModel, batch: tuple[Tensor, Tensor], carry: DecoderState | None
) -> tuple[Tensor, Tensor, DecoderState]:
    """Trainer step for a language model: inputs (B, T) -> logits (B, T, V), targets, the state to carry."""
    inputs, targets = batch
    # a resumed carry comes back as a plain tuple (h, c, ...): a language model carries no feed or attention
    carry = None if carry is None else DecoderState(carry[0], carry[1], None, None)
    dec = model.decoder
    zeros = inputs.new_zeros((dec.num_layers, inputs.size(0), dec.hidden_dim), dtype=torch.float)
    ctx = Context(zeros, zeros if dec.cell == "lstm" else None)
    logits, state, _ = dec.unroll(inputs, ctx, carry)
    return logits, targets, state


class LanguageModel(nn.Module):
    """Tokenizer + decoder + prompt encoder, with one friendly call: `generate(prompt) -> str`."""

    task = TASK

    def __init__(self, tokenizer: Tokenizer, config: DecoderConfig):
        super().__init__()
        self.tokenizer, self.config = tokenizer, config
        self.decoder = build_decoder(tokenizer.vocab_size, config)

    @property
    def prompt_encoder(self) -> PromptEncoder:
        return PromptEncoder(self.decoder)  # holds no weights of its own, so it is made on demand

    @property
    def device(self) -> torch.device:
        return self.decoder.embedding.weight.device

    # -- checkpoints --------------------------------------------------------------------------------
    def payload(self) -> dict[str, Any]:
        return task_payload(TASK, {"decoder": self.config}, {"text": self.tokenizer})

    def save(self, path: str | Path) -> Path:
        return save_task(self, path)

    @classmethod
    def load(
        cls, path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
    ) -> LanguageModel:
        """A checkpoint's model in eval mode on `device`, its weights in `dtype` (bfloat16: faster generation
        where the hardware multiplies it natively, scores rounded differently)."""

        def build(configs: dict, tokenizers: dict) -> LanguageModel:
            return cls(tokenizers["text"], configs["decoder"])

        return load_task(path, TASK, {"decoder": DecoderConfig}, build, device, dtype)

    # -- generation ---------------------------------------------------------------------------------
    def _read(self, prompts: Sequence[str]) -> tuple[Context, Tensor]:
        """The prompts read as one batch: the context, and each row's last token to continue from (N,)."""
        for prompt in prompts:
            if not isinstance(prompt, str):
                raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        ids, lengths = pad([[BOS] + self.tokenizer.encode(p) for p in prompts])  # (N, P), (N,)
        ids, lengths = ids.to(self.device), lengths.to(self.device)
        return self.prompt_encoder(ids, lengths), PromptEncoder.start_tokens(ids, lengths)

    @torch.no_grad()
    def search(
        self, prompts: Sequence[str], config: SearchConfig | None = None, generator: Any = None, **options: Any
    ) -> list[list[Hypothesis]]:
        """The n best continuations of each prompt (one for greedy and sampling), as `config` says with any field
        overridden by keyword; each prompt continues as it would alone (sampling draws aside)."""
        config = SearchConfig.of(config, DEFAULT_SEARCH, **options)
        if isinstance(prompts, str):
            raise TypeError("prompts must be a list of strings")
        self.eval()
        ctx, start = self._read(prompts)
        return search_with(config, self.decoder, ctx, start, eos=EOS, forbid=NOT_GENERATED, generator=generator)

    def generate_many(
        self, prompt: str = "", num_samples: int = 1, config: SearchConfig | None = None, **options: Any
    ) -> list[str]:
        """Continuations of `prompt` (without the prompt): num_samples draws, or the n best beams. `config`
        (default: sampling, at most 200 tokens) with any of its fields overridden by keyword."""
        return list(self.continuations(prompt, num_samples, config, **options))

    def continuations(
        self, prompt: str = "", num_samples: int = 1, config: SearchConfig | None = None, **options: Any
    ) -> Iterator[str]:
        """`generate_many`'s continuations as they are made: draws come SAMPLE_BATCH at a time (one generator
        seeded by config.seed for all), so that memory stays bounded however many are asked for."""
        config = SearchConfig.of(config, DEFAULT_SEARCH, **options)
        check_int("num_samples", num_samples, 1)
        if config.method == "beam":
            yield from (
                self.tokenizer.decode(h.tokens) for h in self.search([prompt], replace(config, n_best=num_samples))[0]
            )
            return
        generator = seeded(config.seed, self.device)
        for done in range(0, num_samples, SAMPLE_BATCH):
            for nbest in self.search([prompt] * min(SAMPLE_BATCH, num_samples - done), config, generator):
                yield self.tokenizer.decode(nbest[0].tokens)

    def generate(self, prompt: str = "", config: SearchConfig | None = None, **options: Any) -> str:
        """One continuation of `prompt` (without the prompt); `config` and options as in `generate_many`."""
        return self.generate_many(prompt, 1, config, **options)[0]

    @torch.no_grad()
    def stream(self, prompt: str = "", config: SearchConfig | None = None, **options: Any) -> Iterator[str]:
        """Yield the continuation piece by piece as tokens are chosen (greedy or sampling)."""
        config = SearchConfig.of(config, DEFAULT_SEARCH, **options)
        self.eval()
        ctx, start = self._read([prompt])
        ids: list[int] = []
        text = ""
        for token in stream(self.decoder, ctx, int(start[0]), config, eos=EOS, forbid=NOT_GENERATED):
            ids.append(token)
            new_text = self.tokenizer.decode(ids)
            yield new_text[len(text) :]
            text = new_text


DEFAULT_SEARCH = SearchConfig(method="sample")
