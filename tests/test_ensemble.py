"""`core.Ensemble`: several decoders searched as one, with the mean of their next-token probabilities."""

import math

import pytest
import torch

from core import Context, Ensemble, RNNDecoder, beam_search, greedy

EOS, START, V = 1, 2, 12


def decoder(cell: str, memory_dim: int, seed: int) -> RNNDecoder:
    torch.manual_seed(seed)
    d = RNNDecoder(V, 8, 16, cell=cell, attention="luong", memory_dim=memory_dim).eval()
    with torch.no_grad():  # sharper distributions: outputs of many lengths, not all stopping at once
        d.output.weight.mul_(3)
    return d


def context(memory_dim: int, lengths: list[int], seed: int) -> Context:
    g = torch.Generator().manual_seed(seed)
    S = max(lengths)
    mask = torch.arange(S).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    memory = torch.randn(len(lengths), S, memory_dim, generator=g) * mask.unsqueeze(2)
    return Context(torch.randn(1, len(lengths), 16, generator=g), None, memory, mask)


LENGTHS = [5, 2, 4, 6, 3, 5]


def test_ensemble_of_copies_searches_like_the_decoder_alone():
    d, ctx = decoder("gru", 12, seed=0), context(12, LENGTHS, seed=1)
    starts = torch.full((len(LENGTHS),), START)
    alone_g = greedy(d, ctx, starts, max_len=8, eos=EOS)
    alone_b = beam_search(d, ctx, starts, max_len=8, eos=EOS, beam_size=4, n_best=3, length_penalty=1.0)
    assert max(len(h.tokens) for h in alone_g) >= 3, "precondition: some outputs run long"
    for members in ([d], [d, d]):
        ens = Ensemble(members)
        joined = ens.join([ctx] * len(members))
        got_g = greedy(ens, joined, starts, max_len=8, eos=EOS)
        got_b = beam_search(ens, joined, starts, max_len=8, eos=EOS, beam_size=4, n_best=3, length_penalty=1.0)
        assert [h.tokens for h in got_g] == [h.tokens for h in alone_g]
        assert [[h.tokens for h in n] for n in got_b] == [[h.tokens for h in n] for n in alone_b]
        assert [h.log_prob for n in got_b for h in n] == pytest.approx(
            [h.log_prob for n in alone_b for h in n], abs=1e-5
        )
        assert torch.allclose(got_b[0][0].attention, alone_b[0][0].attention, atol=1e-6)


def rescore(members, contexts, ex: int, tokens: list[int], finished: bool) -> float:
    """Teacher-forced log-probability under the mean of the members' distributions, for example `ex`."""
    target = tokens + ([EOS] if finished else [])
    inputs = torch.tensor([[START] + target[:-1]])
    rows = torch.tensor([ex])
    member_logp = [d(inputs, c.index_select(rows)).log_softmax(dim=-1)[0] for d, c in zip(members, contexts)]
    mean = torch.stack(member_logp).logsumexp(dim=0) - math.log(len(members))  # (T, V)
    return float(mean[torch.arange(len(target)), torch.tensor(target)].sum())


@torch.no_grad()
def test_beam_over_different_members_scores_the_mean_probability():
    members = [decoder("gru", 12, seed=0), decoder("lstm", 20, seed=4)]
    contexts = [context(12, LENGTHS, seed=1), context(20, LENGTHS, seed=2)]
    ens = Ensemble(members)
    result = beam_search(
        ens,
        ens.join(contexts),
        torch.full((len(LENGTHS),), START),
        max_len=7,
        eos=EOS,
        min_len=2,
        beam_size=4,
        n_best=4,
        length_penalty=0.0,
    )
    hyps = [(ex, h) for ex, nbest in enumerate(result) for h in nbest]
    assert {h.finished for _, h in hyps} == {True, False} and len({len(h.tokens) for _, h in hyps}) >= 3
    for ex, h in hyps:
        assert h.log_prob == pytest.approx(rescore(members, contexts, ex, h.tokens, h.finished), abs=1e-4)
        weights = h.attention  # the members' mean: a distribution over the example's real positions
        assert torch.allclose(weights.sum(dim=1), torch.ones(len(h.tokens)), atol=1e-5)
        assert torch.count_nonzero(weights[:, LENGTHS[ex] :]) == 0
    # the ensemble is not just one of its members
    alone = [
        beam_search(d, c, torch.full((len(LENGTHS),), START), max_len=7, eos=EOS, min_len=2, beam_size=4)
        for d, c in zip(members, contexts)
    ]
    assert all([[h.log_prob for h in n] for n in a] != [[h.log_prob for h in n] for n in result] for a in alone)


def test_ensemble_beams_share_memory_unless_a_member_reads_it_row_by_row():
    """Beam search hands an ensemble of RNNDecoders each sentence's memory once (the members' keys then have
    one row per sentence), and the result equals the search where a member wants the memory repeated per beam."""
    members = [decoder("gru", 12, seed=0), decoder("lstm", 12, seed=1)]
    ens, ctx = Ensemble(members), context(12, LENGTHS, seed=1)
    starts = torch.full((len(LENGTHS),), START)
    key_rows = []
    original = members[0].start
    members[0].start = lambda c: key_rows.append(c.keys.size(0)) or original(c)
    shared = beam_search(ens, ens.join([ctx, ctx]), starts, max_len=8, eos=EOS, beam_size=3, n_best=3)
    prepare = members[1].prepare  # one member that needs the memory repeated: every member gets it so
    members[1].prepare = lambda c: prepare(Context(c.h0, c.c0, c.per_sequence(c.memory), c.per_sequence(c.memory_mask)))
    repeated = beam_search(ens, ens.join([ctx, ctx]), starts, max_len=8, eos=EOS, beam_size=3, n_best=3)
    assert key_rows == [len(LENGTHS), 3 * len(LENGTHS)]
    assert [[h.tokens for h in n] for n in shared] == [[h.tokens for h in n] for n in repeated]
    assert len({tuple(h.tokens) for n in shared for h in n}) > 6  # precondition: beams differ


def test_join_rejects_contexts_that_do_not_fit():
    ens = Ensemble([decoder("gru", 12, seed=0), decoder("gru", 12, seed=1)])
    with pytest.raises(ValueError, match="same batch"):
        ens.join([context(12, LENGTHS, seed=1), context(12, LENGTHS[:2], seed=1)])
    with pytest.raises(ValueError, match="masks differ"):
        ens.join([context(12, LENGTHS, seed=1), context(12, [5, 3, 4, 6, 3, 5], seed=1)])
    with pytest.raises(ValueError, match="2 decoders but 1"):
        ens.join([context(12, LENGTHS, seed=1)])
    half = context(12, LENGTHS, seed=1)
    half = Context(half.h0.bfloat16(), None, half.memory.bfloat16(), half.memory_mask)
    with pytest.raises(ValueError, match="one dtype, got torch.float32, torch.bfloat16"):
        ens.join([context(12, LENGTHS, seed=1), half])
    with pytest.raises(ValueError, match="call Ensemble.join"):  # no context was joined
        ens.start(context(12, LENGTHS, seed=1))
