"""What every search does around the choice of a token: its arguments checked first (options within SearchConfig's
ranges, a context, one start token per sequence) and its context prepared, then at each step the rules applied to
the log-probs (N, V): banned tokens, and the small processors for n-gram blocking and the repetition penalty."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from core.context import Context
from core.errors import UserError, check_range
from core.search_config import SearchConfig


def block_repeated_ngrams(logp: Tensor, history: Tensor, n: int) -> Tensor:
    """Forbid any token that would complete an n-gram already present in history (N, t)."""
    if n <= 0 or history.size(1) < n:
        return logp
    windows = history.unfold(1, n, 1)  # (N, W, n)
    suffix = history[:, history.size(1) - n + 1 :]  # (N, n-1)
    match = (windows[:, :, :-1] == suffix.unsqueeze(1)).all(dim=2)  # (N, W)
    rows, where = match.nonzero(as_tuple=True)
    if rows.numel():
        logp = logp.index_put((rows, windows[rows, where, -1]), logp.new_tensor(float("-inf")))
    return logp


def penalize_repetitions(logp: Tensor, history: Tensor, penalty: float) -> Tensor:
    """Multiply the log-probs of tokens seen in history by `penalty` (> 1 discourages them), renormalized."""
    if penalty == 1.0:
        return logp
    seen = torch.zeros_like(logp, dtype=torch.bool).scatter_(1, history, True)  # (N, V)
    return F.log_softmax(torch.where(seen, logp * penalty, logp), dim=-1)


def prepared(decoder: Any, ctx: Context) -> Context:
    """The context as the decoder's `prepare` makes it, once per search (a decoder without one takes it as is)."""
    prepare = getattr(decoder, "prepare", None)
    return ctx if prepare is None else prepare(ctx)


class Rules:
    """One search's checked arguments, and its rules: `apply(logp, history, t)` before each choice. Options are
    named as the search functions' keywords; `ranged` holds a method's own (beam_size, length_penalty)."""

    def __init__(
        self,
        decoder: Any,
        ctx: Context,
        start_tokens: Any,
        eos: int,
        forbid: Sequence[int],
        max_len: int | Tensor,
        min_len: int,
        no_repeat_ngram: int,
        repetition_penalty: float,
        **ranged: float,
    ):
        check_inputs(decoder, ctx, start_tokens)
        self.limits = row_limits(max_len, start_tokens)  # (B,): each row's own max_len
        self.max_len = int(self.limits.max()) if len(self.limits) else 1
        options = dict(min_len=min_len, no_repeat_ngram=no_repeat_ngram, repetition_penalty=repetition_penalty)
        for name, value in (options | ranged).items():
            SearchConfig.check_option(name, value)
        check_range("min_len", min_len, 0, int(self.limits.min()) if len(self.limits) else self.max_len)
        if eos in forbid:
            raise UserError(f"forbid holds the EOS token {eos}: no output could end")
        self.eos, self.forbid, self.min_len = eos, tuple(forbid), min_len
        self.no_repeat_ngram, self.repetition_penalty = no_repeat_ngram, repetition_penalty
        # made once per search, not per step (on a GPU each would be a copy from the host)
        device = start_tokens.device
        self.early = torch.tensor([*forbid, eos], dtype=torch.long, device=device)  # EOS too before min_len
        self.late = torch.tensor(forbid, dtype=torch.long, device=device) if forbid else None

    def apply(self, logp: Tensor, history: Tensor, t: int) -> Tensor:
        if t == 0:  # ids the decoder cannot emit would otherwise fail inside torch's indexing
            for name, ids in (("eos", [self.eos]), ("forbid", self.forbid)):
                outside = [i for i in ids if not 0 <= i < logp.size(1)]
                if outside:
                    raise UserError(
                        f"{name} holds token id {outside[0]}, outside the decoder's vocabulary (0..{logp.size(1) - 1})"
                    )
        logp = penalize_repetitions(logp, history, self.repetition_penalty)
        logp = block_repeated_ngrams(logp, history, self.no_repeat_ngram)
        banned = self.early if t < self.min_len else self.late
        return logp if banned is None else logp.index_fill_(1, banned, float("-inf"))


def row_limits(max_len: Any, start_tokens: Tensor) -> Tensor:
    """`max_len` as each row's own limit (B,): one integer for every row, or a tensor of one per row (a translation
    stops at a length its own source sets, whatever else is in its batch)."""
    if not isinstance(max_len, Tensor):
        SearchConfig.check_option("max_len", max_len)
        return torch.full((start_tokens.size(0),), max_len, dtype=torch.long, device=start_tokens.device)
    if max_len.shape != start_tokens.shape or max_len.is_floating_point() or max_len.dtype == torch.bool:
        raise TypeError(
            f"max_len as a tensor holds one integer per row, shape {tuple(start_tokens.shape)}; got a "
            f"{max_len.dtype} tensor of shape {tuple(max_len.shape)}"
        )
    for value in (int(max_len.min()), int(max_len.max())) if len(max_len) else ():
        SearchConfig.check_option("max_len", value)
    return max_len.to(start_tokens.device, torch.long)


def check_inputs(decoder: Any, ctx: Context, start_tokens: Any) -> None:
    """What a search is given: a context, one integer start token (B,) per sequence it starts, ids within the
    decoder's vocabulary, and a mask that leaves each example something to attend to."""
    if not isinstance(ctx, Context):
        raise TypeError(f"ctx must be a Context, got {type(ctx).__name__}")
    if (
        not isinstance(start_tokens, Tensor)
        or start_tokens.dim() != 1
        or start_tokens.dtype not in (torch.int64, torch.int32)
    ):
        shown = (
            f"{start_tokens.dtype} tensor of shape {tuple(start_tokens.shape)}"
            if isinstance(start_tokens, Tensor)
            else type(start_tokens).__name__
        )
        raise TypeError(f"start_tokens must be a 1-dimensional tensor of token ids (int64), got a {shown}")
    if start_tokens.size(0) != ctx.rows:
        raise ValueError(
            f"start_tokens has {start_tokens.size(0)} rows and the context {ctx.rows} (rows of h0): "
            "one start token per sequence"
        )
    vocab = getattr(decoder, "vocab_size", None)
    ids = (int(start_tokens.min()), int(start_tokens.max())) if start_tokens.numel() else (0, 0)
    if vocab is not None and not 0 <= ids[0] <= ids[1] < vocab:
        raise ValueError(f"start_tokens holds ids outside the decoder's vocabulary (0..{vocab - 1})")
    if ctx.memory_mask is not None and not bool(ctx.memory_mask.any(dim=1).all()):  # attention would be NaN
        row = int((~ctx.memory_mask.any(dim=1)).nonzero()[0])
        raise ValueError(f"memory_mask row {row} is all False: every example needs a position to attend to")
