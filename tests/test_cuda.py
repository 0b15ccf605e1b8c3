"""The GPU path (skipped where CUDA is absent): search agrees with the CPU, mixed-precision training learns,
checkpoints move between devices, and an interrupted run resumes exactly (CUDA random state included)."""

import pytest
import test_trainer
import torch
from test_trainer import TEXT

from core import BOS, EOS, Context, LanguageModel, RNNDecoder
from core.lm import lm_forward
from core.search import beam_search, greedy, sample

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(autouse=True)
def _full_float32():
    """cuDNN may run RNNs in TF32 (a 10-bit mantissa) by default: compare with the CPU in full float32."""
    allowed = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = allowed


def attention_decoder_and_context(device):
    torch.manual_seed(3)
    V, H, M, lengths = 50, 32, 12, [7, 3, 9, 5]
    dec = RNNDecoder(V, 16, H, 2, cell="lstm", attention="bahdanau", memory_dim=M).eval()
    with torch.no_grad():  # sharper than a fresh network, so examples decode differently
        dec.output.weight.mul_(3.0)
    B, S = len(lengths), max(lengths)
    mask = torch.arange(S).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    ctx = Context(h0=torch.randn(2, B, H), c0=torch.randn(2, B, H), memory=torch.randn(B, S, M), memory_mask=mask)
    return dec.to(device), ctx.to(device), torch.full((B,), BOS, device=device)


def test_greedy_and_beam_on_cuda_equal_the_cpu():
    dec, ctx, start = attention_decoder_and_context("cpu")
    cpu_greedy = greedy(dec, ctx, start, max_len=12, eos=EOS)
    cpu_beam = beam_search(dec, ctx, start, max_len=12, eos=EOS, beam_size=4, n_best=2)
    dec, gctx, gstart = dec.cuda(), ctx.to("cuda"), start.cuda()
    assert len({tuple(h.tokens) for h in cpu_greedy}) >= 3, "precondition: examples decode differently"
    for a, b in zip(cpu_greedy, greedy(dec, gctx, gstart, max_len=12, eos=EOS), strict=True):
        assert a.tokens == b.tokens and a.log_prob == pytest.approx(b.log_prob, abs=1e-3)
    for nbest_a, nbest_b in zip(
        cpu_beam, beam_search(dec, gctx, gstart, max_len=12, eos=EOS, beam_size=4, n_best=2), strict=True
    ):
        for a, b in zip(nbest_a, nbest_b, strict=True):
            assert a.tokens == b.tokens and a.score == pytest.approx(b.score, abs=1e-3)


def test_sampling_on_cuda_is_reproducible_from_its_generator():
    dec, ctx, start = attention_decoder_and_context("cuda")

    def draw(seed):
        generator = torch.Generator("cuda").manual_seed(seed)
        return [h.tokens for h in sample(dec, ctx, start, max_len=12, eos=EOS, temperature=1.5, generator=generator)]

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)


def test_mixed_precision_training_overfits_a_tiny_corpus_on_cuda(tmp_path):
    trainer = test_trainer.overfit_tiny_corpus(tmp_path, device="cuda")
    model = trainer.model
    assert trainer.amp and model.device.type == "cuda"
    # the checkpoint written on the GPU loads on the CPU and computes the same
    on_cpu = LanguageModel.load(tmp_path / "best.pt", device="cpu")
    probe = torch.tensor([[BOS] + model.tokenizer.encode(TEXT[:30])])
    with torch.no_grad():
        expected, _, _ = lm_forward(model.eval(), (probe.cuda(), probe.cuda()), None)
        got, _, _ = lm_forward(on_cpu, (probe, probe), None)
    assert torch.allclose(got, expected.float().cpu(), atol=1e-4)
    assert on_cpu.generate(TEXT[0], method="greedy", max_len=len(TEXT) - 1) == TEXT[1:]


def test_resumed_cuda_run_matches_the_uninterrupted_one(tmp_path):
    # GPU kernels need not be bit-for-bit deterministic; a lost random or data state would differ by far more
    test_trainer.check_resume_matches(tmp_path, ema_decay=0.0, device="cuda", atol=1e-4)
