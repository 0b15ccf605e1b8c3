"""`RNNDecoder`: the one recurrent decoder every task shares."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core import packed
from core.attention import ATTENTIONS
from core.context import Context
from core.tokenizers import PAD

MAX_TABLE_VALUES = 1 << 24  # 64 MB of float32: the largest per-token table of input gates search keeps


class DecoderState(NamedTuple):
    """Recurrent state, batch on dimension 0 of every tensor, so search reorders beams by indexing.

    h, c: (B, layers, H); feed: (B, H) the last attentional vector (input feeding) or None;
    keys: (B, S, A) attention keys computed once from the memory, or None; attn: (B, S) last weights or None.
    """

    h: Tensor
    c: Tensor | None
    feed: Tensor | None
    keys: Tensor | None
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

    CHOICES = {"cell": ["gru", "lstm"], "attention": ["none", "bahdanau", "luong"]}
    RANGES = {"emb_dim": (1,), "hidden_dim": (1,), "num_layers": (1,), "dropout": (0, 1, False, True),
              "word_dropout": (0, 1, False, True)}  # core.errors.check_config


def build_decoder(vocab_size: int, config: DecoderConfig, memory_dim: int | None = None) -> "RNNDecoder":
    """Flatten a DecoderConfig into RNNDecoder arguments."""
    return RNNDecoder(vocab_size, config.emb_dim, config.hidden_dim, config.num_layers, cell=config.cell,
                      attention=None if config.attention == "none" else config.attention, memory_dim=memory_dim,
                      dropout=config.dropout, word_dropout=config.word_dropout,
                      tie_embeddings=config.tie_embeddings, input_feeding=config.input_feeding)


class RNNDecoder(nn.Module):
    """GRU/LSTM decoder with optional attention over a memory (input feeding) and tied embeddings."""

    # A promise to beam search: the memory may come once per example with h0 k times (rows b*k .. b*k+k-1 for
    # example b), since attention groups each example's query rows (core.attention.per_example) and nothing
    # else reads the memory per row. A subclass that reads ctx.memory row by row must set it False.
    beams_share_memory = True

    def __init__(self, vocab_size: int, emb_dim: int, hidden_dim: int, num_layers: int = 1, cell: str = "gru",
                 attention: str | None = None, memory_dim: int | None = None, dropout: float = 0.0,
                 tie_embeddings: bool = False, input_feeding: bool = True, word_dropout: float = 0.0):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ValueError(f"cell must be 'gru' or 'lstm', got {cell!r}")
        if attention is not None and attention not in ATTENTIONS:
            raise ValueError(f"attention must be None, 'bahdanau' or 'luong', got {attention!r}")
        if attention is not None and not memory_dim:
            raise ValueError("an attention decoder needs memory_dim (the size of the provider's memory vectors)")
        self.vocab_size, self.hidden_dim, self.num_layers, self.cell = vocab_size, hidden_dim, num_layers, cell
        self.input_feeding = attention is not None and input_feeding
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        rnn_input = emb_dim + (hidden_dim if self.input_feeding else 0)
        rnn_class = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn_class(rnn_input, hidden_dim, num_layers, batch_first=True,
                             dropout=dropout if num_layers > 1 else 0.0)
        self.attention = ATTENTIONS[attention](hidden_dim, memory_dim, hidden_dim) if attention else None
        # Luong's attentional vector tanh(W [h; context]), used as output and as the next step's feed.
        self.combine = nn.Linear(hidden_dim + memory_dim, hidden_dim) if attention else None
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
                nn.init.normal_(self.embedding.weight, std=emb_dim ** -0.5)
                self.embedding.weight[PAD].zero_()

    def train(self, mode: bool = True) -> "RNNDecoder":
        packed.forget(self)  # switching modes brackets every weight update a version counter could miss
        return super().train(mode)

    def _apply(self, fn, *args, **kwargs):  # .to(), .cuda(), .bfloat16(), ...: new weights, maybe at old addresses
        packed.forget(self)
        return super()._apply(fn, *args, **kwargs)

    def start(self, ctx: Context) -> DecoderState:
        """The state before the first step, from the context."""
        if ctx.h0.dim() != 3 or ctx.h0.size(0) != self.num_layers or ctx.h0.size(2) != self.hidden_dim:
            raise ValueError(f"context h0 has shape {tuple(ctx.h0.shape)}; this decoder needs "
                             f"({self.num_layers}, B, {self.hidden_dim})")
        if self.attention is not None and ctx.memory is None:
            raise ValueError("this decoder attends to a memory, but the context has none")
        if self.attention is not None and ctx.memory.size(0) and ctx.h0.size(1) % ctx.memory.size(0):
            raise ValueError(f"context h0 has {ctx.h0.size(1)} rows and its memory {ctx.memory.size(0)}: the rows of "
                             "h0 must be a multiple of the memory's")
        h = ctx.h0.transpose(0, 1)  # (B, L, H)
        c = None
        if self.cell == "lstm":
            c = torch.zeros_like(h) if ctx.c0 is None else ctx.c0.transpose(0, 1)
        feed = h.new_zeros(h.size(0), self.hidden_dim) if self.input_feeding else None
        keys = self.attention.keys(ctx.memory) if self.attention is not None else None  # (B, S, A)
        return DecoderState(h, c, feed, keys, None)

    def step(self, tokens: Tensor, state: DecoderState, ctx: Context) -> tuple[Tensor, DecoderState]:
        """tokens (B,) -> log-probabilities (B, V) of the next token and the new state."""
        output, state, _ = self._advance(tokens.unsqueeze(1), state, ctx)  # (B, 1, H')
        # float32 log-probs whatever the weights' dtype: search adds them up over many steps
        return F.log_softmax(self._logits(output.squeeze(1)), dim=-1, dtype=torch.float32), state

    def forward(self, tokens: Tensor, ctx: Context) -> Tensor:
        """Teacher forcing: tokens (B, T) -> logits (B, T, V)."""
        return self.unroll(tokens, ctx)[0]

    def unroll(self, tokens: Tensor, ctx: Context, state: DecoderState | None = None
               ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """Teacher forcing from `state` (default: `start(ctx)`): logits (B, T, V), final state, attention (B, T, S)."""
        state = self.start(ctx) if state is None else state
        if not self.input_feeding:  # no step depends on the last one's output: one call over the whole sequence
            output, state, weights = self._advance(tokens, state, ctx)
            return self._logits(output), state, weights
        outputs, weights = [], []
        for t in range(tokens.size(1)):  # input feeding makes each step depend on the last one's output
            output, state, _ = self._advance(tokens[:, t:t + 1], state, ctx)
            outputs.append(output)
            weights.append(state.attn)
        return self._logits(torch.cat(outputs, dim=1)), state, torch.stack(weights, dim=1)

    def _advance(self, tokens: Tensor, state: DecoderState, ctx: Context
                 ) -> tuple[Tensor, DecoderState, Tensor | None]:
        """Run over tokens (B, T) (T = 1 with input feeding): outputs (B, T, H), the state, attention (B, T, S)."""
        if tokens.size(1) == 1 and packed.inference(self.rnn, state.h):  # one search step
            h, c = self._cell_step(self._input_gates(tokens[:, 0], state.feed), state)
            out = h[:, -1:]  # (B, 1, H): the top layer
        else:
            emb = self.dropout(drop_words(self.embedding(tokens), self.word_dropout, self.training))  # (B, T, E)
            if self.input_feeding:
                emb = torch.cat([emb, state.feed.unsqueeze(1)], dim=2)  # (B, 1, E + H)
            h = state.h.transpose(0, 1).contiguous()  # (L, B, H), the layout nn.RNN wants
            if self.cell == "lstm":
                out, (h, c) = self.rnn(emb, (h, state.c.transpose(0, 1).contiguous()))
                c = c.transpose(0, 1)
            else:
                out, h = self.rnn(emb, h)
                c = None
            h = h.transpose(0, 1)  # (B, L, H)
        if self.attention is None:
            return out, DecoderState(h, c, None, None, None), None
        context, weights = self.attention(out, state.keys, ctx.memory, ctx.memory_mask)  # (B, T, M), (B, T, S)
        attentional = packed.linear(self.combine, torch.cat([out, context], dim=2), "tanh")  # (B, T, H)
        feed = attentional[:, -1] if self.input_feeding else None
        return attentional, DecoderState(h, c, feed, state.keys, weights[:, -1]), weights

    def _input_gates(self, tokens: Tensor, feed: Tensor | None) -> Tensor:
        """Layer 0's input product W_ih [embedding; feed] + b_ih at inference, tokens (B,) -> (B, G). The
        embedding's share is a row of a per-token table (embedding @ W_ih[:, :E]^T + b_ih, made once per
        weights): a lookup instead of a third of the step's RNN arithmetic with input feeding, all of it without.
        A large vocabulary would make the table too big; then the product is done as nn.GRU/LSTM does it."""
        E = self.embedding.embedding_dim
        if self.vocab_size * self.rnn.weight_ih_l0.size(0) > MAX_TABLE_VALUES:
            x = self.embedding(tokens)
            x = x if feed is None else torch.cat([x, feed], dim=1)
            return packed.linear(self.rnn, x, weight="weight_ih_l0", bias="bias_ih_l0")
        sources = (self.embedding.weight, self.rnn.weight_ih_l0, self.rnn.bias_ih_l0)
        table = packed.derived(self, "input_table", sources, lambda emb, w, b: torch.addmm(b, emb, w[:, :E].t()))
        gates = table.index_select(0, tokens)
        if feed is not None:
            gates = gates + packed.linear(self.rnn, feed, weight="weight_ih_l0", bias=None, columns=slice(E, None))
        return gates

    def _cell_step(self, gates_x0: Tensor, state: DecoderState) -> tuple[Tensor, Tensor | None]:
        """One step of self.rnn at inference, written out so its GEMMs use packed weights (nn.GRU's own step
        was 1.4-1.7x slower at search's shapes): layer 0's input gates (B, G) -> h, c (B, L, H). Same
        equations as nn.GRU/LSTM."""
        hs, cs = [], []
        for layer in range(self.num_layers):
            h = state.h[:, layer]
            gx = gates_x0 if layer == 0 else packed.linear(self.rnn, x, weight=f"weight_ih_l{layer}",
                                                           bias=f"bias_ih_l{layer}")
            gh = packed.linear(self.rnn, h, weight=f"weight_hh_l{layer}", bias=f"bias_hh_l{layer}")
            if self.cell == "gru":
                xr, xz, xn = gx.chunk(3, dim=1)
                hr, hz, hn = gh.chunk(3, dim=1)
                reset, update = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                new = torch.tanh(xn + reset * hn)
                h = new + update * (h - new)
            else:
                i, f, g, o = (gx + gh).chunk(4, dim=1)
                c = torch.sigmoid(f) * state.c[:, layer] + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                cs.append(c)
            hs.append(h)
            x = h  # no dropout between layers: this path runs in eval mode only
        return torch.stack(hs, dim=1), torch.stack(cs, dim=1) if cs else None

    def _logits(self, output: Tensor) -> Tensor:
        output = self.dropout(output)
        if self.pre_output is not None:
            output = packed.linear(self.pre_output, output)
        return packed.linear(self.output, output)
