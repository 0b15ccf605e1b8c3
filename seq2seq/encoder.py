"""`RNNEncoder`: reads a source sentence into a memory to attend to and the decoder's initial state."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from core.context import Context
from core.decoder import drop_words, rnn_class
from core.tokenizers import PAD


class RNNEncoder(nn.Module):
    """Embedding + bidirectional GRU/LSTM over packed sequences, so padding reaches neither the memory nor
    the final states. `bridge` makes the decoder's h0 from the top layer's final forward and backward states:
    "learned" (tanh of a linear layer), "last" (those states themselves, when 2 * hidden == decoder hidden)
    or "zero"."""

    def __init__(
        self,
        vocab_size: int,
        emb_dim: int,
        hidden_dim: int,
        num_layers: int = 1,
        cell: str = "gru",
        dropout: float = 0.0,
        bridge: str = "learned",
        decoder_hidden: int | None = None,
        decoder_layers: int = 1,
        word_dropout: float = 0.0,
    ):
        super().__init__()
        if bridge not in ("learned", "last", "zero"):
            raise ValueError(f"bridge must be 'learned', 'last' or 'zero', got {bridge!r}")
        decoder_hidden = decoder_hidden or 2 * hidden_dim
        if bridge == "last" and decoder_hidden != 2 * hidden_dim:
            raise ValueError(f"bridge 'last' needs decoder hidden size 2 * {hidden_dim}, got {decoder_hidden}")
        self.cell, self.bridge_kind = cell, bridge
        self.decoder_hidden, self.decoder_layers = decoder_hidden, decoder_layers
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        self.dropout = nn.Dropout(dropout)
        self.word_dropout = word_dropout
        self.rnn = rnn_class(cell)(
            emb_dim,
            hidden_dim,
            num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.bridge = nn.Linear(2 * hidden_dim, decoder_hidden) if bridge == "learned" else None

    @property
    def memory_dim(self) -> int:
        return 2 * self.rnn.hidden_size

    def forward(self, src: Tensor, src_lengths: Tensor) -> Context:
        """src (B, S) padded ids, src_lengths (B,) -> Context: memory (B, S, 2H), mask (B, S), h0 (layers, B, H_dec)."""
        if int(src_lengths.min()) < 1:
            raise ValueError("every source sentence needs at least one token (add EOS to empty lines)")
        emb = self.dropout(drop_words(self.embedding(src), self.word_dropout, self.training))  # (B, S, E)
        packed = pack_padded_sequence(emb, src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, final = self.rnn(packed)
        memory, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))  # (B, S, 2H)
        h_n = final[0] if self.cell == "lstm" else final  # (layers * 2, B, H)
        top = torch.cat([h_n[-2], h_n[-1]], dim=1)  # (B, 2H): top layer, forward and backward
        if self.bridge is not None:  # learned
            h0 = torch.tanh(self.bridge(top))
        elif self.bridge_kind == "last":
            h0 = top
        else:
            h0 = top.new_zeros(top.size(0), self.decoder_hidden)
        h0 = h0.unsqueeze(0).expand(self.decoder_layers, -1, -1).contiguous()  # (layers, B, H_dec)
        mask = torch.arange(src.size(1), device=src.device).unsqueeze(0) < src_lengths.to(src.device).unsqueeze(1)
        return Context(h0, None, self.dropout(memory), mask)  # an LSTM decoder starts its cell state at zero
