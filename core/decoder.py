"""`RNNDecoder`: the one recurrent decoder every task shares."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core import speedups
from core.attention import ATTENTIONS
from core.context import Context
from core.errors import check_int, check_range
from core.step_weights import DecoderLoop, StepMemory, StepWeight
from core.tokenizers import PAD

CELLS = {"gru": nn.GRU, "lstm": nn.LSTM}


def rnn_class(cell: str) -> type[nn.GRU] | type[nn.LSTM]:
    """nn.GRU or nn.LSTM by name; a ValueError naming the choices for any other name."""
    if cell not in CELLS:
        raise ValueError(f"cell must be 'gru' or 'lstm', got {cell!r}")
    return CELLS[cell]


class DecoderState(NamedTuple):
    """Recurrent state, one row per sequence on dimension 0 of every tensor, so search reorders beams by indexing.

    h, c: (B, layers, H); feed: (B, H) the last attentional vector (input feeding) or None; attn: (B, S) the last
    attention weights or None.
    """

    h: Tensor
    c: Tensor | None
    feed: Tensor | None
    attn: Tensor | None


def drop_words(emb: Tensor, p: float, training: bool) -> Tensor:
    """Word dropout: zero whole token embeddings (B, T, E) with probability p while training, so the model
    cannot lean on any single input token (Sennrich and Zhang's regulariser for small parallel corpora)."""
    if not training or p <= 0:
        return emb
    keep = emb.new_empty(emb.shape[:-1] + (1,)).bernoulli_(1 - p)
    return emb * keep / (1 - p)


@dataclass
class DecoderConfig:
    emb_dim: int = 256
    hidden_dim: int = 512
    num_layers: int = 1
    cell: str = "lstm"
    attention: str = "none"
    dropout: float = 0.2
    word_dropout: float = 0.0
    tie_embeddings: bool = False
    input_feeding: bool = True

    CHOICES = {"cell": list(CELLS), "attention": ["none", *ATTENTIONS]}
    RANGES = {
        "emb_dim": (1,),
        "hidden_dim": (1,),
        "num_layers": (1,),
        "dropout": (0, 1, False, True),
        "word_dropout": (0, 1, False, True),
    }  # core.errors.check_config


def build_decoder(vocab_size: int, config: DecoderConfig, memory_dim: int | None = None) -> RNNDecoder:
    """Flatten a DecoderConfig into RNNDecoder arguments."""
    return RNNDecoder(
        vocab_size,
        config.emb_dim,
        config.hidden_dim,
        config.num_layers,
        cell=config.cell,
        attention=None if config.attention == "none" else config.attention,
        memory_dim=memory_dim,
        dropout=config.dropout,
        word_dropout=config.word_dropout,
        tie_embeddings=config.tie_embeddings,
        input_feeding=config.input_feeding,
    )


class RNNDecoder(nn.Module):
    """GRU/LSTM decoder with optional attention over a memory (input feeding) and tied embeddings."""

    def __init__(
        self,
        vocab_size: int,
        emb_dim: int,
        hidden_dim: int,
        num_layers: int = 1,
        cell: str = "gru",
        attention: str | None = None,
        memory_dim: int | None = None,
        dropout: float = 0.0,
        tie_embeddings: bool = False,
        input_feeding: bool = True,
        word_dropout: float = 0.0,
    ):
        super().__init__()
        for name, value in (
            ("vocab_size", vocab_size),
            ("emb_dim", emb_dim),
            ("hidden_dim", hidden_dim),
            ("num_layers", num_layers),
            ("memory_dim", memory_dim or 1),
        ):
            check_int(name, value, 1)
        for name, rate in (("dropout", dropout), ("word_dropout", word_dropout)):
            check_range(name, rate, 0, 1, high_open=True)
        rnn = rnn_class(cell)
        if attention is not None and attention not in ATTENTIONS:
            raise ValueError(f"attention must be None, 'bahdanau' or 'luong', got {attention!r}")
        if attention is not None and not memory_dim:
            raise ValueError("an attention decoder needs memory_dim (the size of the provider's memory vectors)")
        self.vocab_size, self.hidden_dim, self.num_layers, self.cell = vocab_size, hidden_dim, num_layers, cell
        self.memory_dim = memory_dim if attention is not None else None
        self.input_feeding = attention is not None and input_feeding
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        rnn_input = emb_dim + (hidden_dim if self.input_feeding else 0)
        self.rnn = rnn(rnn_input, hidden_dim, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.attention = ATTENTIONS[attention](hidden_dim, memory_dim, hidden_dim) if attention else None
        # Luong's attentional vector tanh(W [h; context]), used as output and as the next step's feed.
        self.combine = nn.Linear(hidden_dim + (memory_dim or 0), hidden_dim) if attention else None
        self.dropout = nn.Dropout(dropout)
        self.word_dropout = word_dropout
        # Tying needs the output layer's input to have the embedding size; project when it does not.
        self.pre_output = nn.Linear(hidden_dim, emb_dim) if tie_embeddings and hidden_dim != emb_dim else None
        self.output = nn.Linear(emb_dim if tie_embeddings else hidden_dim, vocab_size)
        if tie_embeddings:
            self.output.weight = self.embedding.weight
            # nn.Embedding's N(0, 1) would make the first logits ~sqrt(emb_dim) wide (loss far above log V);
            # the output-layer scale (as fairseq does for shared embeddings) starts training near uniform.
            with torch.no_grad():
                nn.init.normal_(self.embedding.weight, std=emb_dim**-0.5)
                self.embedding.weight[PAD].zero_()

    def train(self, mode: bool = True) -> RNNDecoder:
        if mode != self.training:  # a switch brackets every weight update a version counter could miss
            speedups.forget(self)
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .bfloat16(), ...: new weights, maybe at old addresses
        speedups.forget(self)
        return super()._apply(fn, *args, **kwargs)

    def prepare(self, ctx: Context) -> Context:
        """The context with the attention keys made from its memory, once for every step that reads it."""
        if self.attention is None or ctx.keys is not None:
            return ctx
        if ctx.memory is None:
            raise ValueError("this decoder attends to a memory, but the context has none")
        return replace(ctx, keys=self.attention.keys(ctx.memory))  # (B, S, A)

    def start(self, ctx: Context) -> DecoderState:
        """The state before the first step, from the context."""
        if ctx.h0.dim() != 3 or ctx.h0.size(0) != self.num_layers or ctx.h0.size(2) != self.hidden_dim:
            raise ValueError(
                f"context h0 has shape {tuple(ctx.h0.shape)}; this decoder needs "
                f"({self.num_layers}, B, {self.hidden_dim})"
            )
        if self.attention is not None:
            self._check_memory(ctx)
        h = ctx.h0.transpose(0, 1)  # (B, L, H)
        c = None
        if self.cell == "lstm":
            c = torch.zeros_like(h) if ctx.c0 is None else ctx.c0.transpose(0, 1)
        feed = h.new_zeros(h.size(0), self.hidden_dim) if self.input_feeding else None
        return DecoderState(h, c, feed, None)

    def _check_memory(self, ctx: Context) -> None:
        """The context's memory fits this attention decoder: vectors of memory_dim, rows a divisor of h0's."""
        if ctx.memory is None:
            raise ValueError("this decoder attends to a memory, but the context has none")
        if ctx.memory.size(2) != self.memory_dim:
            raise ValueError(
                f"context memory has shape {tuple(ctx.memory.shape)}; this decoder attends to vectors "
                f"of {self.memory_dim} (B, S, {self.memory_dim})"
            )
        if ctx.memory.size(0) and ctx.h0.size(1) % ctx.memory.size(0):
            raise ValueError(
                f"context h0 has {ctx.h0.size(1)} rows and its memory {ctx.memory.size(0)}: the rows of "
                "h0 must be a multiple of the memory's"
            )

    def step(self, tokens: Tensor, state: DecoderState, ctx: Context) -> tuple[Tensor, DecoderState]:
        """tokens (B,) -> log-probabilities (B, V) of the next token and the new state."""
        output, state, _ = self._advance(tokens.unsqueeze(1), state, ctx)  # (B, 1, H')
        # float32 log-probs whatever the weights' dtype: search adds them up over many steps
        return F.log_softmax(self._logits(output.squeeze(1)), dim=-1, dtype=torch.float32), state

    def forward(self, tokens: Tensor, ctx: Context) -> Tensor:
        """Teacher forcing: tokens (B, T) -> logits (B, T, V)."""
        return self.unroll(tokens, ctx)[0]

    def unroll(
        self, tokens: Tensor, ctx: Context, state: DecoderState | None = None
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """Teacher forcing from `state` (default: `start(ctx)`): logits (B, T, V), final state, attention (B, T, S)."""
        ctx = self.prepare(ctx)
        state = self.start(ctx) if state is None else state
        if not self.input_feeding:  # no step depends on the last one's output: one call over the whole sequence
            output, state, weights = self._advance(tokens, state, ctx)
            return self._logits(output), state, weights
        outputs, steps = [], []
        # one lookup for every step: per-step lookups would each add a vocabulary-sized gradient in backward
        embedded = self.embedding(tokens).unbind(1)
        loop = self._step_weights(ctx) if torch.is_grad_enabled() and tokens.device.type == "cpu" else None
        for t in range(tokens.size(1)):  # input feeding makes each step depend on the last one's output
            output, state, step_weights = self._advance(
                tokens[:, t : t + 1], state, ctx, embedded[t].unsqueeze(1), loop
            )
            outputs.append(output)
            steps.append(step_weights)  # (B, 1, S): input feeding comes with attention
        return self._logits(torch.cat(outputs, dim=1)), state, torch.cat([w for w in steps if w is not None], dim=1)

    def _advance(
        self,
        tokens: Tensor,
        state: DecoderState,
        ctx: Context,
        embedded: Tensor | None = None,
        loop: DecoderLoop | None = None,
    ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """Run over tokens (B, T) (T = 1 with input feeding), whose embeddings (B, T, E) may be given, reading
        the weights through `loop` if given: outputs (B, T, H), the state, attention (B, T, S)."""
        fast = (
            speedups.rnn_step(self.rnn, self.embedding, tokens[:, 0], state.feed, state.h, state.c)
            if tokens.size(1) == 1
            else None
        )
        if fast is not None:  # one search step on the CPU: the same equations, faster (core.speedups)
            h, c = fast
            out = h[:, -1:]  # (B, 1, H): the top layer
        else:
            emb = self.embedding(tokens) if embedded is None else embedded
            emb = self.dropout(drop_words(emb, self.word_dropout, self.training))  # (B, T, E)
            if state.feed is not None:  # input feeding
                emb = torch.cat([emb, state.feed.unsqueeze(1)], dim=2)  # (B, 1, E + H)
            if loop is not None:  # one step as nn.GRU/nn.LSTM computes it, the weights read through the loop
                h, c = self._rnn_step(emb[:, 0], state, loop)
                out = h[:, -1:]
            else:
                out, h, c = self._rnn(emb, state)
        if self.attention is None or self.combine is None or ctx.memory is None:  # (start checked the memory)
            return out, DecoderState(h, c, None, None), None
        keys = ctx.keys if ctx.keys is not None else self.attention.keys(ctx.memory)  # (B, S, A)
        context, weights = self.attention(out, keys, ctx.memory, ctx.memory_mask, loop)  # (B, T, M), (B, T, S)
        both = torch.cat([out, context], dim=2)
        combined = (
            speedups.linear(self.combine, both) if loop is None else loop.combine.linear(both) + self.combine.bias
        )
        attentional = torch.tanh(combined)  # (B, T, H)
        feed = attentional[:, -1] if self.input_feeding else None
        return attentional, DecoderState(h, c, feed, weights[:, -1]), weights

    def _rnn(self, x: Tensor, state: DecoderState) -> tuple[Tensor, Tensor, Tensor | None]:
        """self.rnn over x (B, T, F) from `state`: outputs (B, T, H) and the new h, c (B, L, H)."""
        h = state.h.transpose(0, 1).contiguous()  # (L, B, H), the layout nn.RNN wants
        if state.c is None:
            out, h = self.rnn(x, h)
            return out, h.transpose(0, 1), None
        out, (h, c) = self.rnn(x, (h, state.c.transpose(0, 1).contiguous()))
        return out, h.transpose(0, 1), c.transpose(0, 1)

    def _step_weights(self, ctx: Context) -> DecoderLoop | None:
        """The weights every step of a training loop reads, each to get its gradient in one product."""
        if self.attention is None or self.combine is None or ctx.memory is None:
            return None
        layers = range(self.num_layers)
        return DecoderLoop(
            [StepWeight(self.rnn.get_parameter(f"weight_ih_l{i}")) for i in layers],
            [StepWeight(self.rnn.get_parameter(f"weight_hh_l{i}")) for i in layers],
            StepWeight(self.attention.get_parameter("query_proj.weight")),
            StepMemory(ctx.memory),
            StepWeight(self.combine.weight),
        )

    def _rnn_step(self, x: Tensor, state: DecoderState, loop: DecoderLoop) -> tuple[Tensor, Tensor | None]:
        """One step of self.rnn on x (B, F) from `state`: h, c (B, L, H), the weights read through `loop`."""
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        for layer in range(self.num_layers):
            if layer:  # nn.GRU/nn.LSTM's dropout between layers
                x = F.dropout(x, self.rnn.dropout, self.training)
            gx = loop.w_ih[layer].linear(x) + self.rnn.get_parameter(f"bias_ih_l{layer}")
            gh = loop.w_hh[layer].linear(state.h[:, layer]) + self.rnn.get_parameter(f"bias_hh_l{layer}")
            x, cell = speedups.cell_update(gx, gh, state.h[:, layer], None if state.c is None else state.c[:, layer])
            hs.append(x)
            if cell is not None:
                cs.append(cell)
        return torch.stack(hs, dim=1), torch.stack(cs, dim=1) if cs else None

    def _logits(self, output: Tensor) -> Tensor:
        output = self.dropout(output)
        if self.pre_output is not None:
            output = speedups.linear(self.pre_output, output)
        return speedups.linear(self.output, output)
