"""Choosing the next token: greedy, sampling (temperature, top-k, top-p) and batched beam search.

A decoder is anything with `start(ctx) -> state` and `step(tokens (N,), state, ctx) -> (log_probs (N, V), state)`,
and optionally `prepare(ctx) -> ctx` (work done once per context, such as attention keys); every tensor of the
state holds one row per sequence on dimension 0, so that search reorders and drops rows by indexing (it may also
change the returned log-probs in place). An example whose search is done leaves the batch: later steps get fewer
rows, the state, tokens and context cut down alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from core import speedups
from core.context import Context, reorder
from core.errors import UserError, check_range
from core.search_config import SearchConfig
from core.search_rules import Rules, prepared

CUT = -1  # what a row that reached its own max_len reports in the steps after (rows that ended report EOS)


@dataclass
class Hypothesis:
    """One output sequence. `tokens` excludes the start token and EOS; `log_prob` sums every emitted token's log-prob
    (EOS's when `finished`); `score` is `log_prob` after the length penalty; `attention` (len(tokens), S), float32."""

    tokens: list[int]
    log_prob: float
    score: float
    finished: bool
    attention: Tensor | None = None


def gnmt_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + length) / 6) ** alpha; alpha = 0 leaves scores as raw log-probabilities."""
    return ((5 + length) / 6) ** alpha


# ---- greedy and sampling: one token per row per step -------------------------------------------------


def _most_likely(logp: Tensor) -> Tensor:
    return logp.argmax(dim=1)  # (N,): the first of equal maxima, NaN counting as largest


def _sampler(
    temperature: float, top_k: int, top_p: float, generator: torch.Generator | None
) -> Callable[[Tensor], Tensor]:
    for name, value in (("temperature", temperature), ("top_k", top_k), ("top_p", top_p)):
        SearchConfig.check_option(name, value)

    def choose(logp: Tensor) -> Tensor:
        scores = (logp - logp.max(dim=1, keepdim=True).values) / temperature  # the best at 0: never all -inf
        if top_k > 0:
            kth = scores.topk(min(top_k, scores.size(1)), dim=1).values[:, -1:]  # (N, 1)
            scores = scores.masked_fill(scores < kth, float("-inf"))
        if top_p < 1.0:
            sorted_scores, order = scores.sort(dim=1, descending=True)
            probs = sorted_scores.softmax(dim=1)
            outside = probs.cumsum(dim=1) - probs >= top_p  # the mass before this token already reaches p
            outside[:, 0] = False  # the likeliest token always stays, however small p is
            scores = scores.scatter(1, order, sorted_scores.masked_fill(outside, float("-inf")))
        return torch.multinomial(scores.softmax(dim=1), 1, generator=generator).squeeze(1)  # (N,)

    return choose


def _token_by_token(
    decoder: Any, ctx: Context, start_tokens: Tensor, choose: Callable[[Tensor], Tensor], rules: Rules
) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
    """Yield (tokens (B,), their log-probs (B,), attention (B, S) or None) step by step. A row that emits EOS, or
    reaches its own max_len, leaves the batch and reports EOS (or CUT) with log-prob 0 from then on; stops when
    every row has left."""
    ctx = prepared(decoder, ctx)
    state = decoder.start(ctx)
    B, eos = start_tokens.size(0), rules.eos
    rows = torch.arange(B, device=start_tokens.device)  # the rows still generating
    left = start_tokens.new_full((B,), eos)  # what each row reports once it has left
    tokens, history = start_tokens, start_tokens.unsqueeze(1)  # (n,), (n, t + 1) of those rows
    for t in range(rules.max_len):
        logp, state = decoder.step(tokens, state, ctx)  # (n, V)
        logp = rules.apply(logp, history, t)
        tokens = choose(logp)  # (n,)
        token_logp = logp.gather(1, tokens.unsqueeze(1)).squeeze(1)  # (n,)
        attn = getattr(state, "attn", None)
        yield (
            left.clone().index_copy_(0, rows, tokens),
            token_logp.new_zeros(B).index_copy_(0, rows, token_logp),
            None if attn is None else attn.new_zeros(B, attn.size(1)).index_copy_(0, rows, attn),
        )
        history = torch.cat([history, tokens.unsqueeze(1)], dim=1)
        cut = rules.limits[rows] <= t + 1  # (n,): rows at their own max_len
        left[rows[cut & (tokens != eos)]] = CUT
        going = ((tokens != eos) & ~cut).nonzero().squeeze(1)  # (n',)
        if len(going) == 0:
            return
        if len(going) < len(rows):
            rows, tokens, history = rows[going], tokens[going], history[going]
            state, ctx = reorder(state, going), ctx.keep_examples(going, 1)


def _collect(steps: Iterator[tuple[Tensor, Tensor, Tensor | None]], eos: int) -> list[Hypothesis]:
    tokens, logps, attns = zip(*steps)
    tokens_bt = torch.stack(tokens, dim=1).tolist()  # (B, T)
    logp_b = torch.stack(logps, dim=1).sum(dim=1).tolist()  # (B,)
    attn_bts = torch.stack(attns, dim=1).float() if attns[0] is not None else None  # (B, T, S)
    hyps = []
    for b, row in enumerate(tokens_bt):
        n = next((i for i, token in enumerate(row) if token in (eos, CUT)), len(row))
        finished = n < len(row) and row[n] == eos
        attention = attn_bts[b, :n] if n and attn_bts is not None else None
        hyps.append(Hypothesis(row[:n], logp_b[b], logp_b[b], finished, attention))
    return hyps


@torch.no_grad()
def greedy(
    decoder: Any,
    ctx: Context,
    start_tokens: Tensor,
    *,
    max_len: int | Tensor,
    eos: int,
    min_len: int = 0,
    no_repeat_ngram: int = 0,
    repetition_penalty: float = 1.0,
    forbid: Sequence[int] = (),
) -> list[Hypothesis]:
    """The most probable next token at every step; one Hypothesis per row of start_tokens (B,).
    In every search: `max_len` is one limit for all rows or one per row (B,) (a row at its limit ends unfinished);
    `forbid` holds token ids never chosen, such as padding and the start token."""
    rules = Rules(decoder, ctx, start_tokens, eos, forbid, max_len, min_len, no_repeat_ngram, repetition_penalty)
    return _collect(_token_by_token(decoder, ctx, start_tokens, _most_likely, rules), eos)


@torch.no_grad()
def sample(
    decoder: Any,
    ctx: Context,
    start_tokens: Tensor,
    *,
    max_len: int | Tensor,
    eos: int,
    min_len: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    no_repeat_ngram: int = 0,
    repetition_penalty: float = 1.0,
    forbid: Sequence[int] = (),
) -> list[Hypothesis]:
    """Draw each token from softmax(logits / T), optionally cut to the top k or the top-p nucleus (and
    renormalized over the tokens not forbidden). `log_prob` is under the model's own distribution (the one
    teacher forcing scores)."""
    choose = _sampler(temperature, top_k, top_p, generator)
    rules = Rules(decoder, ctx, start_tokens, eos, forbid, max_len, min_len, no_repeat_ngram, repetition_penalty)
    return _collect(_token_by_token(decoder, ctx, start_tokens, choose, rules), eos)


@torch.no_grad()
def stream(
    decoder: Any,
    ctx: Context,
    start_token: int,
    config: SearchConfig | None = None,
    *,
    eos: int,
    forbid: Sequence[int] = (),
    generator: torch.Generator | None = None,
    **options: Any,
) -> Iterator[int]:
    """Yield the token ids of a single sequence one at a time, as they are chosen: greedy or sampling as `config`
    (default: sampling) says, with any field overridden by keyword; `generator` instead of one seeded by
    config.seed."""
    config = SearchConfig.of(config, SearchConfig(method="sample"), **options)
    if config.method == "beam":
        raise UserError("streaming takes method 'greedy' or 'sample', not 'beam'")
    start = torch.tensor([start_token], device=ctx.h0.device)
    keywords = config.keywords()  # greedy's four, and sampling's temperature, top_k and top_p
    choose: Callable[[Tensor], Tensor] = _most_likely
    if config.method == "sample":
        drawn = generator or seeded(config.seed, start.device)
        choose = _sampler(keywords.pop("temperature"), keywords.pop("top_k"), keywords.pop("top_p"), drawn)
    rules = Rules(decoder, ctx, start, eos, forbid, **keywords)
    for tokens, _, _ in _token_by_token(decoder, ctx, start, choose, rules):
        if int(tokens[0]) == eos:
            return
        yield int(tokens[0])


# ---- beam search ------------------------------------------------------------------------------------


def top_candidates(candidates: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The n best of each row of candidates (E, C): values and indices (E, n), best first, equal values in
    index order, as argmax (greedy) breaks ties, so that beam size 1 equals greedy also when values tie (common
    with bfloat16 logits). topk alone orders ties arbitrarily and may keep any of them at the cut."""
    extra = int(n < candidates.size(1))  # one more, to see whether a tie straddles the cut
    values, indices = speedups.topk(candidates, n + extra)
    if extra:
        cut, after = values[:, n - 1 : n], values[:, n:]  # (E, 1) each
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


def beam_step(scores: Tensor, logp: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """One step of beam search, pure: the running scores (E, K) of each example's K beams and the step's
    log-probs (E, K, V) -> the n best extensions of each example: origins (E, n) (the beam each extends),
    tokens (E, n) and their scores (E, n), best first."""
    E, K, V = logp.shape
    candidates = (scores.unsqueeze(2) + logp).view(E, K * V)  # (E, K*V)
    top, index = top_candidates(candidates, min(n, K * V))
    return index // V, index % V, top


def _beam_so_far(
    history: Tensor, attention: Tensor | None, row: int, step: tuple[Tensor, Tensor | None] | None = None, k: int = 0
) -> tuple[list[int], Tensor | None]:
    """Row `row`'s tokens (without the start token) and attention history (t, S); with `step` (this step's chosen
    tokens (K,) and attention (N, S)), extended by its k-th token, chosen from that row."""
    tokens = history[row, 1:].tolist()
    # clone: a view would keep the whole (N, t, S) attention history alive as long as the hypothesis
    attn = attention[row].clone() if attention is not None else None
    if step is not None:
        tokens.append(int(step[0][k]))
        if step[1] is not None:
            now = step[1][row].float().unsqueeze(0)  # (1, S)
            attn = now if attn is None else torch.cat([attn, now])
    return tokens, attn


def _hypothesis(
    tokens: list[int], attention: Tensor | None, log_prob: float, finished: bool, alpha: float
) -> Hypothesis:
    """A beam as a Hypothesis: its score is its log-probability under the length penalty (EOS counting)."""
    return Hypothesis(tokens, log_prob, log_prob / gnmt_penalty(len(tokens) + finished, alpha), finished, attention)


def _cut(history: Tensor, attention: Tensor | None, rows: Tensor, step: tuple, scores: Tensor, alpha: float) -> list:
    """An example's live beams (rows (K,), scores (K,)), extended by this `step`, as unfinished hypotheses."""
    return [_hypothesis(*_beam_so_far(history, attention, int(rows[k]), step, k), float(scores[k]), False, alpha)
            for k in range(len(scores)) if scores[k] > float("-inf")]  # fmt: skip


def _done(hyps: list[Hypothesis], beam_logp: Tensor, K: int, t: int, max_len: int, alpha: float) -> bool:
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


@torch.no_grad()
def beam_search(
    decoder: Any,
    ctx: Context,
    start_tokens: Tensor,
    *,
    max_len: int | Tensor,
    eos: int,
    min_len: int = 0,
    beam_size: int = 5,
    length_penalty: float = 0.0,
    n_best: int = 1,
    no_repeat_ngram: int = 0,
    repetition_penalty: float = 1.0,
    forbid: Sequence[int] = (),
) -> list[list[Hypothesis]]:
    """Batched beam search: the K beams of every example still searched advance as one batch (rows e*K ..
    e*K+K-1 for example e), reading one copy of its memory. Returns the n_best hypotheses per example, best
    score first. An example stops once K hypotheses have finished and no live beam can still beat the K-th of
    them under the GNMT length penalty (alpha = `length_penalty`); it then leaves the batch."""
    rules = Rules(decoder, ctx, start_tokens, eos, forbid, max_len, min_len, no_repeat_ngram, repetition_penalty,
                  beam_size=beam_size, length_penalty=length_penalty)  # fmt: skip
    check_range("n_best", n_best, 1, beam_size)
    B, K, alpha, device = start_tokens.size(0), beam_size, length_penalty, start_tokens.device
    ctx = prepared(decoder, ctx.expand(K))
    state = decoder.start(ctx)
    history = start_tokens.repeat_interleave(K).unsqueeze(1)  # (E*K, t + 1): each beam's tokens, start first
    attention: Tensor | None = None  # (E*K, t, S) when the decoder attends
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # the K beams start alike: keep one alive, so the first step does not pick duplicates
    examples = list(range(B))  # the examples still searched, by their place in the batch
    final: list[list[Hypothesis]] = [[] for _ in range(B)]
    limits = rules.limits.tolist()  # each example's own max_len
    for t in range(rules.max_len):
        logp, state = decoder.step(history[:, -1], state, ctx)  # (E*K, V)
        logp = rules.apply(logp, history, t)
        E = len(examples)
        origin, token, top = beam_step(scores, logp.view(E, K, -1), 2 * K)  # (E, 2K) each, best first
        rows = origin + torch.arange(E, device=device).unsqueeze(1) * K  # (E, 2K): the beam row each extends
        ends = token == eos
        for e, j in (ends[:, :K] & top[:, :K].isfinite()).nonzero().tolist():  # EOS among the best K ends one
            tokens, attn = _beam_so_far(history, attention, int(rows[e, j]))
            final[examples[e]].append(_hypothesis(tokens, attn, float(top[e, j]), True, alpha))
        rows, token, scores = _going_on(ends, K, rows, token, top)
        alive, state_attn = [], getattr(state, "attn", None)
        for e, b in enumerate(examples):
            if limits[b] <= t + 1:  # its own max_len reached: the beams still live end unfinished
                final[b] += _cut(history, attention, rows[e], (token[e], state_attn), scores[e], alpha)
            elif not _done(final[b], scores[e], K, t, limits[b], alpha):
                alive.append(e)
        if not alive:
            break
        if len(alive) < E:  # a finished example leaves the batch, as in fairseq
            kept = torch.tensor(alive, device=device)
            rows, token, scores = rows[kept], token[kept], scores[kept]
            ctx, examples = ctx.keep_examples(kept, K), [examples[e] for e in alive]
        rows = rows.view(-1)
        state = reorder(state, rows)
        history = torch.cat([history.index_select(0, rows), token.view(-1, 1)], dim=1)
        attention = _extend(attention, getattr(state, "attn", None), rows)
    return [sorted(hyps, key=lambda h: h.score, reverse=True)[:n_best] for hyps in final]


def _going_on(ends: Tensor, K: int, *candidates: Tensor) -> list[Tensor]:
    """Of each example's candidates (E, 2K), best first, the best K that do not end: each of `candidates` as (E, K)."""
    rank = torch.arange(ends.size(1), device=ends.device).expand_as(ends)
    keep = torch.where(ends, rank + ends.size(1), rank).argsort(dim=1)[:, :K]  # (E, K)
    return [c.gather(1, keep) for c in candidates]


def _extend(attention: Tensor | None, step_attn: Tensor | None, rows: Tensor) -> Tensor | None:
    """The beams' attention history (N, t, S), reordered by rows and extended by this step's weights (N, S)."""
    if step_attn is None:
        return None
    step_attn = step_attn.float().unsqueeze(1)  # hypotheses hold float32 attention whatever the model's dtype
    return step_attn if attention is None else torch.cat([attention.index_select(0, rows), step_attn], dim=1)


SEARCHES: dict[str, Callable[..., Any]] = {"greedy": greedy, "sample": sample, "beam": beam_search}


def seeded(seed: int | None, device: torch.device | str) -> torch.Generator | None:
    """A generator on `device` seeded with `seed`, for reproducible sampling; None (torch's own draws) without one."""
    return None if seed is None else torch.Generator(device).manual_seed(seed)


def search_with(
    config: SearchConfig,
    decoder: Any,
    ctx: Context,
    start_tokens: Tensor,
    *,
    eos: int,
    forbid: Sequence[int] = (),
    max_len: int | Tensor | None = None,
    generator: torch.Generator | None = None,
) -> list[list[Hypothesis]]:
    """Search as `config` says: the n best per row for beam search, one for greedy and sampling. `max_len`
    overrides the config's, for every row or one per row (B,) (a translation's depends on its source);
    `generator` the one seeded by config.seed."""
    options = config.check(flags=False).keywords() | ({} if max_len is None else {"max_len": max_len})
    if config.method == "sample":
        options["generator"] = generator or seeded(config.seed, start_tokens.device)
    found = SEARCHES[config.method](decoder, ctx, start_tokens, eos=eos, forbid=forbid, **options)
    return found if config.method == "beam" else [[h] for h in found]


def decode(
    decoder: Any,
    ctx: Context,
    start_tokens: Tensor,
    config: SearchConfig | None = None,
    *,
    eos: int,
    forbid: Sequence[int] = (),
    generator: torch.Generator | None = None,
    **options: Any,
) -> list[Hypothesis]:
    """greedy, sample or beam_search as `config` (default: greedy) says, any field overridden by keyword
    (`method="beam", beam_size=4, max_len=50`): the best Hypothesis per row."""
    config = SearchConfig.of(config, SearchConfig(), **options)
    found = search_with(config, decoder, ctx, start_tokens, eos=eos, forbid=forbid, generator=generator)
    return [nbest[0] for nbest in found]
