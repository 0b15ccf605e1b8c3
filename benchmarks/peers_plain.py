"""The floor of `peers.py`: the benchmark's model as the simplest vectorised PyTorch a person would write.

nn.GRU (bidirectional) encoder, a learned bridge, a GRUCell decoder with input feeding, Bahdanau attention whose
keys are projected once per sentence, tanh(W [h; context]) as the attentional vector, and an output layer. No
padding masks (every source has the same length), no finished-hypothesis bookkeeping in beam search (EOS is
banned at every step, so no hypothesis ends). It imports nothing of this project."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PAD, BOS, EOS = 0, 1, 2  # ids 0..3 are specials; word w is id 4 + w
SPECIALS = 4


class PlainSeq2Seq(nn.Module):
    def __init__(self, vocab: int, emb: int, hidden: int, dec_hidden: int):
        super().__init__()
        memory, attn = 2 * hidden, dec_hidden
        self.src_emb = nn.Embedding(vocab, emb)
        self.encoder = nn.GRU(emb, hidden, batch_first=True, bidirectional=True)
        self.bridge = nn.Linear(memory, dec_hidden)
        self.tgt_emb = nn.Embedding(vocab, emb)
        self.cell = nn.GRUCell(emb + dec_hidden, dec_hidden)
        self.key = nn.Linear(memory, attn, bias=False)
        self.query = nn.Linear(dec_hidden, attn, bias=False)
        self.v = nn.Linear(attn, 1, bias=False)
        self.combine = nn.Linear(dec_hidden + memory, dec_hidden)
        self.out = nn.Linear(dec_hidden, vocab)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """src (B, S) -> memory (B, S, 2H), keys (B, S, A), h0 (B, D)."""
        memory, final = self.encoder(self.src_emb(src))  # final (2, B, H)
        h = torch.tanh(self.bridge(torch.cat([final[0], final[1]], dim=1)))
        return memory, self.key(memory), h

    def step(self, tokens: Tensor, h: Tensor, feed: Tensor, memory: Tensor, keys: Tensor) -> tuple[Tensor, ...]:
        """One decoder step for rows (N,): logits (N, V), the new h and attentional vector."""
        h = self.cell(torch.cat([self.tgt_emb(tokens), feed], dim=1), h)
        scores = self.v(torch.tanh(keys + self.query(h).unsqueeze(1))).squeeze(2)  # (N, S)
        context = torch.bmm(scores.softmax(dim=1).unsqueeze(1), memory).squeeze(1)  # (N, 2H)
        feed = torch.tanh(self.combine(torch.cat([h, context], dim=1)))
        return self.out(feed), h, feed


@torch.no_grad()
def greedy(model: PlainSeq2Seq, src: Tensor, steps: int) -> Tensor:
    memory, keys, h = model.encode(src)
    feed = h.new_zeros(h.shape)
    tokens = torch.full((src.size(0),), BOS)
    out = []
    for _ in range(steps):
        logits, h, feed = model.step(tokens, h, feed, memory, keys)
        logits[:, EOS] = float("-inf")
        tokens = logits.argmax(dim=1)
        out.append(tokens)
    return torch.stack(out, dim=1)  # (B, steps)


@torch.no_grad()
def beam(model: PlainSeq2Seq, src: Tensor, steps: int, k: int) -> Tensor:
    B = src.size(0)
    memory, keys, h = (t.repeat_interleave(k, dim=0) for t in model.encode(src))
    feed = h.new_zeros(h.shape)
    tokens = torch.full((B * k,), BOS)
    scores = torch.full((B, k), float("-inf"))
    scores[:, 0] = 0.0  # the k copies start alike: only the first may grow
    history = torch.empty(B * k, 0, dtype=torch.long)
    for _ in range(steps):
        logits, h, feed = model.step(tokens, h, feed, memory, keys)
        logp = F.log_softmax(logits, dim=1)
        logp[:, EOS] = float("-inf")
        V = logp.size(1)
        scores, best = (scores.unsqueeze(2) + logp.view(B, k, V)).view(B, k * V).topk(k, dim=1)
        rows = (torch.arange(B).unsqueeze(1) * k + best // V).view(-1)  # (B * k,) each beam's origin row
        tokens = (best % V).view(-1)
        h, feed = h[rows], feed[rows]
        history = torch.cat([history[rows], tokens.unsqueeze(1)], dim=1)
    return history.view(B, k, steps)[:, 0]  # topk sorts: beam 0 is the best


def teacher_forced(model: PlainSeq2Seq, src: Tensor, tgt_in: Tensor) -> Tensor:
    memory, keys, h = model.encode(src)
    feed = h.new_zeros(h.shape)
    logits = []
    for t in range(tgt_in.size(1)):
        step_logits, h, feed = model.step(tgt_in[:, t], h, feed, memory, keys)
        logits.append(step_logits)
    return torch.stack(logits, dim=1)  # (B, T, V)


class Adapter:
    """The uniform face `peers_worker.py` drives (every system's adapter has it)."""

    name = "plain"
    notes = ["the floor: plain vectorised PyTorch written in benchmarks/peers_plain.py (no masks, no beam bookkeeping)"]
    version = torch.__version__

    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.model = PlainSeq2Seq(cfg["vocab"], cfg["emb"], cfg["hidden"], cfg["dec_hidden"])
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg["lr"])

    def step_module(self) -> nn.Module:
        return self.model.cell

    def source_batch(self, words: Tensor) -> Tensor:
        return torch.cat([words + SPECIALS, torch.full((words.size(0), 1), EOS)], dim=1)

    def train_batch(self, src_words: Tensor, tgt_words: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        tgt = tgt_words + SPECIALS
        B = tgt.size(0)
        tgt_in = torch.cat([torch.full((B, 1), BOS), tgt], dim=1)
        tgt_out = torch.cat([tgt, torch.full((B, 1), EOS)], dim=1)
        return self.source_batch(src_words), tgt_in, tgt_out

    def greedy(self, src: Tensor) -> list[int]:
        self.model.eval()
        return [len(row) for row in greedy(self.model, src, self.cfg["steps"])]

    def beam(self, src: Tensor) -> list[int]:
        self.model.eval()
        return [len(row) for row in beam(self.model, src, self.cfg["steps"], self.cfg["beam"])]

    def train_step(self, batch: tuple[Tensor, Tensor, Tensor]) -> float:
        src, tgt_in, tgt_out = batch
        self.model.train()
        logits = teacher_forced(self.model, src, tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.item()
