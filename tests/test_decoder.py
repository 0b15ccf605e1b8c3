"""RNNDecoder: incremental decoding = teacher forcing, padding and masks, gradients, tied embeddings, state layout."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from core import PAD, Context, DecoderState, RNNDecoder, speedups
from core.decoder import drop_words

V, E, H, M = 13, 8, 12, 6  # vocabulary, embedding, hidden and memory sizes: tiny, all different


def make_decoder(cell: str = "gru", layers: int = 1, attention: str | None = None, **kw) -> RNNDecoder:
    return RNNDecoder(
        V,
        kw.pop("emb_dim", E),
        kw.pop("hidden_dim", H),
        layers,
        cell=cell,
        attention=attention,
        memory_dim=M if attention else None,
        **kw,
    ).eval()


def make_context(dec: RNNDecoder, lengths: list[int], *, pad_to: int | None = None) -> Context:
    """Random h0 (and c0 for LSTM) and, for attention, a memory (B, S, M) whose padding holds garbage."""
    B, S = len(lengths), pad_to or max(lengths)
    h0 = torch.randn(dec.num_layers, B, dec.hidden_dim)
    c0 = torch.randn(dec.num_layers, B, dec.hidden_dim) if dec.cell == "lstm" else None
    if dec.attention is None:
        return Context(h0=h0, c0=c0)
    memory = torch.randn(B, S, M) * 3
    mask = torch.arange(S).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)  # (B, S)
    return Context(h0=h0, c0=c0, memory=memory, memory_mask=mask)


def random_tokens(B: int, T: int) -> torch.Tensor:
    return torch.randint(4, V, (B, T))  # no specials, so PAD's zero embedding never hides a bug


def index_state(state: DecoderState, rows: torch.Tensor) -> DecoderState:
    return DecoderState(*(None if s is None else s[rows] for s in state))


CONFIGS = [
    (cell, layers, attention, True)
    for cell, layers, attention in itertools.product(["gru", "lstm"], [1, 2], [None, "bahdanau", "luong"])
]
CONFIGS += [("gru", 2, "bahdanau", False), ("lstm", 1, "luong", False)]  # attention without input feeding
CONFIG_IDS = [f"{c}-{n}layer-{a or 'noattn'}{'' if f else '-nofeed'}" for c, n, a, f in CONFIGS]


@pytest.mark.parametrize("cell, layers, attention, feed", CONFIGS, ids=CONFIG_IDS)
def test_step_by_step_equals_teacher_forcing(cell, layers, attention, feed):
    dec = make_decoder(cell, layers, attention, input_feeding=feed, dropout=0.3)  # eval: dropout is off
    ctx = make_context(dec, [4, 2, 5])
    tokens = random_tokens(3, 6)
    with torch.no_grad():
        expected = dec(tokens, ctx).log_softmax(-1)  # (B, T, V)
        _, _, expected_attn = dec.unroll(tokens, ctx)
        state, steps, attns = dec.start(ctx), [], []
        for t in range(tokens.size(1)):
            logp, state = dec.step(tokens[:, t], state, ctx)  # (B, V)
            steps.append(logp)
            attns.append(state.attn)
    got = torch.stack(steps, dim=1)  # (B, T, V)
    assert got.shape == (3, 6, V)
    assert torch.allclose(got.exp().sum(-1), torch.ones(3, 6), atol=1e-5)
    assert torch.allclose(got, expected, atol=1e-5)
    if attention:
        assert torch.allclose(torch.stack(attns, dim=1), expected_attn, atol=1e-6)
    else:
        assert expected_attn is None and all(a is None for a in attns)


@pytest.mark.parametrize("cell, attention", [("gru", "bahdanau"), ("lstm", "luong"), ("gru", "luong")])
def test_padded_batch_equals_each_example_alone(cell, attention):
    dec = make_decoder(cell, 2, attention)
    src_lengths, tgt_lengths = [5, 2, 7, 3], [6, 3, 4, 1]
    B, T = len(src_lengths), max(tgt_lengths)
    ctx = make_context(dec, src_lengths)
    tokens = random_tokens(B, T)
    tokens[torch.arange(T).unsqueeze(0) >= torch.tensor(tgt_lengths).unsqueeze(1)] = PAD  # padded targets
    with torch.no_grad():
        logits, _, attn = dec.unroll(tokens, ctx)  # (B, T, V), _, (B, T, S)
        # the same batch with more (garbage) padding on the memory changes nothing
        S2 = max(src_lengths) + 3
        memory2 = torch.cat([ctx.memory, torch.randn(B, 3, M) * 3], dim=1)
        mask2 = torch.arange(S2).unsqueeze(0) < torch.tensor(src_lengths).unsqueeze(1)
        logits2, _, attn2 = dec.unroll(tokens, Context(ctx.h0, ctx.c0, memory2, mask2))
        unmasked = dec(tokens, Context(ctx.h0, ctx.c0, ctx.memory, None))
    assert not torch.allclose(unmasked, logits, atol=1e-3), "precondition: the padding would matter unmasked"
    assert torch.allclose(logits2, logits, atol=1e-5)
    assert torch.equal(attn2[:, :, max(src_lengths) :], torch.zeros(B, T, 3))

    real = torch.arange(max(src_lengths)).unsqueeze(0) < torch.tensor(src_lengths).unsqueeze(1)  # (B, S)
    assert torch.allclose(attn.sum(-1), torch.ones(B, T), atol=1e-5)  # each row a distribution over the memory
    assert torch.all(attn.masked_select(~real.unsqueeze(1).expand_as(attn)) == 0)  # exactly 0 on padding
    assert torch.all(attn.masked_select(real.unsqueeze(1).expand_as(attn)) > 0)

    for b, (n, t) in enumerate(zip(src_lengths, tgt_lengths)):
        alone = Context(
            ctx.h0[:, b : b + 1], None if ctx.c0 is None else ctx.c0[:, b : b + 1], ctx.memory[b : b + 1, :n], None
        )  # no padding, no mask
        with torch.no_grad():
            logits_b, _, attn_b = dec.unroll(tokens[b : b + 1, :t], alone)
        assert torch.allclose(logits[b : b + 1, :t], logits_b, atol=1e-5)
        assert torch.allclose(attn[b : b + 1, :t, :n], attn_b, atol=1e-6)


@pytest.mark.parametrize("attention", [None, "bahdanau", "luong"])
@pytest.mark.parametrize("tie, emb_dim", [(False, E), (True, E), (True, H)], ids=["untied", "tied-proj", "tied"])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_every_parameter_gets_a_gradient(cell, tie, emb_dim, attention):
    dec = make_decoder(cell, 2, attention, emb_dim=emb_dim, tie_embeddings=tie).train()
    ctx = make_context(dec, [4, 2, 5])
    tokens = random_tokens(3, 6)
    logits = dec(tokens[:, :-1], ctx)  # (B, T-1, V)
    torch.nn.functional.cross_entropy(logits.reshape(-1, V), tokens[:, 1:].reshape(-1)).backward()
    names = [name for name, _ in dec.named_parameters()]
    assert ("pre_output.weight" in names) == (tie and emb_dim != H)
    assert any(name.startswith("attention.") for name in names) == (attention is not None)
    for name, p in dec.named_parameters():
        assert p.grad is not None, f"{name} is not used"
        assert p.grad.abs().sum() > 0, f"{name} gets a zero gradient"
    if attention is not None:  # input feeding: the columns reading the last attentional vector learn too
        assert dec.rnn.weight_ih_l0.shape[1] == emb_dim + H
        assert dec.rnn.weight_ih_l0.grad[:, emb_dim:].abs().sum() > 0, "the fed-back attentional vector is always 0"


@pytest.mark.parametrize("emb_dim", [E, H], ids=["hidden!=emb", "hidden==emb"])
def test_tie_embeddings_shares_the_weight(emb_dim):
    tied = make_decoder("gru", 1, "luong", emb_dim=emb_dim, tie_embeddings=True)
    untied = make_decoder("gru", 1, "luong", emb_dim=emb_dim, tie_embeddings=False)
    assert tied.output.weight is tied.embedding.weight
    assert tied.output.weight.data_ptr() == tied.embedding.weight.data_ptr()
    assert untied.output.weight.data_ptr() != untied.embedding.weight.data_ptr()
    n_tied = sum(p.numel() for p in tied.parameters())
    n_untied = sum(p.numel() for p in untied.parameters())
    projection = (H * emb_dim + emb_dim) if emb_dim != H else 0
    assert n_tied == n_untied - V * H + projection  # untied output layer: V x H weights, now gone
    assert len(tied.state_dict()["output.weight"]) == V

    ctx = make_context(tied, [3, 5])
    tokens = random_tokens(2, 4)
    with torch.no_grad():
        before = tied(tokens, ctx)
        assert before.shape == (2, 4, V)
        tied.embedding.weight[7] += 1.0  # one row, changed through the embedding ...
        after = tied(torch.full((2, 1), 4), ctx)[:, 0]  # ... moves the output logit of token 7 (input is not 7)
        tied.embedding.weight[7] -= 1.0
        restored = tied(torch.full((2, 1), 4), ctx)[:, 0]
    others = [i for i in range(V) if i != 7]
    assert torch.allclose(after[:, others], restored[:, others], atol=1e-6)
    assert not torch.allclose(after[:, 7], restored[:, 7], atol=1e-3)


@pytest.mark.parametrize("cell, attention", [("gru", None), ("lstm", None), ("gru", "bahdanau"), ("lstm", "luong")])
def test_state_has_batch_first_and_reorders_by_indexing(cell, attention):
    L, B, S = 2, 5, 7
    dec = make_decoder(cell, L, attention)
    ctx = dec.prepare(make_context(dec, [7, 3, 5, 1, 6]))
    tokens = random_tokens(B, 3)
    with torch.no_grad():
        state = dec.start(ctx)
        for t in range(2):
            _, state = dec.step(tokens[:, t], state, ctx)
    A = dec.attention.key_proj.out_features if attention == "bahdanau" else M
    expected = {
        "h": (B, L, H),
        "c": (B, L, H) if cell == "lstm" else None,
        "feed": (B, H) if attention else None,
        "attn": (B, S) if attention else None,
    }
    assert {k: None if v is None else tuple(v.shape) for k, v in state._asdict().items()} == expected
    assert (ctx.keys is None) == (attention is None) and (attention is None or ctx.keys.shape == (B, S, A))

    perm = torch.tensor([3, 0, 4, 2, 1])
    with torch.no_grad():
        logp, after = dec.step(tokens[:, 2], state, ctx)
        logp_p, after_p = dec.step(tokens[perm, 2], index_state(state, perm), ctx.index_select(perm))
    assert not torch.allclose(logp, logp[perm]), "precondition: rows differ, so a wrong order shows"
    assert torch.allclose(logp_p, logp[perm], atol=1e-6)
    for a, b in zip(after_p, index_state(after, perm)):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("attention", [None, "luong"])
def test_lstm_starts_from_the_context_cell_state(attention):
    dec = make_decoder("lstm", 2, attention)
    ctx = make_context(dec, [3, 4])
    tokens = random_tokens(2, 3)
    zero_c = Context(ctx.h0, None, ctx.memory, ctx.memory_mask)
    with torch.no_grad():
        assert torch.equal(dec.start(ctx).c, ctx.c0.transpose(0, 1))
        assert torch.equal(dec.start(zero_c).c, torch.zeros(2, 2, H))
        assert not torch.allclose(dec(tokens, ctx), dec(tokens, zero_c), atol=1e-4)


def test_bad_construction_raises_clear_errors():
    with pytest.raises(ValueError, match="memory_dim"):
        RNNDecoder(V, E, H, 1, attention="bahdanau")
    with pytest.raises(ValueError, match="'rnn'") as err:
        RNNDecoder(V, E, H, 1, cell="rnn")
    assert "gru" in str(err.value) and "lstm" in str(err.value)
    with pytest.raises(ValueError, match="'dot'"):
        RNNDecoder(V, E, H, 1, attention="dot", memory_dim=M)


@pytest.mark.parametrize("h0_shape", [(3, H), (2, 3, H, 1)])
def test_a_context_refuses_tensors_of_the_wrong_number_of_dimensions(h0_shape):
    with pytest.raises(ValueError, match=rf"Context.h0 must have 3 dimensions, got shape {re.escape(str(h0_shape))}"):
        Context(h0=torch.zeros(h0_shape))
    with pytest.raises(TypeError, match="Context.memory must be a tensor, got list"):
        Context(h0=torch.zeros(1, 3, H), memory=[[0.0]])


@pytest.mark.parametrize("h0_shape", [(1, 3, H), (2, 3, H + 1)])
def test_context_with_wrong_h0_shape_names_the_expected_shape(h0_shape):
    dec = make_decoder("gru", 2)
    with pytest.raises(ValueError) as err:
        dec.start(Context(h0=torch.zeros(h0_shape)))
    assert f"(2, B, {H})" in str(err.value)
    assert str(tuple(h0_shape)) in str(err.value)
    with pytest.raises(ValueError) as err:
        dec(torch.zeros(3, 2, dtype=torch.long), Context(h0=torch.zeros(h0_shape)))
    assert f"(2, B, {H})" in str(err.value)


def test_attention_decoder_needs_a_memory():
    dec = make_decoder("gru", 1, "bahdanau")
    with pytest.raises(ValueError, match="memory"):
        dec.start(Context(h0=torch.zeros(1, 2, H)))


@pytest.mark.parametrize(
    "cell, layers, attention, tie", [("gru", 1, "bahdanau", True), ("lstm", 2, "luong", False), ("gru", 2, None, False)]
)
def test_packed_inference_path_equals_the_autograd_path_and_follows_weight_updates(
    monkeypatch, cell, layers, attention, tie
):
    """Without autograd, search steps run the RNN cell written out and every linear map through core.speedups
    (oneDNN, weights packed once per weight version; forced here for tiny weights too). Step by step they must
    give the logits of the plain autograd path (nn.GRU/LSTM over the sequence, nn.Linear), also after an
    optimizer step has changed the weights in place."""
    monkeypatch.setattr(speedups, "MIN_WEIGHT_SIZE", 0)
    dec = make_decoder(cell, layers, attention, tie_embeddings=tie)
    ctx, tokens = make_context(dec, [5, 3]), random_tokens(2, 4)
    optimizer = torch.optim.SGD(dec.parameters(), lr=0.5)
    for _ in range(2):
        with torch.no_grad():
            state, steps = dec.start(ctx), []
            for t in range(tokens.size(1)):
                logp, state = dec.step(tokens[:, t], state, ctx)
                steps.append(logp)
        plain = dec(tokens, ctx)  # autograd on: the plain path
        assert torch.allclose(torch.stack(steps, dim=1), plain.log_softmax(-1), atol=1e-5)
        plain.sum().backward()
        optimizer.step()  # in-place update: the packed copies must be remade
    assert speedups._packed.get(dec.output) or not speedups.AVAILABLE  # the packed path did run


def stepwise_log_probs(dec: RNNDecoder, tokens: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Search's view: one step at a time without autograd (the speed path in eval mode), log-probs (B, T, V)."""
    with torch.no_grad():
        state, steps = dec.start(ctx), []
        for t in range(tokens.size(1)):
            logp, state = dec.step(tokens[:, t], state, ctx)
            steps.append(logp)
    return torch.stack(steps, dim=1)


needs_onednn = pytest.mark.skipif(not speedups.AVAILABLE, reason="this torch has no oneDNN: no packed path to test")


@needs_onednn
@pytest.mark.parametrize("cell, layers, attention", [("lstm", 2, "luong"), ("gru", 1, "bahdanau")])
def test_packed_weights_follow_a_fused_optimizer_step_without_a_mode_switch(monkeypatch, cell, layers, attention):
    """A fused optimizer step (which bumps no version counter) must invalidate the packed copies by itself."""
    monkeypatch.setattr(speedups, "MIN_WEIGHT_SIZE", 0)
    dec = make_decoder(cell, layers, attention)
    ctx, tokens = make_context(dec, [5, 3]), random_tokens(2, 4)
    before = stepwise_log_probs(dec, tokens, ctx)  # packs the weights
    assert speedups._packed.get(dec.output) and "input_table" in speedups._packed.get(dec.rnn, {})
    optimizer = torch.optim.AdamW(dec.parameters(), lr=0.1, fused=True)
    dec(tokens, ctx).log_softmax(-1).sum().backward()
    versions = [p._version for p in dec.parameters()]
    optimizer.step()  # no train()/eval() around it
    assert [p._version for p in dec.parameters()] == versions  # precondition: fused steps bump no version
    after = stepwise_log_probs(dec, tokens, ctx)
    plain = dec(tokens, ctx).log_softmax(-1)  # autograd on: the plain path, with the new weights
    assert not torch.allclose(before, plain, atol=1e-3)  # the step did change the model
    assert torch.allclose(after, plain, atol=1e-5)


@needs_onednn
def test_packed_weights_follow_a_write_through_data_after_a_mode_switch(monkeypatch):
    """A write through .data (no version bump, no optimizer) is seen once the decoder switches train -> eval."""
    monkeypatch.setattr(speedups, "MIN_WEIGHT_SIZE", 0)
    dec = make_decoder("lstm", 2, "luong")
    ctx, tokens = make_context(dec, [5, 3]), random_tokens(2, 4)
    before = stepwise_log_probs(dec, tokens, ctx)  # packs the weights and makes the input table
    assert speedups._packed.get(dec.output) and "input_table" in speedups._packed.get(dec.rnn, {})
    for p in dec.parameters():
        p.data.add_(torch.randn_like(p) * 0.5)  # bumps no version counter
    dec.train()
    dec.eval()
    after = stepwise_log_probs(dec, tokens, ctx)
    with torch.enable_grad():
        plain = dec(tokens, ctx).log_softmax(-1)
    assert not torch.allclose(before, plain, atol=1e-3)  # the write did change the model
    assert torch.allclose(after, plain, atol=1e-5)


@needs_onednn
def test_eval_on_a_decoder_in_eval_mode_keeps_its_packed_weights(monkeypatch):
    """Every search calls eval(): only a switch of mode drops the packed copies, so searching again reuses them
    (repacking took ~45 ms of a one-sentence search's ~90)."""
    monkeypatch.setattr(speedups, "MIN_WEIGHT_SIZE", 0)
    dec = make_decoder("gru", 1, "bahdanau")
    ctx, tokens = make_context(dec, [5, 3]), random_tokens(2, 4)
    stepwise_log_probs(dec, tokens, ctx)
    packed = speedups._packed[dec.output]["weight"][1]
    dec.eval()
    stepwise_log_probs(dec, tokens, ctx)
    assert speedups._packed[dec.output]["weight"][1] is packed
    dec.train()
    assert dec.output not in speedups._packed


@needs_onednn
def test_input_gate_table_follows_embedding_updates(monkeypatch):
    """The per-token table of input gates is remade when only the embedding changes (in place, or by a fused
    optimizer step on the embedding alone)."""
    monkeypatch.setattr(speedups, "MIN_WEIGHT_SIZE", 0)
    dec = make_decoder("gru", 1, "bahdanau")
    ctx, tokens = make_context(dec, [5, 3]), random_tokens(2, 4)
    rnn = dec.rnn

    def expected_table():
        return torch.addmm(rnn.bias_ih_l0, dec.embedding.weight, rnn.weight_ih_l0[:, :E].t()).detach()

    stepwise_log_probs(dec, tokens, ctx)
    assert torch.allclose(speedups._packed[rnn]["input_table"][1], expected_table(), atol=1e-6)
    with torch.no_grad():
        dec.embedding.weight.add_(torch.randn_like(dec.embedding.weight))  # in place: the embedding's version only
    after = stepwise_log_probs(dec, tokens, ctx)
    assert torch.allclose(speedups._packed[rnn]["input_table"][1], expected_table(), atol=1e-6)
    assert torch.allclose(after, dec(tokens, ctx).log_softmax(-1), atol=1e-5)
    optimizer = torch.optim.AdamW(dec.embedding.parameters(), lr=0.1, fused=True)
    dec(tokens, ctx).sum().backward()
    optimizer.step()  # the embedding alone, no version bump
    after = stepwise_log_probs(dec, tokens, ctx)
    assert torch.allclose(speedups._packed[rnn]["input_table"][1], expected_table(), atol=1e-6)
    assert torch.allclose(after, dec(tokens, ctx).log_softmax(-1), atol=1e-5)


@pytest.mark.parametrize(
    "cell, layers, attention", [("gru", 1, "bahdanau"), ("gru", 2, "luong"), ("lstm", 2, "bahdanau")]
)
def test_training_loop_with_step_weights_equals_the_rnn_modules(monkeypatch, cell, layers, attention):
    """Teacher forcing with grad on a CPU reads the weights through speedups.StepWeight (one gradient product
    per weight): the same logits and gradients as nn.GRU/nn.LSTM per step, dropout's draws included, and the
    same again from a second backward over a retained graph."""
    torch.manual_seed(0)
    dec = make_decoder(cell, layers, attention, dropout=0.3, word_dropout=0.2).train()
    ctx = make_context(dec, [5, 3, 4])
    memory = ctx.memory.requires_grad_()
    tokens = random_tokens(3, 6)

    def logits_and_gradients(backwards: int = 1) -> list[torch.Tensor]:
        torch.manual_seed(1)
        logits = dec(tokens, ctx)
        loss = (logits.log_softmax(-1)[..., 5] * torch.arange(6.0)).sum()
        inputs = [memory, *dec.parameters()]
        grads = [torch.autograd.grad(loss, inputs, retain_graph=True) for _ in range(backwards)]
        return [logits, *grads[0], *grads[-1]]

    stepped = logits_and_gradients(backwards=2)
    monkeypatch.setattr(RNNDecoder, "_step_weights", lambda self, ctx: None)
    per_step = logits_and_gradients()
    assert len(stepped) == len(per_step)
    for a, b in zip(stepped, per_step):
        assert torch.allclose(a, b, atol=1e-6)


def test_word_dropout_zeroes_whole_tokens_while_training_only():
    torch.manual_seed(0)
    emb = torch.randn(40, 50, 8) + 3.0  # no exact zeros of its own
    dropped = drop_words(emb, 0.25, training=True)
    zero_rows = (dropped == 0).all(dim=2)
    assert torch.equal(zero_rows, (dropped == 0).any(dim=2))  # a token loses all of its values or none
    assert abs(zero_rows.float().mean().item() - 0.25) < 0.03  # 2,000 tokens: 3 standard deviations ~ 0.029
    kept = ~zero_rows
    assert torch.allclose(dropped[kept], emb[kept] / 0.75)  # rescaled so the expectation is unchanged
    assert torch.equal(drop_words(emb, 0.25, training=False), emb)


@pytest.mark.parametrize("feed", [True, False])
def test_search_step_without_the_input_table_matches(monkeypatch, feed):
    """Vocabularies too large for the per-token table of input gates multiply the embedding instead."""
    torch.manual_seed(0)
    dec = RNNDecoder(11, 6, 8, 2, cell="gru", attention="luong", memory_dim=5, input_feeding=feed).eval()
    ctx = Context(torch.randn(2, 3, 8), None, torch.randn(3, 4, 5), torch.ones(3, 4, dtype=torch.bool))
    tokens = torch.tensor([1, 5, 9])
    with torch.no_grad():
        state = dec.start(ctx)
        _, state = dec.step(tokens, state, ctx)  # a non-zero feed
        with_table, _ = dec.step(tokens, state, ctx)
        monkeypatch.setattr(speedups, "MAX_TABLE_VALUES", 0)
        without, _ = dec.step(tokens, state, ctx)
        reference, _ = dec.train().step(tokens, state, ctx)  # no dropout: train mode only takes nn.GRU's path
    assert torch.allclose(with_table, reference, atol=1e-5)
    assert torch.allclose(without, reference, atol=1e-5)


@pytest.mark.parametrize("cell, attention", [("gru", "bahdanau"), ("lstm", "luong")])
def test_bfloat16_decoder_steps_close_to_float32_and_give_float32_log_probs(monkeypatch, cell, attention):
    """A decoder cast with .to(torch.bfloat16) decodes on a bfloat16 context (through core.speedups where the CPU
    multiplies bfloat16, forced here for tiny weights too); log-probs come back in float32 for search to add
    up, within bfloat16 rounding of the float32 decoder's."""
    monkeypatch.setattr(speedups, "MIN_WEIGHT_SIZE", 0)
    torch.manual_seed(0)
    dec = make_decoder(cell, 2, attention)
    ctx, tokens = make_context(dec, [5, 3]), random_tokens(2, 6)
    half = make_decoder(cell, 2, attention)
    half.load_state_dict(dec.state_dict())
    half.to(torch.bfloat16)
    half_ctx = Context(
        ctx.h0.to(torch.bfloat16),
        None if ctx.c0 is None else ctx.c0.to(torch.bfloat16),
        ctx.memory.to(torch.bfloat16),
        ctx.memory_mask,
    )
    with torch.no_grad():
        state, half_state = dec.start(ctx), half.start(half_ctx)
        for t in range(tokens.size(1)):
            logp, state = dec.step(tokens[:, t], state, ctx)
            half_logp, half_state = half.step(tokens[:, t], half_state, half_ctx)
            assert half_logp.dtype == torch.float32 and half_state.h.dtype == torch.bfloat16
            assert torch.allclose(half_logp.exp().sum(dim=1), torch.ones(2), atol=1e-5)
            assert (half_logp - logp).abs().max() < 0.05  # ~8 significant bits per value
    assert speedups._packed.get(half.rnn) or torch.bfloat16 not in speedups.DTYPES  # its packed path did run
    half.float()  # new weights, possibly where the old ones lay: the packed copies must go
    assert not speedups._packed.get(half.output) and not speedups._packed.get(half.rnn)


@pytest.mark.parametrize("kind", ["bahdanau", "luong"])
@pytest.mark.parametrize("grad", [True, False])  # the autograd path and search's (chunked Bahdanau scores)
def test_attention_reads_one_memory_row_for_k_query_rows(kind, grad):
    """Queries in beam search's layout (k rows per example) against an unrepeated memory give what the
    memory repeated k times gives."""
    from core.attention import ATTENTIONS, per_example

    torch.manual_seed(0)
    att = ATTENTIONS[kind](12, M, 10)
    B, k, T, S = 3, 4, 2, 5
    memory = torch.randn(B, S, M)
    mask = torch.arange(S).unsqueeze(0) < torch.tensor([5, 2, 4]).unsqueeze(1)
    query = torch.randn(B * k, T, 12)
    with torch.set_grad_enabled(grad):
        repeated = memory.repeat_interleave(k, dim=0)
        expected = att(query, att.keys(repeated), repeated, mask.repeat_interleave(k, dim=0))
        got = att(query, att.keys(memory), memory, mask)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and torch.allclose(g, e, atol=1e-6)
    with pytest.raises(ValueError, match="must be a multiple"):
        per_example(torch.randn(7, T, 12), memory)


@pytest.mark.parametrize("chunk_values", [1, 600, 1 << 19])  # one row a chunk, a few rows, all rows at once
def test_chunked_bahdanau_scores_equal_the_whole_computation(monkeypatch, chunk_values):
    """Search's scores, a chunk of rows at a time into one reused buffer, equal the autograd path's."""
    from core.attention import BahdanauAttention

    monkeypatch.setattr(speedups, "CHUNK_VALUES", chunk_values)
    torch.manual_seed(0)
    att = BahdanauAttention(12, M, 10).eval()
    memory, query = torch.randn(6, 5, M), torch.randn(6 * 3, 2, 12)
    mask = torch.arange(5).unsqueeze(0) < torch.tensor([5, 2, 4, 1, 5, 3]).unsqueeze(1)
    whole = att(query, att.keys(memory), memory, mask)  # (grad enabled: the plain computation)
    with torch.no_grad():
        chunked = att(query, att.keys(memory), memory, mask)
    assert speedups.inference(att, query.detach()) is False  # (grad is on out here)
    for c, w in zip(chunked, whole):
        assert torch.allclose(c, w.detach(), atol=1e-6)
