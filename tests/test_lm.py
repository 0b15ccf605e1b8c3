import copy
import warnings

import pytest
import torch

from core import BOS, EOS, PAD, CharTokenizer, Context, DecoderConfig, LanguageModel, PromptEncoder
from core.batching import pad
from core.errors import UserError
from core.search import greedy

TEXT = "to be, or not to be, that is the question."


@pytest.fixture(params=["gru", "lstm"])
def model(request):
    tok = CharTokenizer.train(TEXT)
    return LanguageModel(
        tok, DecoderConfig(emb_dim=8, hidden_dim=16, num_layers=2, cell=request.param, dropout=0.0)
    ).eval()


def test_prompt_context_is_the_state_after_reading_the_prompt(model):
    dec = model.decoder
    ids = torch.tensor([[BOS] + model.tokenizer.encode("to be")])  # (1, 6)
    ctx = model.prompt_encoder(ids, torch.tensor([ids.size(1)]))
    zeros = torch.zeros(dec.num_layers, 1, dec.hidden_dim)
    state = dec.start(Context(zeros, zeros if dec.cell == "lstm" else None))
    for t in range(ids.size(1) - 1):  # all but the last token, step by step
        _, state = dec.step(ids[:, t], state, None)
    assert torch.allclose(ctx.h0, state.h.transpose(0, 1), atol=1e-6)
    assert PromptEncoder.start_tokens(ids, torch.tensor([6])).tolist() == [ids[0, -1].item()]


def test_prompts_of_different_lengths_batch_like_alone(model):
    prompts = [[BOS] + model.tokenizer.encode(p) for p in ("to be, or", "t", "", "not to be")]
    ids, lengths = pad(prompts)
    ctx = model.prompt_encoder(ids, lengths)
    for i, p in enumerate(prompts):
        alone = model.prompt_encoder(torch.tensor([p]), torch.tensor([len(p)]))
        assert torch.allclose(ctx.h0[:, i], alone.h0[:, 0], atol=1e-6)
        if ctx.c0 is not None:
            assert torch.allclose(ctx.c0[:, i], alone.c0[:, 0], atol=1e-6)
    starts = PromptEncoder.start_tokens(ids, lengths)
    assert starts[2] == BOS and torch.equal(ctx.h0[:, 2], torch.zeros_like(ctx.h0[:, 2]))  # empty prompt


def test_save_load_gives_identical_logits_and_generations(model, tmp_path):
    path = model.save(tmp_path / "lm.pt")
    again = LanguageModel.load(path)
    tokens = torch.tensor([[BOS] + model.tokenizer.encode(TEXT)])
    zeros = torch.zeros(2, 1, 16)
    ctx = Context(zeros, zeros if model.decoder.cell == "lstm" else None)
    assert torch.equal(model.decoder(tokens, ctx), again.decoder(tokens, ctx))
    for options in (
        {"method": "greedy"},
        {"method": "sample", "seed": 5, "temperature": 1.5},
        {"method": "beam", "beam_size": 3},
    ):
        assert model.generate("to", max_len=30, **options) == again.generate("to", max_len=30, **options)


def test_generate_matches_search_and_stream(model):
    ids = [BOS] + model.tokenizer.encode("to be")
    ctx = model.prompt_encoder(torch.tensor([ids]), torch.tensor([len(ids)]))
    hyp = greedy(model.decoder, ctx, torch.tensor([ids[-1]]), max_len=25, eos=EOS, forbid=(PAD, BOS))[0]
    assert model.generate("to be", method="greedy", max_len=25) == model.tokenizer.decode(hyp.tokens)
    assert "".join(model.stream("to be", method="greedy", max_len=25)) == model.tokenizer.decode(hyp.tokens)
    sampled = model.generate("to be", method="sample", seed=11, max_len=25)
    assert "".join(model.stream("to be", method="sample", seed=11, max_len=25)) == sampled
    many = model.generate_many("to be", 4, method="sample", seed=3, max_len=25)
    assert len(many) == 4 and len(set(many)) > 1  # independent draws differ
    beams = model.generate_many("to be", 3, method="beam", beam_size=3, max_len=10)
    assert len(beams) == 3 and len(set(beams)) == 3


def test_prompt_outside_the_vocabulary_warns_once(model):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        text = model.generate("to QZ be", method="greedy", max_len=5)
    assert isinstance(text, str)
    assert len(caught) == 1 and "'Q'" in str(caught[0].message) and "<unk>" in str(caught[0].message)


def test_padding_and_the_start_token_never_come_out(model):
    """Label smoothing leaves <pad> and <bos> some probability; a model that favours them still never emits them."""
    biased = copy.deepcopy(model)
    with torch.no_grad():
        biased.decoder.output.bias[[PAD, BOS]] += 50.0
    ids = [BOS] + model.tokenizer.encode("to be")
    ctx = biased.prompt_encoder(torch.tensor([ids]), torch.tensor([len(ids)]))
    unforbidden = greedy(biased.decoder, ctx, torch.tensor([ids[-1]]), max_len=10, eos=EOS)[0]
    assert set(unforbidden.tokens) <= {PAD, BOS}, "precondition: the search alone would emit them"
    decoded: list[list[int]] = []
    decode = biased.tokenizer.decode
    biased.tokenizer.decode = lambda token_ids: decoded.append(list(token_ids)) or decode(token_ids)
    biased.generate("to be", method="greedy", max_len=10)
    biased.generate_many("to be", 3, method="sample", seed=1, max_len=10)
    biased.generate_many("to be", 3, method="beam", beam_size=3, max_len=10)
    "".join(biased.stream("to be", method="sample", seed=2, max_len=10))
    assert len(decoded) >= 8 and sum(map(len, decoded)) > 0
    assert not any(set(d) & {PAD, BOS} for d in decoded)


def test_an_option_the_method_ignores_is_refused(model):
    with pytest.raises(UserError, match="temperature is an option of method sample; it does not go with method greedy"):
        model.generate("to", method="greedy", temperature=0.5)


def test_many_samples_are_decoded_a_batch_at_a_time_with_one_generator(model, monkeypatch):
    """Memory stays bounded however many draws are asked for, and a seed still reproduces them all."""
    import core.lm

    rows, search = [], core.lm.search_with

    def recording(config, decoder, ctx, start, **kwargs):
        rows.append(len(start))
        return search(config, decoder, ctx, start, **kwargs)

    monkeypatch.setattr(core.lm, "SAMPLE_BATCH", 4)
    monkeypatch.setattr(core.lm, "search_with", recording)
    chunked = model.generate_many("to", 10, seed=3, max_len=6)
    assert rows == [4, 4, 2] and len(chunked) == 10
    assert model.generate_many("to", 10, seed=3, max_len=6) == chunked  # one seeded generator for all batches


def test_prompts_searched_together_continue_as_each_alone(model):
    """A batch of prompts of different lengths: each row continues from its own last token."""
    prompts = ["to be", "t", "", "or not to be, that"]
    together = model.search(prompts, method="greedy", max_len=8)
    for prompt, found in zip(prompts, together):
        assert found[0].tokens == model.search([prompt], method="greedy", max_len=8)[0][0].tokens
    beams = model.search(prompts, method="beam", beam_size=3, n_best=2, max_len=8)
    assert [len(b) for b in beams] == [2] * 4
    assert [h.tokens for h in beams[0]] == [h.tokens for h in model.search(prompts[:1], method="beam", beam_size=3,
                                                                           n_best=2, max_len=8)[0]]  # fmt: skip
