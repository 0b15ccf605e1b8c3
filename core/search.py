"""Choosing the next token: greedy, sampling (temperature, top-k, top-p) and batched beam search.

Every function takes any decoder with `start(ctx) -> state` and `step(tokens (N,), state, ctx) ->
(log_probs (N, V), state)`, where every tensor in the state has the batch on dimension 0. In beam search,
a decoder with `beams_share_memory` gets the memory once per example (B rows for N = B*K beam rows), and
state tensors it makes from it with one row per example (attention keys) must stay the same objects from
step to step.
Search drops finished examples from the batch, so later steps may get fewer rows (state, tokens and
context cut down alike; tensors with one row for every example, such as a single shared memory row, stay).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from core.errors import UserError, check_range
from core.context import Context, keep_examples_of, map_tensors


@dataclass
class Hypothesis:
    """One output sequence. `tokens` excludes the start token and EOS; `log_prob` sums every emitted token's
    log-probability (EOS included when `finished`); `score` is `log_prob` after the length penalty;
    `attention` is (len(tokens), S), float32, when the decoder attends."""

    tokens: list[int]
    log_prob: float
    score: float
    finished: bool
    attention: Tensor | None = None


def gnmt_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + length) / 6) ** alpha; alpha = 0 leaves scores as raw log-probabilities."""
    return ((5 + length) / 6) ** alpha


def reorder_state(state: Any, rows: Tensor, unchanged: Sequence[Tensor] = ()) -> Any:
    """Index every tensor in a (nested) state along dimension 0, except those in `unchanged` (by identity)."""
    return map_tensors(state, lambda t: t if any(t is u for u in unchanged) else t.index_select(0, rows))


def shared_by_beams(state: Any, K: int, examples: int | None = None) -> list[Tensor]:
    """The state's tensors that all K beams of an example share: those whose K rows per example (rows b*K ..
    b*K+K-1) are all equal, e.g. attention keys made from the repeated context, and, for K > 1, those with one
    row per example (`examples` rows), e.g. keys made from a memory the beams share. Beams move only within
    their example, so reordering such a tensor changes nothing for as long as the decoder hands back that same
    tensor: beam search then skips it."""
    shared: list[Tensor] = []

    def check(t: Tensor) -> Tensor:
        if K > 1 and t.dim() and t.size(0) == examples:
            shared.append(t)
        elif t.dim() and t.size(0) % K == 0:
            blocks = t.unflatten(0, (-1, K))  # (B, K, ...)
            if torch.equal(blocks, blocks[:, :1].expand_as(blocks)):
                shared.append(t)
        return t
    map_tensors(state, check)
    return shared


# ---- log-prob processors: small functions applied to (N, V) log-probs before choosing -----------------

def block_repeated_ngrams(logp: Tensor, history: Tensor, n: int) -> Tensor:
    """Forbid any token that would complete an n-gram already present in history (N, t)."""
    if n <= 0 or history.size(1) < n:
        return logp
    windows = history.unfold(1, n, 1)  # (N, W, n)
    suffix = history[:, history.size(1) - n + 1:]  # (N, n-1)
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


def _process(logp: Tensor, history: Tensor, no_repeat_ngram: int, repetition_penalty: float,
             banned: Tensor | None) -> Tensor:
    logp = penalize_repetitions(logp, history, repetition_penalty)
    logp = block_repeated_ngrams(logp, history, no_repeat_ngram)
    if banned is not None:
        logp = logp.index_fill(1, banned, float("-inf"))
    return logp


def _banned(forbid: Sequence[int], eos: int, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """The token ids to mask before min_len (EOS too) and from then on, made once per search rather than once
    per step (on a GPU each would be a copy from the host)."""
    late = torch.tensor(list(forbid), dtype=torch.long, device=device) if forbid else None
    return torch.tensor([*forbid, eos], dtype=torch.long, device=device), late


def _check_ids(forbid: Sequence[int], eos: int, vocab_size: int) -> None:
    """On the first step, once the decoder has said how many tokens it has: ids it cannot emit would otherwise
    fail inside torch's indexing."""
    for name, ids in (("eos", [eos]), ("forbid", forbid)):
        outside = [i for i in ids if not 0 <= i < vocab_size]
        if outside:
            raise UserError(f"{name} holds token id {outside[0]}, outside the decoder's vocabulary "
                            f"(0..{vocab_size - 1})")


def _check(max_len: int, min_len: int, no_repeat_ngram: int, repetition_penalty: float, eos: int,
           forbid: Sequence[int]) -> None:
    check_range("max_len", max_len, 1)
    check_range("min_len", min_len, 0, max_len)
    check_range("no_repeat_ngram", no_repeat_ngram, 0)
    check_range("repetition_penalty", repetition_penalty, 0, low_open=True)
    if eos in forbid:
        raise UserError(f"forbid holds the EOS token {eos}: no output could end")


# ---- greedy and sampling: one token per row per step -------------------------------------------------

def _sampler(temperature: float, top_k: int, top_p: float, generator: torch.Generator | None
             ) -> Callable[[Tensor], Tensor]:
    check_range("temperature", temperature, 0, low_open=True)
    check_range("top_k", top_k, 0)
    check_range("top_p", top_p, 0, 1, low_open=True)

    def choose(logp: Tensor) -> Tensor:
        scores = logp / temperature  # log_softmax(logits / T) up to a constant
        if top_k > 0:
            kth = scores.topk(min(top_k, scores.size(1)), dim=1).values[:, -1:]  # (N, 1)
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if top_p < 1.0:
            sorted_scores, order = scores.sort(dim=1, descending=True)
            probs = sorted_scores.softmax(dim=1)
            outside = probs.cumsum(dim=1) - probs >= top_p  # the mass before this token already reaches p
            scores = scores.scatter(1, order, sorted_scores.masked_fill(outside, float("-inf")))
        return torch.multinomial(scores.softmax(dim=1), 1, generator=generator).squeeze(1)  # (N,)
    return choose


ARGMAX_BLOCK = 32


def _argmax(logp: Tensor) -> Tensor:
    """logp.argmax(dim=1), the same index (first on ties, NaN counting as largest), faster on the CPU:
    torch's argmax over a long last dimension is not vectorised (0.5 ms for 64 x 8000 here) while amax is
    (0.05 ms), so find the block of 32 that holds the maximum, then the position inside it (0.18 ms)."""
    N, V = logp.shape
    if logp.device.type != "cpu" or V % ARGMAX_BLOCK or V < 2 * ARGMAX_BLOCK:
        return logp.argmax(dim=1)
    blocks = logp.view(N, V // ARGMAX_BLOCK, ARGMAX_BLOCK)
    best = blocks.amax(dim=2).argmax(dim=1)  # (N,): the first block holding the row's maximum
    inside = blocks[torch.arange(N, device=logp.device), best].argmax(dim=1)  # (N,)
    return best * ARGMAX_BLOCK + inside


def _token_by_token(decoder: Any, ctx: Context, start_tokens: Tensor, choose: Callable[[Tensor], Tensor], *,
                    max_len: int, eos: int, min_len: int, no_repeat_ngram: int, repetition_penalty: float,
                    forbid: Sequence[int]) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    """Yield (tokens (B,), their log-probs (B,), attention (B, S) or None) step by step; rows that have
    emitted EOS keep reporting EOS with log-prob 0 but leave the batch (the decoder no longer computes them);
    stops when every row has."""
    _check(max_len, min_len, no_repeat_ngram, repetition_penalty, eos, forbid)
    early, late = _banned(forbid, eos, start_tokens.device)
    state = decoder.start(ctx)
    B = start_tokens.size(0)
    rows = torch.arange(B, device=start_tokens.device)  # the rows still generating
    tokens, history = start_tokens, start_tokens.unsqueeze(1)  # (n,), (n, t + 1) of those rows
    for t in range(max_len):
        logp, state = decoder.step(tokens, state, ctx)  # (n, V)
        if t == 0:
            _check_ids(forbid, eos, logp.size(1))
        logp = _process(logp, history, no_repeat_ngram, repetition_penalty, early if t < min_len else late)
        tokens = choose(logp)  # (n,)
        token_logp = logp.gather(1, tokens.unsqueeze(1)).squeeze(1)  # (n,)
        attn = getattr(state, "attn", None)
        yield (start_tokens.new_full((B,), eos).index_copy_(0, rows, tokens),
               token_logp.new_zeros(B).index_copy_(0, rows, token_logp),
               None if attn is None else attn.new_zeros(B, attn.size(1)).index_copy_(0, rows, attn))
        history = torch.cat([history, tokens.unsqueeze(1)], dim=1)
        ended = tokens == eos
        n_ended = int(ended.sum())
        if n_ended == len(rows):
            return
        if n_ended:
            going = (~ended).nonzero().squeeze(1)
            rows, tokens, history = rows[going], tokens[going], history[going]
            state, ctx = _keep_examples(state, going, 1, len(ended))[0], ctx.keep_examples(going, 1)


def _collect(steps: Iterator[tuple[Tensor, Tensor, Tensor | None]], batch_size: int, eos: int) -> list[Hypothesis]:
    tokens, logps, attns = [], [], []
    for tok, logp, attn in steps:
        tokens.append(tok)
        logps.append(logp)
        attns.append(attn)
    tokens_bt = torch.stack(tokens, dim=1).tolist()  # (B, T)
    logp_b = torch.stack(logps, dim=1).sum(dim=1).tolist()  # (B,)
    attn_bts = torch.stack(attns, dim=1).float() if attns[0] is not None else None  # (B, T, S)
    hyps = []
    for b in range(batch_size):
        row = tokens_bt[b]
        finished = eos in row
        n = row.index(eos) if finished else len(row)
        attention = attn_bts[b, :n] if n and attn_bts is not None else None
        hyps.append(Hypothesis(row[:n], logp_b[b], logp_b[b], finished, attention))
    return hyps


@torch.no_grad()
def greedy(decoder: Any, ctx: Context, start_tokens: Tensor, *, max_len: int, eos: int, min_len: int = 0,
           no_repeat_ngram: int = 0, repetition_penalty: float = 1.0, forbid: Sequence[int] = ()
           ) -> list[Hypothesis]:
    """The most probable next token at every step; one Hypothesis per row of start_tokens (B,).
    `forbid` (here and in every search): token ids never chosen, such as padding and the start token."""
    steps = _token_by_token(decoder, ctx, start_tokens, _argmax, max_len=max_len, eos=eos, min_len=min_len,
                            no_repeat_ngram=no_repeat_ngram, repetition_penalty=repetition_penalty, forbid=forbid)
    return _collect(steps, start_tokens.size(0), eos)


@torch.no_grad()
def sample(decoder: Any, ctx: Context, start_tokens: Tensor, *, max_len: int, eos: int, min_len: int = 0,
           temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, generator: torch.Generator | None = None,
           no_repeat_ngram: int = 0, repetition_penalty: float = 1.0, forbid: Sequence[int] = ()
           ) -> list[Hypothesis]:
    """Draw each token from softmax(logits / T), optionally cut to the top k or the top-p nucleus (and
    renormalized over the tokens not forbidden). `log_prob` is under the model's own distribution (the one
    teacher forcing scores)."""
    choose = _sampler(temperature, top_k, top_p, generator)
    steps = _token_by_token(decoder, ctx, start_tokens, choose, max_len=max_len, eos=eos, min_len=min_len,
                            no_repeat_ngram=no_repeat_ngram, repetition_penalty=repetition_penalty, forbid=forbid)
    return _collect(steps, start_tokens.size(0), eos)


@torch.no_grad()
def stream(decoder: Any, ctx: Context, start_token: int, *, max_len: int, eos: int, method: str = "sample",
           min_len: int = 0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
           generator: torch.Generator | None = None, no_repeat_ngram: int = 0,
           repetition_penalty: float = 1.0, forbid: Sequence[int] = ()) -> Iterator[int]:
    """Yield token ids one at a time, as they are chosen, for a single sequence (greedy or sample)."""
    if method not in ("greedy", "sample"):
        raise UserError(f"streaming takes method 'greedy' or 'sample', not {method!r}")
    choose = _argmax if method == "greedy" else _sampler(temperature, top_k, top_p, generator)
    device = ctx.h0.device
    for tokens, _, _ in _token_by_token(decoder, ctx, torch.tensor([start_token], device=device), choose,
                                        max_len=max_len, eos=eos, min_len=min_len, no_repeat_ngram=no_repeat_ngram,
                                        repetition_penalty=repetition_penalty, forbid=forbid):
        token = int(tokens[0])
        if token == eos:
            return
        yield token


# ---- beam search ------------------------------------------------------------------------------------

TOPK_BLOCK = 64  # the fastest of 32, 64, 128, 256 and 512 here


def _topk(candidates: Tensor, m: int) -> tuple[Tensor, Tensor]:
    """candidates.topk(m, dim=1) (ties in any order), faster on long rows: the m largest values of a row lie
    in its m blocks with the largest maxima (those blocks hold m elements at least as large as the m-th
    largest maximum, and no element elsewhere exceeds it), so only those blocks, and the short tail after the
    last whole block, go to topk. For our beam benchmark's 64 rows of 5 x 8000 candidates: 0.6 ms instead
    of 2.6 ms, of a ~35 ms step (benchmarks/README.md)."""
    rows, length = candidates.shape
    block = TOPK_BLOCK
    blocks = length // block
    if candidates.device.type != "cpu" or blocks < 4 * m:  # CUDA's topk is fast; few blocks would not pay
        return candidates.topk(m, dim=1)
    whole = blocks * block
    maxima = candidates[:, :whole].view(rows, blocks, block).amax(dim=2)  # (R, blocks)
    chosen = maxima.topk(m, dim=1).indices  # (R, m)
    columns = (chosen.unsqueeze(2) * block + torch.arange(block, device=chosen.device)).view(rows, m * block)
    columns = torch.cat([columns, torch.arange(whole, length, device=chosen.device).expand(rows, -1)], dim=1)
    values, picked = candidates.gather(1, columns).topk(m, dim=1)
    return values, columns.gather(1, picked)


def _top_candidates(candidates: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The n best of each row of candidates (B, C): values and indices (B, n), best first, equal values in
    index order, as argmax (greedy) breaks ties. topk alone orders ties arbitrarily and may keep any of them
    at the cut. Ties are rare in float32 but common with bfloat16 weights, whose logits take few distinct
    values (a tie straddled the cut in ~15% of rows of our beam benchmark); without this, beam size 1 could
    part from greedy there."""
    extra = int(n < candidates.size(1))  # one more, to see whether a tie straddles the cut
    values, indices = _topk(candidates, n + extra)
    if extra:
        cut, after = values[:, n - 1:n], values[:, n:]  # (B, 1) each
        straddles = ((after == cut) & cut.isfinite()).squeeze(1).nonzero().squeeze(1)  # -inf rows: dead beams
        values, indices = values[:, :n], indices[:, :n]
        if straddles.numel():  # the places that hold the cut value get the lowest-index ties, in index order
            row_cut = cut[straddles]  # (R, 1)
            room = (values[straddles] == row_cut).sum(dim=1)  # (R,): a row's last `room` places hold the cut value
            row, index = (candidates[straddles] == row_cut).nonzero(as_tuple=True)  # every tie, row-major order
            count = torch.bincount(row, minlength=len(straddles))
            rank = torch.arange(len(row), device=row.device) - (count.cumsum(0) - count)[row]  # within its row
            fits = rank < room[row]
            row, index, rank = row[fits], index[fits], rank[fits]
            indices[straddles[row], n - room[row] + rank] = index
    indices, by_index = indices.sort(dim=1)
    values, by_value = values.gather(1, by_index).sort(dim=1, descending=True, stable=True)
    return values, indices.gather(1, by_value)


def _finished(hyps: list[Hypothesis], beam_logp: Tensor, K: int, t: int, max_len: int, alpha: float) -> bool:
    """An example is done once K hypotheses have finished and none of its live beams (log-probs (K,), after
    step t) can still beat the K-th of them."""
    if len(hyps) < K:
        return False
    kth = sorted((h.score for h in hyps), reverse=True)[K - 1]
    best = float(beam_logp.max())
    if best == float("-inf"):
        return True
    # log-probs only fall, so a live beam's best reachable score is its log-prob under the most favourable
    # length still possible.
    return kth >= max(best / gnmt_penalty(t + 2, alpha), best / gnmt_penalty(max_len, alpha))


def _keep_examples(state: Any, kept: Tensor, K: int, n: int, only: Sequence[Tensor] | None = None
                   ) -> tuple[Any, list[Tensor]]:
    """Cut the state's tensors down to the examples `kept` of n: those with one row per example (n rows) or
    K (n*K rows); others (say, attention keys of one memory row that every example reads) stay as they are.
    `only`: cut just these tensors (by identity). Returns the state and those tensors as they now are."""
    now: list[Tensor] = []

    def keep(t: Tensor) -> Tensor:
        if only is not None and not any(t is o for o in only):
            return t
        now.append(keep_examples_of(t, kept, K, n))
        return now[-1]
    return map_tensors(state, keep), now


@torch.no_grad()
def beam_search(decoder: Any, ctx: Context, start_tokens: Tensor, *, max_len: int, eos: int, min_len: int = 0,
                beam_size: int = 5, length_penalty: float = 0.0, n_best: int = 1, no_repeat_ngram: int = 0,
                repetition_penalty: float = 1.0, forbid: Sequence[int] = ()) -> list[list[Hypothesis]]:
    """Batched beam search: all K beams of the examples still searched advance as one batch (K rows each).

    Returns the n_best hypotheses per example, best score first. An example stops once K hypotheses have
    finished and no live beam can still beat the K-th of them under the length penalty; it then leaves the
    batch.
    """
    _check(max_len, min_len, no_repeat_ngram, repetition_penalty, eos, forbid)
    check_range("beam_size", beam_size, 1)
    check_range("n_best", n_best, 1, beam_size)
    check_range("length_penalty", length_penalty)
    alpha, lp = length_penalty, gnmt_penalty
    B, K, device = start_tokens.size(0), beam_size, start_tokens.device
    early, late = _banned(forbid, eos, device)
    share = getattr(decoder, "beams_share_memory", False)  # then the beams read one copy of their memory
    ctx = ctx.repeat_interleave(K, memory=not share)
    state = decoder.start(ctx)
    shared = shared_by_beams(state, K, B if share else None)  # e.g. attention keys: not copied at every step
    tokens = start_tokens.repeat_interleave(K)  # (B*K,)
    history = tokens.unsqueeze(1)  # (B*K, t + 1), the start token first
    attn_history: Tensor | None = None  # (B*K, t, S)
    beam_logp = torch.full((B, K), float("-inf"), device=device)
    beam_logp[:, 0] = 0.0  # all beams start identical: keep one alive so the first step does not pick duplicates
    final: list[list[Hypothesis]] = [[] for _ in range(B)]
    # The examples still searched, by position in the batch (rows p*K .. p*K+K-1). A finished example leaves
    # the batch, as in fairseq: the decoder no longer computes its rows.
    examples = list(range(B))

    for t in range(max_len):
        logp, state = decoder.step(tokens, state, ctx)  # (n*K, V)
        if t == 0:
            _check_ids(forbid, eos, logp.size(1))
        logp = _process(logp, history, no_repeat_ngram, repetition_penalty, None)  # banned tokens: below
        n, V = len(examples), logp.size(1)
        candidates = (beam_logp.unsqueeze(2) + logp.view(n, K, V)).view(n, K * V)
        banned = early if t < min_len else late
        if banned is not None:  # in the candidates, a tensor of our own: no copy of the log-probs to mask them
            candidates.view(n, K, V).index_fill_(2, banned, float("-inf"))
        top_logp, top_index = _top_candidates(candidates, min(2 * K, K * V))  # (n, 2K), best first
        origin, token = top_index // V, top_index % V  # (n, 2K) beam within example, token id
        is_eos = token == eos

        # EOS candidates ranked among the best K end a hypothesis.
        for p, j in (is_eos[:, :K] & top_logp[:, :K].isfinite()).nonzero().tolist():
            row = p * K + int(origin[p, j])
            words = history[row, 1:].tolist()
            # clone: a view would keep the whole (n*K, t, S) history alive as long as the hypothesis
            attn = attn_history[row].clone() if attn_history is not None else None
            log_prob = float(top_logp[p, j])
            final[examples[p]].append(Hypothesis(words, log_prob, log_prob / lp(len(words) + 1, alpha), True, attn))

        # The best K candidates that do not end continue (stable sort keeps the score order).
        rank = torch.arange(top_logp.size(1), device=device).expand_as(top_logp)
        keep = torch.where(is_eos, rank + top_logp.size(1), rank).argsort(dim=1)[:, :K]  # (n, K)
        rows = torch.arange(n, device=device).unsqueeze(1) * K + origin.gather(1, keep)  # (n, K) rows of this step
        tokens = token.gather(1, keep)  # (n, K)
        beam_logp = top_logp.gather(1, keep)  # (n, K)

        alive = [p for p in range(n) if not _finished(final[examples[p]], beam_logp[p], K, t, max_len, alpha)]
        if not alive:
            break
        if len(alive) < n:
            kept = torch.tensor(alive, device=device)
            rows, tokens, beam_logp = rows[kept], tokens[kept], beam_logp[kept]
            ctx = ctx.keep_examples(kept, K)
            state, shared = _keep_examples(state, kept, K, n, only=shared)  # the others follow `rows`
            examples = [examples[p] for p in alive]
        rows, tokens = rows.view(-1), tokens.view(-1)
        state = reorder_state(state, rows, shared)
        history = torch.cat([history.index_select(0, rows), tokens.unsqueeze(1)], dim=1)
        step_attn = getattr(state, "attn", None)
        if step_attn is not None:
            step_attn = step_attn.float()  # hypotheses hold float32 attention whatever the model's dtype
            prev = attn_history.index_select(0, rows) if attn_history is not None else step_attn.unsqueeze(1)[:, :0]
            attn_history = torch.cat([prev, step_attn.unsqueeze(1)], dim=1)  # (n*K, t + 1, S)
    else:  # max_len reached: the beams still alive end unfinished
        for p, b in enumerate(examples):
            for k in range(K):
                log_prob = float(beam_logp[p, k])
                if log_prob > float("-inf"):
                    row = p * K + k
                    words = history[row, 1:].tolist()
                    attn = attn_history[row].clone() if attn_history is not None else None
                    final[b].append(Hypothesis(words, log_prob, log_prob / lp(len(words), alpha), False, attn))
    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:n_best] for hyps in final]


def generate(decoder: Any, ctx: Context, start_tokens: Tensor, *, method: str = "greedy", max_len: int, eos: int,
             min_len: int = 0, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
             generator: torch.Generator | None = None, beam_size: int = 5, length_penalty: float = 0.0,
             no_repeat_ngram: int = 0, repetition_penalty: float = 1.0, forbid: Sequence[int] = ()
             ) -> list[Hypothesis]:
    """Dispatch to greedy, sample or beam_search by `method`; the best Hypothesis per row."""
    common = dict(max_len=max_len, eos=eos, min_len=min_len, no_repeat_ngram=no_repeat_ngram,
                  repetition_penalty=repetition_penalty, forbid=forbid)
    if method == "greedy":
        return greedy(decoder, ctx, start_tokens, **common)
    if method == "sample":
        return sample(decoder, ctx, start_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                      generator=generator, **common)
    if method == "beam":
        return [nbest[0] for nbest in beam_search(decoder, ctx, start_tokens, beam_size=beam_size,
                                                  length_penalty=length_penalty, **common)]
    raise UserError(f"method {method!r} is not one of greedy, sample, beam")
