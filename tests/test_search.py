"""Search (greedy, sampling, beam) against a scripted decoder whose log-probs come from a seeded table.

Random tiny networks stop at once or repeat one token, which lets broken beam bookkeeping pass; a table keyed
on (example, step, the two previous tokens) gives every example, step and history its own distribution, so a
beam that is reordered wrongly, a state that is not reordered, or a score taken from the wrong row shows up as
a mismatch with teacher-forced rescoring or with brute force.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch

import core.search
import core.speedups
from core import (
    Context,
    Hypothesis,
    RNNDecoder,
    SearchConfig,
    UserError,
    beam_search,
    decode,
    gnmt_penalty,
    greedy,
    sample,
    stream,
)

EOS = 1
START = 2

# Chi-square critical values at p = 0.001 by degrees of freedom (standard tables; scipy is not available).
# p = 0.001 is generous: with a fixed generator a correct sampler passes deterministically, and each test
# also checks that the wrong distribution lands far above the value, so the test has power.
CHI2_CRITICAL_P001 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46, 7: 24.32}


class ScriptedDecoder:
    """A decoder whose next-token log-probs are a seeded table lookup: table[example, step, before, previous].

    `previous` is the token fed to `step`; `before` is the one fed a step earlier, which only the state knows,
    so a search that does not reorder the state with its beams reads the wrong row. The example index comes
    from the context (h0 holds it), so `Context.expand` is exercised too. Every state tensor has
    the batch on dimension 0.
    """

    def __init__(
        self,
        n_examples: int,
        max_len: int,
        vocab: int,
        *,
        seed: int,
        scale: float = 1.5,
        eos_bias: float = 0.0,
        logits: torch.Tensor | None = None,
    ):
        if logits is None:
            g = torch.Generator().manual_seed(seed)
            logits = torch.randn(n_examples, max_len, vocab, vocab, vocab, generator=g) * scale
            logits[..., EOS] += eos_bias
        self.table = logits.log_softmax(dim=-1)  # (examples, max_len, V_before, V_previous, V)
        self.vocab = vocab
        self.steps = 0  # calls to step, to see whether a search stopped early

    def prepare(self, ctx: Context) -> Context:
        return ctx

    def start(self, ctx: Context) -> dict[str, torch.Tensor]:
        ex = ctx.h0[0, :, 0].long()  # (N,)
        return {"ex": ex, "step": torch.zeros_like(ex), "before": torch.zeros_like(ex)}

    def step(
        self, tokens: torch.Tensor, state: dict[str, torch.Tensor], ctx: Context
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.steps += 1
        ex, t, before = state["ex"], state["step"], state["before"]
        logp = self.table[ex, t, before, tokens]  # (N, V)
        return logp.clone(), {"ex": ex, "step": t + 1, "before": tokens}

    def rescore(self, ex: int, start: int, tokens: list[int], finished: bool) -> float:
        """Teacher-forced log-probability of tokens (+ EOS when finished), read straight from the table."""
        emitted = tokens + [EOS] if finished else tokens
        before, prev, total = 0, start, 0.0
        for t, tok in enumerate(emitted):
            total += float(self.table[ex, t, before, prev, tok])
            before, prev = prev, tok
        return total


def ctx_for(examples: list[int]) -> Context:
    """A context whose h0 (1, B, 1) holds the scripted decoder's example index of each row."""
    return Context(h0=torch.tensor(examples, dtype=torch.float).view(1, -1, 1))


def starts(n: int) -> torch.Tensor:
    return torch.full((n,), START, dtype=torch.long)


def emitted_length(h: Hypothesis) -> int:
    return len(h.tokens) + int(h.finished)


def scripted(n: int = 12, max_len: int = 8, vocab: int = 8, seed: int = 0, **kw) -> ScriptedDecoder:
    return ScriptedDecoder(n, max_len, vocab, seed=seed, **kw)


# ---- greedy and beam search -------------------------------------------------------------------------------


def test_beam_size_one_is_greedy():
    B, L = 12, 8
    dec = scripted(B, L)
    ctx = ctx_for(list(range(B)))
    g = greedy(dec, ctx, starts(B), max_len=L, eos=EOS)
    b = beam_search(dec, ctx, starts(B), max_len=L, eos=EOS, beam_size=1, length_penalty=0.0)
    p_eos = float(dec.table[..., EOS].exp().mean())
    assert 0.05 < p_eos < 0.3, "precondition: EOS is moderately likely"
    assert {h.finished for h in g} == {True, False}, "precondition: some rows stop early, some run to max_len"
    assert len({len(h.tokens) for h in g}) >= 3, "precondition: rows stop at different steps"
    for gh, (bh,) in zip(g, b):
        assert bh.tokens == gh.tokens
        assert bh.finished == gh.finished
        assert bh.log_prob == pytest.approx(gh.log_prob, abs=1e-5)


def brute_force(
    dec: ScriptedDecoder, ex: int, max_len: int, alpha: float, min_len: int = 0, forbid: tuple[int, ...] = ()
) -> list[tuple[float, list[int], bool]]:
    """Every sequence the search may return, as (score, tokens, finished), best first."""
    words = [w for w in range(dec.vocab) if w != EOS and w not in forbid]
    out = []
    for n in range(min_len, max_len):  # n words then EOS: n + 1 <= max_len emitted tokens
        for seq in itertools.product(words, repeat=n):
            logp = dec.rescore(ex, START, list(seq), True)
            out.append((logp / gnmt_penalty(n + 1, alpha), list(seq), True))
    for seq in itertools.product(words, repeat=max_len):  # cut off at max_len without EOS
        logp = dec.rescore(ex, START, list(seq), False)
        out.append((logp / gnmt_penalty(max_len, alpha), list(seq), False))
    return sorted(out, key=lambda x: x[0], reverse=True)


@pytest.mark.parametrize("vocab, max_len", [(4, 4), (5, 3)])
@pytest.mark.parametrize("alpha, min_len", [(0.0, 0), (1.0, 0), (0.0, 2)])
def test_wide_beam_equals_brute_force(vocab, max_len, alpha, min_len):
    B, n_best = 3, 6
    dec = scripted(B, max_len, vocab, seed=1)
    # wide enough to keep every live prefix and rank every EOS candidate at the last step among the best K
    K = vocab**max_len
    result = beam_search(
        dec,
        ctx_for(list(range(B))),
        starts(B),
        max_len=max_len,
        eos=EOS,
        min_len=min_len,
        beam_size=K,
        length_penalty=alpha,
        n_best=n_best,
    )
    for ex in range(B):
        expected = brute_force(dec, ex, max_len, alpha, min_len)[:n_best]
        got = result[ex]
        assert [h.tokens for h in got] == [e[1] for e in expected]
        assert [h.finished for h in got] == [e[2] for e in expected]
        assert [h.score for h in got] == pytest.approx([e[0] for e in expected], abs=1e-5)
    if min_len == 0:  # precondition: the brute-force bests mix finished and cut-off sequences
        bests = [brute_force(dec, ex, max_len, alpha)[:n_best] for ex in range(B)]
        assert {e[2] for best in bests for e in best} == {True, False}


FAVOURED = (3, 4)  # tokens a decoder prefers but which must never come out (think <pad>, <bos>)


def favouring(n: int, max_len: int, vocab: int, seed: int) -> ScriptedDecoder:
    dec = scripted(n, max_len, vocab, seed=seed)
    dec.table[..., list(FAVOURED)] += 2.0
    dec.table = dec.table.log_softmax(dim=-1)  # = log_softmax(logits + the bonus)
    return dec


@pytest.mark.parametrize("method", ["greedy", "sample", "beam", "stream"])
def test_forbidden_tokens_never_come_out_and_keep_the_model_scores(method):
    B, L = 12, 6
    dec = favouring(B, L, 8, seed=21)
    ctx = ctx_for(list(range(B)))

    def run(forbid: tuple[int, ...]) -> list[tuple[int, Hypothesis]]:
        kw = dict(max_len=L, eos=EOS, forbid=forbid)
        if method == "beam":
            return [
                (ex, h)
                for ex, nbest in enumerate(beam_search(dec, ctx, starts(B), beam_size=4, n_best=4, **kw))
                for h in nbest
            ]
        if method == "stream":  # one row at a time
            return [
                (
                    ex,
                    Hypothesis(
                        list(
                            stream(
                                dec,
                                ctx_for([ex]),
                                START,
                                method="sample",
                                generator=torch.Generator().manual_seed(ex),
                                **kw,
                            )
                        ),
                        0.0,
                        0.0,
                        True,
                    ),
                )
                for ex in range(B)
            ]
        found = (
            greedy(dec, ctx, starts(B), **kw)
            if method == "greedy"
            else sample(dec, ctx, starts(B), generator=torch.Generator().manual_seed(0), **kw)
        )
        return list(enumerate(found))

    assert any(set(h.tokens) & set(FAVOURED) for _, h in run(())), "precondition: the tokens come out unforbidden"
    for ex, h in run(FAVOURED):
        assert not set(h.tokens) & set(FAVOURED)
        if method != "stream":  # forbidding leaves the other tokens' log-probs the model's own
            assert h.log_prob == pytest.approx(dec.rescore(ex, START, h.tokens, h.finished), abs=1e-5)
        if method == "greedy":  # every step the best token that is allowed
            before, prev = 0, START
            for t, tok in enumerate(h.tokens + [EOS] * h.finished):
                row = dec.table[ex, t, before, prev].clone()
                row[list(FAVOURED)] = float("-inf")
                assert tok == int(row.argmax())
                before, prev = prev, tok


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_wide_beam_with_forbidden_tokens_equals_brute_force_without_them(alpha):
    B, vocab, max_len, n_best = 3, 5, 3, 5
    dec = favouring(B, max_len, vocab, seed=22)
    result = beam_search(
        dec,
        ctx_for(list(range(B))),
        starts(B),
        max_len=max_len,
        eos=EOS,
        beam_size=vocab**max_len,
        length_penalty=alpha,
        n_best=n_best,
        forbid=(3,),
    )
    for ex in range(B):
        expected = brute_force(dec, ex, max_len, alpha, forbid=(3,))[:n_best]
        assert [h.tokens for h in result[ex]] == [e[1] for e in expected]
        assert [h.score for h in result[ex]] == pytest.approx([e[0] for e in expected], abs=1e-5)
    assert any(3 in e[1] for ex in range(B) for e in brute_force(dec, ex, max_len, alpha)[:n_best]), (
        "precondition: without forbidding, the best sequences use the token"
    )


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_hypotheses_equal_rescoring(alpha):
    B, L, K = 10, 8, 6
    dec = scripted(B, L, seed=2)
    result = beam_search(
        dec, ctx_for(list(range(B))), starts(B), max_len=L, eos=EOS, beam_size=K, length_penalty=alpha, n_best=K
    )
    all_hyps = [h for nbest in result for h in nbest]
    assert {h.finished for h in all_hyps} == {True, False}, "precondition: some end early, some reach max_len"
    assert len({len(h.tokens) for h in all_hyps if h.finished}) >= 3
    for ex, nbest in enumerate(result):
        assert len(nbest) == K
        for h in nbest:
            assert h.log_prob == pytest.approx(dec.rescore(ex, START, h.tokens, h.finished), abs=1e-5)
            assert h.score == pytest.approx(h.log_prob / gnmt_penalty(emitted_length(h), alpha), abs=1e-5)
            assert EOS not in h.tokens
            assert len(h.tokens) == L or h.finished
        scores = [h.score for h in nbest]
        assert scores == sorted(scores, reverse=True)
        assert len({(tuple(h.tokens), h.finished) for h in nbest}) == K


def reference_beam(
    dec: ScriptedDecoder, ex: int, *, beam_size: int, max_len: int, alpha: float, n_best: int, min_len: int = 0
) -> list[tuple[float, list[int], bool]]:
    """The beam rule for one example in plain Python, with no batching and no early stopping: the 2K best
    candidates; EOS among the best K ends a hypothesis, the best K others live on; survivors end at max_len."""
    beams: list[tuple[float, list[int]]] = [(0.0, [])]
    final = []
    for t in range(max_len):
        candidates = []
        for logp, words in beams:
            seq = [0, START] + words
            row = dec.table[ex, t, seq[-2], seq[-1]].tolist()
            for w, lp in enumerate(row):
                if not (w == EOS and t < min_len):
                    candidates.append((logp + lp, words, w))
        candidates.sort(key=lambda c: c[0], reverse=True)
        top = candidates[: 2 * beam_size]
        final += [
            (lp / gnmt_penalty(len(words) + 1, alpha), words, True) for lp, words, w in top[:beam_size] if w == EOS
        ]
        beams = [(lp, words + [w]) for lp, words, w in top if w != EOS][:beam_size]
    final += [(lp / gnmt_penalty(max_len, alpha), words, False) for lp, words in beams]
    return sorted(final, key=lambda f: f[0], reverse=True)[:n_best]


@pytest.mark.parametrize("alpha, min_len", [(0.0, 0), (1.0, 0), (2.0, 0), (0.0, 3), (-0.5, 0)])
@pytest.mark.parametrize("beam_size", [2, 5])
def test_batched_beam_equals_plain_reference(alpha, min_len, beam_size):
    """Flattening B*K rows, origin rows, state reordering and stopping early change nothing."""
    B, L = 10, 8
    dec = scripted(B, L, seed=16)
    result = beam_search(
        dec,
        ctx_for(list(range(B))),
        starts(B),
        max_len=L,
        eos=EOS,
        min_len=min_len,
        beam_size=beam_size,
        length_penalty=alpha,
        n_best=beam_size,
    )
    for ex in range(B):
        expected = reference_beam(
            dec, ex, beam_size=beam_size, max_len=L, alpha=alpha, n_best=beam_size, min_len=min_len
        )
        assert [(h.tokens, h.finished) for h in result[ex]] == [(e[1], e[2]) for e in expected]
        assert [h.score for h in result[ex]] == pytest.approx([e[0] for e in expected], abs=1e-5)
    stopped_early = 0
    for ex in range(B):  # alone, an example's search ends as soon as no live beam can win
        dec.steps = 0
        alone = beam_search(
            dec,
            ctx_for([ex]),
            starts(1),
            max_len=L,
            eos=EOS,
            min_len=min_len,
            beam_size=beam_size,
            length_penalty=alpha,
            n_best=beam_size,
        )
        assert [(h.tokens, h.finished) for h in alone[0]] == [(h.tokens, h.finished) for h in result[ex]]
        assert [h.score for h in alone[0]] == pytest.approx([h.score for h in result[ex]], abs=1e-6)
        stopped_early += dec.steps < L
    if alpha <= 1.0 and min_len == 0:
        assert stopped_early > 0, "precondition: early stopping happens"


def counting_rows(dec: Any) -> list[int]:
    """Make dec.step record how many rows each call gets; returns the (growing) record."""
    rows, step = [], dec.step

    def counting(tokens, state, ctx):
        rows.append(tokens.size(0))
        return step(tokens, state, ctx)

    dec.step = counting
    return rows


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_finished_examples_leave_the_batch(alpha):
    """Once an example is done, the decoder no longer gets its K rows: at step t it gets K rows for each example
    that, searched alone, takes more than t steps."""
    B, L, K = 10, 8, 3
    dec = scripted(B, L, seed=16)
    steps_alone = []
    for ex in range(B):
        dec.steps = 0
        beam_search(dec, ctx_for([ex]), starts(1), max_len=L, eos=EOS, beam_size=K, length_penalty=alpha)
        steps_alone.append(dec.steps)
    rows = counting_rows(dec)
    beam_search(dec, ctx_for(list(range(B))), starts(B), max_len=L, eos=EOS, beam_size=K, length_penalty=alpha)
    assert len(set(steps_alone)) >= 3, "precondition: examples finish at different steps"
    assert rows == [K * sum(n > t for n in steps_alone) for t in range(max(steps_alone))]


def test_early_stop_waits_for_a_long_beam_the_length_penalty_favours():
    """A hand-written table: after step 1 two short hypotheses have finished (K = 2), but the live beam 3 3 3 ...
    costs almost nothing per token, and under alpha = 2 it ends at max_len with the best score. Stopping once
    K have finished, or bounding the live beam by the next length only, loses it."""
    L, V, alpha = 10, 5, 2.0
    probs = torch.full((1, L, V, V, V), 1e-9)
    probs[0, 0, :, START, [EOS, 0, 3]] = torch.tensor([0.5, 0.4, 0.1])  # [] ends; 0 or 3 go on
    probs[0, :, :, 0, EOS] = 1.0  # after 0: end
    probs[0, 1:, :, 3, 3] = 1.0  # after 3: 3 again, for sure
    dec = ScriptedDecoder(1, L, V, seed=0, logits=probs.log())
    short = [(math.log(0.5) / gnmt_penalty(1, alpha), []), (math.log(0.4) / gnmt_penalty(2, alpha), [0])]
    long = math.log(0.1) / gnmt_penalty(L, alpha)
    assert long > max(score for score, _ in short), "precondition: the long beam wins under alpha = 2"
    assert math.log(0.1) / gnmt_penalty(3, alpha) < min(score for score, _ in short), (
        "precondition: judged at the next length only, the long beam looks beaten"
    )
    ((best, *_),) = beam_search(
        dec, ctx_for([0]), starts(1), max_len=L, eos=EOS, beam_size=2, n_best=2, length_penalty=alpha
    )
    assert best.tokens == [3] * L and not best.finished
    assert best.score == pytest.approx(long, abs=1e-5)
    ((best, *_),) = beam_search(dec, ctx_for([0]), starts(1), max_len=L, eos=EOS, beam_size=2, n_best=2)
    assert best.tokens == [] and best.finished  # alpha = 0: the short one


def test_beam_is_at_least_greedy():
    # Not a theorem for every model (greedy's prefix can fall off a beam that later does badly), but it holds
    # for this table, and broken bookkeeping (wrong origin rows, scores read from other beams) breaks it.
    B, L = 16, 8
    dec = scripted(B, L, seed=3)
    ctx = ctx_for(list(range(B)))
    g = greedy(dec, ctx, starts(B), max_len=L, eos=EOS)
    b = beam_search(dec, ctx, starts(B), max_len=L, eos=EOS, beam_size=4, length_penalty=0.0)
    for ex, (gh, (bh,)) in enumerate(zip(g, b)):
        assert bh.score >= gh.log_prob - 1e-6
        assert bh.log_prob == pytest.approx(dec.rescore(ex, START, bh.tokens, bh.finished), abs=1e-5)
    assert sum(bh.score > gh.log_prob + 1e-4 for gh, (bh,) in zip(g, b)) >= 3, "precondition: beam finds better"


def test_length_penalty_lengthens_output():
    B, L = 16, 8
    dec = scripted(B, L, seed=4)
    ctx = ctx_for(list(range(B)))

    def mean_length(alpha: float) -> float:
        best = [
            nbest[0]
            for nbest in beam_search(dec, ctx, starts(B), max_len=L, eos=EOS, beam_size=5, length_penalty=alpha)
        ]
        return sum(emitted_length(h) for h in best) / B

    short, long = mean_length(0.0), mean_length(2.0)
    assert long > short + 1.0


@pytest.mark.parametrize("method", ["greedy", "sample", "beam"])
def test_min_len_and_max_len(method):
    B, L, min_len = 12, 7, 3
    dec = scripted(B, L, seed=5, eos_bias=1.0)  # EOS-happy, so min_len has work to do
    ctx = ctx_for(list(range(B)))

    def run(min_len: int) -> list[tuple[int, Hypothesis]]:
        """(example, hypothesis) pairs."""
        if method == "beam":
            result = beam_search(dec, ctx, starts(B), max_len=L, eos=EOS, min_len=min_len, beam_size=4, n_best=4)
            return [(ex, h) for ex, nbest in enumerate(result) for h in nbest]
        if method == "sample":
            hyps = sample(
                dec, ctx, starts(B), max_len=L, eos=EOS, min_len=min_len, generator=torch.Generator().manual_seed(0)
            )
        else:
            hyps = greedy(dec, ctx, starts(B), max_len=L, eos=EOS, min_len=min_len)
        return list(enumerate(hyps))

    free, bounded = run(0), run(min_len)
    assert any(h.finished and len(h.tokens) < min_len for _, h in free), "precondition: some end before min_len"
    for _, h in free + bounded:
        assert len(h.tokens) <= L
        assert h.finished or len(h.tokens) == L
    assert all(len(h.tokens) >= min_len for _, h in bounded)
    assert any(h.finished for _, h in bounded)
    for ex, h in bounded:  # blocking EOS leaves the other tokens' log-probs the model's own
        assert h.log_prob == pytest.approx(dec.rescore(ex, START, h.tokens, h.finished), abs=1e-5)


@pytest.mark.parametrize("cell, attention, layers, eos_bias", [("gru", "bahdanau", 1, 0.0), ("lstm", "luong", 2, 0.5)])
def test_padded_batch_search_equals_each_example_alone(cell, attention, layers, eos_bias):
    """A real attention decoder over memories of different lengths: padding (random, masked) must not matter."""
    torch.manual_seed(3)
    V, H, M, lengths = 12, 16, 6, [5, 2, 7, 3]
    dec = RNNDecoder(V, 8, H, layers, cell=cell, attention=attention, memory_dim=M).eval()
    with torch.no_grad():  # sharper distributions than a fresh network's, so outputs differ between examples
        dec.output.weight.mul_(2.0)
        dec.embedding.weight.mul_(2.0)
        dec.output.bias[EOS] += eos_bias  # and some hypotheses end before max_len
    B, S = len(lengths), max(lengths)
    memory = torch.randn(B, S, M) * 3  # padding positions hold garbage on purpose
    mask = torch.arange(S).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)  # (B, S)
    h0 = torch.randn(layers, B, H)
    c0 = torch.randn(layers, B, H) if cell == "lstm" else None
    batch = Context(h0=h0, c0=c0, memory=memory, memory_mask=mask)
    alone = [
        Context(
            h0=h0[:, b : b + 1],
            c0=None if c0 is None else c0[:, b : b + 1],
            memory=memory[b : b + 1, :n],
            memory_mask=mask[b : b + 1, :n],
        )
        for b, n in enumerate(lengths)
    ]
    L, K = 10, 3

    def check(batched: list[Hypothesis], single: list[Hypothesis], b: int) -> None:
        for x, y in zip(batched, single, strict=True):
            assert x.tokens == y.tokens
            assert x.finished == y.finished
            assert x.log_prob == pytest.approx(y.log_prob, abs=1e-4)
            if x.tokens:
                assert x.attention.shape == (len(x.tokens), S)
                assert torch.allclose(x.attention[:, : lengths[b]], y.attention, atol=1e-5)
                assert torch.all(x.attention[:, lengths[b] :] == 0)

    g = greedy(dec, batch, starts(B), max_len=L, eos=EOS)
    beams = beam_search(dec, batch, starts(B), max_len=L, eos=EOS, beam_size=K, n_best=K)
    unmasked = greedy(dec, Context(h0=h0, c0=c0, memory=memory), starts(B), max_len=L, eos=EOS)
    assert any(x.tokens != y.tokens for x, y in zip(g, unmasked)), "precondition: the padding would matter"
    assert len({tuple(h.tokens) for h in g}) >= 3, "precondition: examples decode differently"
    assert {h.finished for nbest in beams for h in nbest} == {True, False}
    for b in range(B):
        check([g[b]], greedy(dec, alone[b], starts(1), max_len=L, eos=EOS), b)
        check(beams[b], beam_search(dec, alone[b], starts(1), max_len=L, eos=EOS, beam_size=K, n_best=K)[0], b)

    # the beam's log-probs and attention are the decoder's teacher-forced ones (its state was reordered right)
    for b, nbest in enumerate(beams):
        for h in nbest:
            emitted = h.tokens + [EOS] if h.finished else h.tokens
            inp = torch.tensor([[START] + emitted[:-1]])
            with torch.no_grad():
                logits, _, attn = dec.unroll(inp, alone[b])
            logp = logits.log_softmax(-1)[0, torch.arange(len(emitted)), torch.tensor(emitted)].sum()
            assert h.log_prob == pytest.approx(float(logp), abs=1e-4)
            if h.tokens:
                assert torch.allclose(h.attention[:, : lengths[b]], attn[0, : len(h.tokens)], atol=1e-5)


class RowByRowDecoder(RNNDecoder):
    """A decoder that wants its memory with one row per sequence: it repeats the memory (and so the keys) for
    every beam when it prepares the context, as a decoder reading the memory row by row would."""

    def prepare(self, ctx: Context) -> Context:
        return super().prepare(Context(ctx.h0, ctx.c0, ctx.per_sequence(ctx.memory), ctx.per_sequence(ctx.memory_mask)))


@pytest.mark.parametrize("cell, attention", [("gru", "bahdanau"), ("lstm", "luong")])
def test_beams_reading_one_memory_per_example_search_as_with_a_repeated_memory(cell, attention):
    """The K beams of an example share one copy of its memory and keys (attention groups their queries); beam
    search must find what it finds with the memory repeated K times, padding included, also as examples leave."""
    torch.manual_seed(6)
    lengths, H, M = [5, 2, 7, 3], 16, 6
    decoders = {
        share: cls(12, 8, H, 2, cell=cell, attention=attention, memory_dim=M).eval()
        for share, cls in ((True, RNNDecoder), (False, RowByRowDecoder))
    }
    decoders[False].load_state_dict(decoders[True].state_dict())
    with torch.no_grad():
        for dec in decoders.values():
            dec.output.weight.mul_(3.0)
            dec.output.bias[EOS] += 1.0  # some hypotheses end early
    S = max(lengths)
    mask = torch.arange(S).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    ctx = Context(
        torch.randn(2, 4, H), torch.randn(2, 4, H) if cell == "lstm" else None, torch.randn(4, S, M) * 3, mask
    )  # padding holds garbage
    runs, seen = {}, []
    for share, dec in decoders.items():
        start = dec.start

        def recording_start(c: Context, start=start):
            seen.append((c.h0.size(1), c.memory.size(0), c.keys.size(0)))
            return start(c)

        dec.start = recording_start
        rows = counting_rows(dec)
        runs[share] = beam_search(dec, ctx, starts(4), max_len=9, eos=EOS, beam_size=4, n_best=4, length_penalty=1.0)
    assert seen == [(16, 4, 4), (16, 16, 16)]  # h0 rows, memory rows, key rows: one copy per example, or 4
    assert 0 < min(rows) < 16, "precondition: examples leave the batch, so memory and keys are cut down too"
    assert len({tuple(h.tokens) for nbest in runs[True] for h in nbest}) > 8  # precondition: beams differ
    assert {h.finished for nbest in runs[True] for h in nbest} == {True, False}
    for shared, repeated in zip(runs[True], runs[False]):
        assert [h.tokens for h in shared] == [h.tokens for h in repeated]
        for a, b in zip(shared, repeated):
            assert a.score == pytest.approx(b.score, abs=1e-5)
            if a.tokens:
                assert torch.allclose(a.attention, b.attention, atol=1e-6)
    with pytest.raises(ValueError, match="must be a multiple"):
        RNNDecoder.start(decoders[True], Context(torch.randn(2, 6, H), None, torch.randn(4, S, M), mask))


@pytest.mark.parametrize("memory_rows", ["repeated", "per example", "one for all"])
def test_context_keeps_the_rows_of_the_examples_it_keeps(memory_rows):
    """Context.keep_examples on a beam layout (k rows of h0 and c0 per example): h0, c0 and a repeated memory
    keep the k rows of each kept example, a memory of one row per example its row, a single row stays."""
    B, k, S = 4, 3, 2
    h0 = torch.arange(B * k, dtype=torch.float).view(1, B * k, 1).expand(2, -1, 5)
    memory_b = {"repeated": B * k, "per example": B, "one for all": 1}[memory_rows]
    memory = torch.arange(memory_b, dtype=torch.float).view(-1, 1, 1).expand(-1, S, 3)
    mask = torch.arange(memory_b).view(-1, 1) + torch.arange(S) > 0
    kept = torch.tensor([3, 1])
    got = Context(h0, -h0, memory, mask).keep_examples(kept, k)
    rows = [9, 10, 11, 3, 4, 5]
    assert got.h0[0, :, 0].tolist() == rows and got.c0[1, :, 4].tolist() == [-r for r in rows]
    expected = {"repeated": rows, "per example": [3, 1], "one for all": [0]}[memory_rows]
    assert got.memory[:, 0, 0].tolist() == expected
    assert torch.equal(got.memory_mask, mask[expected])


def test_one_memory_row_read_by_every_example_stays_as_examples_finish():
    """A memory of one row for all examples (RNNDecoder accepts it) is not cut when examples leave the batch:
    greedy and beam size 1 find what they find with that memory repeated for every example."""
    torch.manual_seed(4)
    B, H = 6, 16
    dec = RNNDecoder(12, 8, H, cell="gru", attention="bahdanau", memory_dim=6).eval()
    h0, memory = 3 * torch.randn(1, B, H), torch.randn(1, 5, 6)
    one = Context(h0, None, memory, torch.ones(1, 5, dtype=torch.bool))
    each = Context(h0, None, memory.expand(B, -1, -1), torch.ones(B, 5, dtype=torch.bool))
    rows = counting_rows(dec)
    expected = [h.tokens for h in greedy(dec, each, starts(B), max_len=10, eos=EOS)]
    assert len(set(map(len, expected))) >= 3, "precondition: examples finish at different steps"
    assert [h.tokens for h in greedy(dec, one, starts(B), max_len=10, eos=EOS)] == expected
    assert [n[0].tokens for n in beam_search(dec, one, starts(B), max_len=10, eos=EOS, beam_size=1)] == expected
    assert min(rows) < B, "precondition: examples left the batch"


@pytest.mark.parametrize("size", [5, 40, 127, 300])
def test_top_candidates_break_ties_by_lowest_index_also_across_the_cut(size):
    """Beam search's n best candidates per row: best value first and, among equal values, lowest index first,
    also when the tied values straddle the n-th place (topk alone may keep any of them there)."""
    generator = torch.Generator().manual_seed(size)
    candidates = torch.randint(0, 3, (50, size), generator=generator).float()  # three values: ties everywhere
    candidates[0, :] = float("-inf")  # a dead row
    candidates[1, :] = 0.0  # all tied
    for n in sorted({1, 2, 3, size // 2, size - 1, size} - {0}):
        values, indices = core.search.top_candidates(candidates, n)
        for row in range(1, 50):
            expected = sorted(range(size), key=lambda i: (-float(candidates[row, i]), i))[:n]
            assert indices[row].tolist() == expected, (n, row)
            assert torch.equal(values[row], candidates[row, expected])
        assert torch.all(values[0] == float("-inf"))


@pytest.mark.parametrize("length", [64 * 44, 64 * 44 + 37, 40000])
def test_topk_over_block_maxima_equals_topk(length):
    """The faster topk that only looks inside the blocks with the largest maxima (and the tail after the last
    whole block) finds the same values as topk, also when they crowd into one block or into the tail."""
    generator = torch.Generator().manual_seed(length)
    candidates = torch.randn(6, length, generator=generator)
    candidates[1, 256:320] += 10.0  # every one of the best in one block (the fifth)
    candidates[2, -20:] += 10.0  # ... or in the tail
    candidates[3, ::2] = float("-inf")  # dead half
    candidates[4, :] = float("-inf")  # a dead row: any m positions
    candidates[5] = candidates[5].round()  # many ties
    for m in (1, 5, 11):
        values, indices = core.speedups.topk(candidates, m)
        expected = candidates.topk(m, dim=1).values
        assert torch.equal(values, expected), m
        assert torch.equal(candidates.gather(1, indices), values)
        assert all(len(set(row)) == m for row in indices.tolist()), "positions picked twice"
        assert torch.equal(indices[:4], candidates[:4].topk(m, dim=1).indices), "distinct values: same positions"
        assert length // core.speedups.TOPK_BLOCK >= 4 * m, "precondition: the block path ran"


def test_bfloat16_decoder_beam_size_one_is_greedy_with_float32_scores_and_attention():
    """Search on a decoder cast to bfloat16: the same bookkeeping (equal log-probs, which bfloat16 logits make
    common, go to the lower token id in beam search as in greedy), scores and attention handed out in float32."""
    torch.manual_seed(5)
    B, V, H, M, S = 6, 12, 16, 6, 5
    dec = RNNDecoder(V, 8, H, 1, cell="gru", attention="bahdanau", memory_dim=M).eval()
    with torch.no_grad():
        dec.output.weight.mul_(3.0)  # sharp enough that rows decode differently
    dec.to(torch.bfloat16)
    ctx = Context(
        h0=torch.randn(1, B, H, dtype=torch.bfloat16),
        memory=torch.randn(B, S, M, dtype=torch.bfloat16),
        memory_mask=torch.ones(B, S, dtype=torch.bool),
    )
    g = greedy(dec, ctx, starts(B), max_len=8, eos=EOS)
    b = beam_search(dec, ctx, starts(B), max_len=8, eos=EOS, beam_size=1)
    assert len({tuple(h.tokens) for h in g}) >= 3, "precondition: examples decode differently"
    with torch.no_grad():
        first = dec.step(starts(B), dec.start(ctx), ctx)[0].topk(2, dim=1).values
    assert bool((first[:, 0] == first[:, 1]).any()), "precondition: bfloat16 logits tie, and ties break alike"
    for gh, (bh,) in zip(g, b):
        assert bh.tokens == gh.tokens and bh.finished == gh.finished
        assert bh.log_prob == pytest.approx(gh.log_prob, abs=1e-4)
        for h in (gh, bh):
            assert isinstance(h.log_prob, float) and h.attention.dtype == torch.float32


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_attention_keys_are_made_once_per_search_and_the_state_has_a_row_per_sequence(method):
    """The decoder prepares its attention keys into the context once (not at every step, and not per beam);
    every tensor of the state has one row per sequence, so search reorders all of them alike."""
    torch.manual_seed(4)
    dec = RNNDecoder(12, 8, 16, attention="bahdanau", memory_dim=6).eval()
    with torch.no_grad():
        dec.output.weight.mul_(3.0)
    ctx = Context(h0=torch.randn(1, 3, 16), memory=torch.randn(3, 5, 6))
    made, keys = [], dec.attention.keys
    dec.attention.keys = lambda memory: made.append(memory.size(0)) or keys(memory)
    shapes, step = [], dec.step

    def recording_step(tokens, state, c):
        logp, state = step(tokens, state, c)
        shapes.append({name: t.size(0) for name, t in state._asdict().items() if t is not None} | {"rows": len(tokens)})
        return logp, state

    dec.step = recording_step
    found = decode(
        dec, ctx, starts(3), method=method, max_len=8, eos=EOS, **({"beam_size": 4} if method == "beam" else {})
    )
    assert made == [3], "keys made once, from the memory's one row per example"
    assert len(shapes) > 1 and all(set(s.values()) == {s["rows"]} for s in shapes)
    assert len({tuple(h.tokens) for h in found}) > 1  # precondition: the examples decode differently


def test_everything_after_eos_is_dropped():
    """Rows stop at different steps; the finished ones gain nothing after EOS and leave the batch: at step t the
    decoder gets one row for each output that emits more than t tokens (EOS included)."""
    B, L = 12, 8
    dec = scripted(B, L, seed=6)
    rows = counting_rows(dec)
    got = greedy(dec, ctx_for(list(range(B))), starts(B), max_len=L, eos=EOS)
    assert rows == [sum(emitted_length(h) > t for h in got) for t in range(max(map(emitted_length, got)))]
    for ex, h in enumerate(got):  # an independent greedy: read the argmax off the table until EOS
        before, prev, tokens, logp, finished = 0, START, [], 0.0, False
        for t in range(L):
            row = dec.table[ex, t, before, prev]
            tok = int(row.argmax())
            logp += float(row[tok])
            if tok == EOS:
                finished = True
                break
            tokens.append(tok)
            before, prev = prev, tok
        assert EOS not in h.tokens
        assert h.tokens == tokens
        assert h.finished == finished
        assert h.log_prob == pytest.approx(logp, abs=1e-5)  # EOS's own log-prob counted, nothing after it
    lengths = {len(h.tokens) for h in got if h.finished}
    assert len(lengths) >= 2 and not all(h.finished for h in got), "precondition: rows stop at different steps"


# ---- sampling ------------------------------------------------------------------------------------------------


class FixedDecoder:
    """The same next-token distribution at every step for every row."""

    def __init__(self, logits: torch.Tensor):
        self.logp = logits.log_softmax(dim=-1)  # (V,)

    def start(self, ctx: Context) -> torch.Tensor:
        return torch.zeros(ctx.rows)

    def step(self, tokens, state, ctx):
        return self.logp.expand(tokens.size(0), -1).clone(), state


FIXED_LOGITS = torch.tensor([0.3, -0.4, 1.2, 0.0, 0.8, -1.0])  # token 1 is EOS; token 2 is the argmax


def draw(logits: torch.Tensor, n: int, seed: int = 0, **kw) -> torch.Tensor:
    """n single-step draws from the fixed distribution, as token ids (n,)."""
    dec = FixedDecoder(logits)
    hyps = sample(
        dec,
        Context(h0=torch.zeros(1, n, 1)),
        starts(n),
        max_len=1,
        eos=EOS,
        generator=torch.Generator().manual_seed(seed),
        **kw,
    )
    return torch.tensor([h.tokens[0] if h.tokens else EOS for h in hyps])


def chi_square(drawn: torch.Tensor, probs: torch.Tensor) -> float:
    """Pearson's statistic of the counts of drawn ids against probs, over the ids with nonzero probability."""
    counts = torch.bincount(drawn, minlength=probs.numel()).double()
    support = probs > 0
    expected = probs.double()[support] * drawn.numel()
    assert bool((expected >= 5).all()), "precondition: expected counts large enough for the chi-square test"
    return float(((counts[support] - expected) ** 2 / expected).sum())


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sampling_frequencies_match_tempered_softmax(temperature):
    n = 20_000
    drawn = draw(FIXED_LOGITS, n, temperature=temperature)
    target = (FIXED_LOGITS / temperature).softmax(-1)
    critical = CHI2_CRITICAL_P001[FIXED_LOGITS.numel() - 1]
    assert chi_square(drawn, target) < critical
    # power: the same draws are far from the untempered (or, at T = 1, a sharpened) distribution
    other = (FIXED_LOGITS / (1.5 if temperature == 1.0 else 1.0)).softmax(-1)
    assert chi_square(drawn, other) > 3 * critical


def test_sampling_with_forbidden_tokens_matches_the_softmax_of_the_others():
    n, forbidden = 20_000, 2  # the most probable token
    drawn = draw(FIXED_LOGITS, n, forbid=(forbidden,))
    target = FIXED_LOGITS.index_fill(0, torch.tensor([forbidden]), float("-inf")).softmax(-1)
    assert int((drawn == forbidden).sum()) == 0
    critical = CHI2_CRITICAL_P001[FIXED_LOGITS.numel() - 2]
    assert chi_square(drawn, target) < critical


def nucleus(probs: torch.Tensor, p: float) -> set[int]:
    """The smallest set of most probable ids whose mass reaches p."""
    out, mass = set(), 0.0
    for i in probs.argsort(descending=True).tolist():
        out.add(i)
        mass += float(probs[i])
        if mass >= p:
            return out
    return out


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_top_k_and_top_p_stay_inside(temperature):
    n = 20_000
    probs = (FIXED_LOGITS / temperature).softmax(-1)
    top3 = set(probs.topk(3).indices.tolist())
    drawn = draw(FIXED_LOGITS, n, temperature=temperature, top_k=3)
    assert set(drawn.tolist()) == top3  # never outside, and each of the k does occur
    kept = torch.zeros_like(probs)
    kept[list(top3)] = probs[list(top3)]
    assert chi_square(drawn, kept / kept.sum()) < CHI2_CRITICAL_P001[2]

    p = 0.7
    core_ids = nucleus(probs, p)
    assert 1 < len(core_ids) < probs.numel(), "precondition: the nucleus cuts but keeps more than one id"
    drawn = draw(FIXED_LOGITS, n, seed=1, temperature=temperature, top_p=p)
    assert set(drawn.tolist()) == core_ids
    kept = torch.zeros_like(probs)
    kept[list(core_ids)] = probs[list(core_ids)]
    assert chi_square(drawn, kept / kept.sum()) < CHI2_CRITICAL_P001[len(core_ids) - 1]


def test_top_k_one_sampling_is_greedy():
    B, L = 12, 8
    dec = scripted(B, L, seed=7)
    ctx = ctx_for(list(range(B)))
    g = greedy(dec, ctx, starts(B), max_len=L, eos=EOS)
    for kw in (
        {"top_k": 1},
        {"top_k": 1, "temperature": 3.0},
        {"top_p": 1e-6},
        {"top_p": 1e-300},
        {"temperature": 1e-6},
    ):
        s = sample(dec, ctx, starts(B), max_len=L, eos=EOS, generator=torch.Generator().manual_seed(0), **kw)
        assert [h.tokens for h in s] == [h.tokens for h in g]
        assert [h.finished for h in s] == [h.finished for h in g]
        assert [h.log_prob for h in s] == pytest.approx([h.log_prob for h in g], abs=1e-6)


def test_same_seed_same_samples():
    B, L = 12, 8
    dec = scripted(B, L, seed=8)
    ctx = ctx_for(list(range(B)))

    def run(seed: int) -> list[tuple[list[int], bool]]:
        hyps = sample(dec, ctx, starts(B), max_len=L, eos=EOS, generator=torch.Generator().manual_seed(seed))
        return [(h.tokens, h.finished) for h in hyps]

    torch.manual_seed(123)
    first = run(5)
    torch.manual_seed(456)  # the global RNG must not matter
    assert run(5) == first
    assert run(6) != first


@pytest.mark.parametrize("temperature", [1e-6, 0.05, 5.0, 1000.0])  # the ends of its range and between
def test_extreme_temperatures_give_valid_draws(temperature):
    B, L, V = 64, 8, 8
    dec = scripted(B, L, V, seed=9)
    ctx = ctx_for(list(range(B)))
    for kw in ({}, {"top_k": 3}, {"top_p": 0.9}, {"min_len": 3}, {"no_repeat_ngram": 2}):
        hyps = sample(
            dec,
            ctx,
            starts(B),
            max_len=L,
            eos=EOS,
            temperature=temperature,
            generator=torch.Generator().manual_seed(0),
            **kw,
        )
        for ex, h in enumerate(hyps):
            assert all(0 <= t < V and t != EOS for t in h.tokens)
            assert math.isfinite(h.log_prob)
            assert h.log_prob == pytest.approx(dec.rescore(ex, START, h.tokens, h.finished), abs=1e-5)
    drawn = draw(FIXED_LOGITS, 2000, temperature=temperature)
    argmax_share = float((drawn == int(FIXED_LOGITS.argmax())).double().mean())
    if temperature < 1:
        assert argmax_share > 0.99
    else:  # nearly uniform: every id drawn, the argmax far below its untempered share (~0.34)
        assert set(drawn.tolist()) == set(range(FIXED_LOGITS.numel())) and argmax_share < 0.25


@pytest.mark.parametrize(
    "name, value", [("temperature", 1e-45), ("temperature", 1e39), ("length_penalty", 200), ("length_penalty", -1e308)]
)
def test_options_beyond_what_float_arithmetic_holds_are_refused(name, value):
    """Values whose arithmetic would overflow (a length penalty) or underflow (a temperature) name themselves."""
    with pytest.raises(UserError, match=f"{name} = .* is out of range"):
        SearchConfig.of(None, SearchConfig(), method="beam" if name == "length_penalty" else "sample", **{name: value})


@pytest.mark.parametrize("kw", [{"temperature": 2.0}, {"temperature": 0.7, "top_k": 4}, {"top_p": 0.8}])
def test_sample_log_prob_is_the_untempered_model_score(kw):
    B, L = 16, 8
    dec = scripted(B, L, seed=10)
    hyps = sample(
        dec, ctx_for(list(range(B))), starts(B), max_len=L, eos=EOS, generator=torch.Generator().manual_seed(0), **kw
    )
    assert {h.finished for h in hyps} == {True, False}
    for ex, h in enumerate(hyps):
        assert h.log_prob == pytest.approx(dec.rescore(ex, START, h.tokens, h.finished), abs=1e-5)
        assert h.score == h.log_prob


# ---- log-prob processors --------------------------------------------------------------------------------


def repeating_decoder(n: int, max_len: int, vocab: int, *, bonus: float, seed: int) -> ScriptedDecoder:
    """A scripted decoder that loves to repeat its previous token and rarely ends."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, max_len, vocab, vocab, vocab, generator=g)
    logits += bonus * torch.eye(vocab).view(1, 1, 1, vocab, vocab)  # previous token -> the same token again
    logits[..., EOS] -= 4.0
    return ScriptedDecoder(n, max_len, vocab, seed=seed, logits=logits)


def cycling_decoder(n: int, max_len: int, vocab: int, *, seed: int) -> ScriptedDecoder:
    """A scripted decoder that loves the cycle 3 -> 4 -> 5 -> 3 (so bigrams repeat) and rarely ends."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, max_len, vocab, vocab, vocab, generator=g) * 0.5
    for a, b in [(START, 3), (3, 4), (4, 5), (5, 3)]:
        logits[:, :, :, a, b] += 4.0
    logits[..., EOS] -= 4.0
    return ScriptedDecoder(n, max_len, vocab, seed=seed, logits=logits)


def repeated_bigrams(tokens: list[int]) -> int:
    bigrams = list(zip(tokens, tokens[1:]))
    return len(bigrams) - len(set(bigrams))


@pytest.mark.parametrize("method", ["greedy", "sample", "beam"])
def test_no_repeat_ngram_blocks_repeated_bigrams(method):
    B, L, V = 8, 10, 9
    dec = cycling_decoder(B, L, V, seed=11)
    ctx = ctx_for(list(range(B)))

    def run(n: int) -> list[Hypothesis]:
        if method == "beam":
            return [
                h
                for nbest in beam_search(
                    dec, ctx, starts(B), max_len=L, eos=EOS, beam_size=3, n_best=3, no_repeat_ngram=n
                )
                for h in nbest
            ]
        if method == "sample":
            return sample(
                dec, ctx, starts(B), max_len=L, eos=EOS, no_repeat_ngram=n, generator=torch.Generator().manual_seed(0)
            )
        return greedy(dec, ctx, starts(B), max_len=L, eos=EOS, no_repeat_ngram=n)

    assert all(repeated_bigrams(h.tokens) > 0 for h in run(0)), "precondition: the model repeats bigrams"
    blocked = run(2)
    for h in blocked:
        assert repeated_bigrams([START] + h.tokens) == 0
    assert sum(len(h.tokens) for h in blocked) > 4 * len(blocked), "precondition: outputs long enough to repeat"


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_repetition_penalty_reduces_repeats(method):
    B, L, V = 16, 10, 12
    dec = repeating_decoder(B, L, V, bonus=2.0, seed=12)
    ctx = ctx_for(list(range(B)))

    def repeats(penalty: float) -> int:
        if method == "beam":
            hyps = [
                nbest[0]
                for nbest in beam_search(
                    dec, ctx, starts(B), max_len=L, eos=EOS, beam_size=3, repetition_penalty=penalty
                )
            ]
        else:
            hyps = greedy(dec, ctx, starts(B), max_len=L, eos=EOS, repetition_penalty=penalty)
        return sum(len(h.tokens) - len(set(h.tokens)) for h in hyps)

    plain = repeats(1.0)
    assert plain > B * L // 2, "precondition: without a penalty the model mostly repeats"
    assert repeats(1.5) < plain
    assert repeats(3.0) < plain / 2


# ---- dispatch, streaming, argument checks -------------------------------------------------------------------


def test_decode_dispatches():
    B, L = 8, 8
    dec = scripted(B, L, seed=13)
    ctx = ctx_for(list(range(B)))

    def same(a: list[Hypothesis], b: list[Hypothesis]) -> bool:
        return [(h.tokens, h.finished, round(h.score, 5)) for h in a] == [
            (h.tokens, h.finished, round(h.score, 5)) for h in b
        ]

    g = greedy(dec, ctx, starts(B), max_len=L, eos=EOS)
    assert same(decode(dec, ctx, starts(B), method="greedy", max_len=L, eos=EOS), g)
    s = sample(dec, ctx, starts(B), max_len=L, eos=EOS, temperature=1.5, generator=torch.Generator().manual_seed(3))
    assert same(
        decode(
            dec,
            ctx,
            starts(B),
            method="sample",
            max_len=L,
            eos=EOS,
            temperature=1.5,
            generator=torch.Generator().manual_seed(3),
        ),
        s,
    )
    b = [nbest[0] for nbest in beam_search(dec, ctx, starts(B), max_len=L, eos=EOS, beam_size=4, length_penalty=1.0)]
    assert same(decode(dec, ctx, starts(B), method="beam", max_len=L, eos=EOS, beam_size=4, length_penalty=1.0), b)
    assert not same(g, s) and not same(g, b), "precondition: the three methods give different outputs here"
    with pytest.raises(UserError, match="nucleus"):
        decode(dec, ctx, starts(B), method="nucleus", max_len=L, eos=EOS)
    with pytest.raises(
        UserError, match="^temperature is an option of method sample; it does not go with method greedy$"
    ):
        decode(dec, ctx, starts(B), method="greedy", max_len=L, eos=EOS, temperature=0.5)  # ignored in silence, else
    assert same(
        decode(dec, ctx, starts(B), SearchConfig(method="beam", beam_size=4, length_penalty=1.0, max_len=L), eos=EOS), b
    ), "a SearchConfig takes the same path"


def test_stream_yields_greedy_tokens():
    B, L = 8, 8
    dec = scripted(B, L, seed=14)
    g = greedy(dec, ctx_for(list(range(B))), starts(B), max_len=L, eos=EOS)
    assert len({len(h.tokens) for h in g}) >= 3, "precondition: rows of different lengths"
    for ex in range(B):
        assert list(stream(dec, ctx_for([ex]), START, max_len=L, eos=EOS, method="greedy")) == g[ex].tokens
        s = sample(dec, ctx_for([ex]), starts(1), max_len=L, eos=EOS, generator=torch.Generator().manual_seed(ex))
        assert (
            list(
                stream(
                    dec,
                    ctx_for([ex]),
                    START,
                    max_len=L,
                    eos=EOS,
                    method="sample",
                    generator=torch.Generator().manual_seed(ex),
                )
            )
            == s[0].tokens
        )
    with pytest.raises(UserError, match="beam"):
        list(stream(dec, ctx_for([0]), START, max_len=L, eos=EOS, method="beam"))


BAD_ARGUMENTS = [  # (call, the argument that is wrong, its value as the message writes it)
    (lambda d, c, s: sample(d, c, s, max_len=4, eos=EOS, temperature=0.0), "temperature", "0"),
    (lambda d, c, s: sample(d, c, s, max_len=4, eos=EOS, temperature=-0.5), "temperature", "-0.5"),
    (lambda d, c, s: sample(d, c, s, max_len=4, eos=EOS, top_p=0.0), "top_p", "0"),
    (lambda d, c, s: sample(d, c, s, max_len=4, eos=EOS, top_p=1.5), "top_p", "1.5"),
    (lambda d, c, s: sample(d, c, s, max_len=4, eos=EOS, top_p=-0.2), "top_p", "-0.2"),
    (lambda d, c, s: beam_search(d, c, s, max_len=4, eos=EOS, beam_size=0), "beam_size", "0"),
    (lambda d, c, s: beam_search(d, c, s, max_len=4, eos=EOS, beam_size=-3), "beam_size", "-3"),
    (lambda d, c, s: beam_search(d, c, s, max_len=4, eos=EOS, beam_size=2, n_best=3), "n_best", "3"),
    (lambda d, c, s: beam_search(d, c, s, max_len=0, eos=EOS), "max_len", "0"),
    (lambda d, c, s: greedy(d, c, s, max_len=0, eos=EOS), "max_len", "0"),
    (lambda d, c, s: sample(d, c, s, max_len=-2, eos=EOS), "max_len", "-2"),
    (lambda d, c, s: decode(d, c, s, method="sample", max_len=4, eos=EOS, temperature=0.0), "temperature", "0"),
    (lambda d, c, s: list(stream(d, c, START, max_len=4, eos=EOS, top_p=2.0)), "top_p", "2"),
]


@pytest.mark.parametrize("method", ["greedy", "sample", "beam"])
def test_forbidding_eos_is_refused(method):
    with pytest.raises(UserError, match="forbid holds the EOS token 1"):
        decode(scripted(2, 4, seed=15), ctx_for([0]), starts(1), method=method, max_len=4, eos=EOS, forbid=(0, EOS))


@pytest.mark.parametrize("method", ["greedy", "sample", "beam", "stream"])
@pytest.mark.parametrize(
    "forbid, eos, bad",
    [
        ((0, 99), EOS, "forbid holds token id 99"),
        ((-1,), EOS, "forbid holds token id -1"),
        ((), 42, "eos holds token id 42"),
    ],
)
def test_token_ids_outside_the_vocabulary_are_named(method, forbid, eos, bad):
    dec = scripted(2, 4, seed=15)
    with pytest.raises(UserError, match=f"{bad}, outside the decoder's vocabulary \\(0..{dec.vocab - 1}\\)"):
        if method == "stream":
            list(stream(dec, ctx_for([0]), START, max_len=4, eos=eos, forbid=forbid))
        else:
            decode(dec, ctx_for([0]), starts(1), method=method, max_len=4, eos=eos, forbid=forbid)


@pytest.mark.parametrize(
    "call, name, value", BAD_ARGUMENTS, ids=[f"{name}={value}-{i}" for i, (_, name, value) in enumerate(BAD_ARGUMENTS)]
)
def test_bad_arguments_raise_user_error(call, name, value):
    dec = scripted(2, 4, seed=15)
    with pytest.raises(UserError) as err:
        call(dec, ctx_for([0]), starts(1))  # one row, so that stream can take it too
    assert isinstance(err.value, ValueError)
    assert f"{name} = {value} " in str(err.value)  # names the argument and the value given


@pytest.mark.parametrize("method", ["greedy", "sample", "beam"])
def test_each_row_stops_at_its_own_max_len_as_it_would_alone(method):
    """A row's max_len (one per row) cuts it where it would be cut alone; what shares its batch changes nothing
    (sampling: the same limits; its draws depend on the batch's shape)."""
    B, L = 6, 9
    dec = scripted(B, L, seed=21)
    limits = torch.tensor([2, 9, 4, 9, 1, 6])
    options = {"sample": dict(temperature=1.3), "beam": dict(beam_size=3, n_best=3)}.get(method, {})
    search = {"greedy": greedy, "sample": sample, "beam": beam_search}[method]

    def run(ctx, start, max_len):
        found = search(dec, ctx, start, max_len=max_len, eos=EOS, **options)
        return [nbest if method == "beam" else [nbest] for nbest in found]

    def shown(hyps):
        return [(h.tokens, h.finished, round(h.score, 5)) for h in hyps]

    together = run(ctx_for(list(range(B))), starts(B), limits)
    at_limit = sum(not h.finished and len(h.tokens) == int(limits[ex]) for ex in range(B) for h in together[ex])
    assert at_limit > 0, "precondition: some rows end at their own limit"
    for ex in range(B):
        assert all(len(h.tokens) <= int(limits[ex]) for h in together[ex])
        if method != "sample":
            assert shown(run(ctx_for([ex]), starts(1), int(limits[ex]))[0]) == shown(together[ex]), ex
    with pytest.raises(TypeError, match="one integer per row"):
        search(dec, ctx_for([0, 1]), starts(2), max_len=torch.tensor([2.0, 3.0]), eos=EOS)
    with pytest.raises(UserError, match="max_len = 0"):
        search(dec, ctx_for([0, 1]), starts(2), max_len=torch.tensor([0, 3]), eos=EOS)
