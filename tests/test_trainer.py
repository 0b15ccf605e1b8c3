import json
import os
import signal

import pytest
import torch

from core import BOS, PAD, CharTokenizer, DecoderConfig, LanguageModel, TokenStream, TrainConfig, Trainer
from core.batching import pad
from core.checkpoint import load_checkpoint
from core.errors import UserError
from core.lm import lm_forward
from core.train_config import token_losses

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs."


def small_lm(tokenizer, dropout=0.0, hidden=64):
    return LanguageModel(
        tokenizer, DecoderConfig(emb_dim=16, hidden_dim=hidden, num_layers=1, cell="lstm", dropout=dropout)
    )


def overfit_tiny_corpus(tmp_path, device="cpu"):
    """Train a small LM on TEXT until it knows it by heart; returns the trainer (its model and checkpoints)."""
    tok = CharTokenizer.train(TEXT)
    model = small_lm(tok)
    ids = [BOS] + tok.encode(TEXT)
    config = TrainConfig(steps=150, lr=1e-2, warmup_steps=0, valid_every=150, schedule="constant")
    trainer = Trainer(
        model,
        lm_forward,
        TokenStream(ids, 1, len(ids)),
        config,
        tmp_path,
        model.payload,
        valid=TokenStream(ids, 1, len(ids)),
        device=device,
    )
    assert trainer.fit()["valid_loss"] < 0.05
    continuation = model.generate(TEXT[0], method="greedy", max_len=len(TEXT) - 1)
    assert TEXT[0] + continuation == TEXT
    return trainer


def test_tiny_corpus_is_overfit_and_regenerated_exactly(tmp_path):
    overfit_tiny_corpus(tmp_path)
    half = LanguageModel.load(tmp_path / "best.pt", dtype=torch.bfloat16)  # bfloat16 decoding keeps it exact
    assert half.decoder.output.weight.dtype == torch.bfloat16
    assert TEXT[0] + half.generate(TEXT[0], method="greedy", max_len=len(TEXT) - 1) == TEXT


def run_training(
    tmp_path,
    steps,
    interrupt_at=None,
    resume=None,
    ema_decay=0.0,
    device="cpu",
    snapshots=0,
    crash_at=None,
    clip_norm=1.0,
):
    """A char LM over a stream with dropout (so RNG state matters) that wraps around epochs."""
    tok = CharTokenizer.train(TEXT)
    torch.manual_seed(123)
    model = small_lm(tok, dropout=0.3, hidden=32)
    calls = {"n": 0}

    def forward(m, batch, carry):
        calls["n"] += m.training  # count training steps, not validation batches
        if m.training and calls["n"] == interrupt_at:
            os.kill(os.getpid(), signal.SIGINT)  # as if Ctrl-C were pressed during this step
        if m.training and calls["n"] == crash_at:
            raise RuntimeError("out of memory, say")
        return lm_forward(m, batch, carry)

    config = TrainConfig(
        steps=steps,
        lr=5e-3,
        warmup_steps=3,
        valid_every=4,
        seed=7,
        ema_decay=ema_decay,
        snapshots=snapshots,
        clip_norm=clip_norm,
    )
    ids = [BOS] + tok.encode(TEXT * 3)
    trainer = Trainer(
        model,
        forward,
        TokenStream(ids, 4, 16),
        config,
        tmp_path,
        model.payload,
        valid=TokenStream(ids, 2, 16),
        device=device,
    )
    if resume:
        trainer.resume(resume, task="textgen")
    trainer.fit()
    return trainer


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resumed_run_matches_the_uninterrupted_one(tmp_path, ema_decay):
    check_resume_matches(tmp_path, ema_decay)


def check_resume_matches(tmp_path, ema_decay, device="cpu", atol=0.0):
    """Run 14 steps; run 6, Ctrl-C, resume to 14: losses and weights must agree (exactly when atol is 0)."""
    full = run_training(tmp_path / "full", steps=14, ema_decay=ema_decay, device=device)
    assert len(full.train_data) < 14  # the run crosses epochs, so carry reset and data position matter
    interrupted = run_training(tmp_path / "split", steps=14, interrupt_at=6, ema_decay=ema_decay, device=device)
    assert interrupted.step == 6  # Ctrl-C finished the step, saved and stopped
    assert (tmp_path / "split" / "last.pt").exists()
    resumed = run_training(
        tmp_path / "split", steps=14, resume=tmp_path / "split" / "last.pt", ema_decay=ema_decay, device=device
    )
    assert resumed.step == 14

    def same(a, b):
        a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
        return torch.equal(a, b) if atol == 0 else torch.allclose(a, b, atol=atol, rtol=0)

    def losses(trainer, split="train", key="loss"):
        return [(r["step"], r[key]) for r in trainer.log.records() if r["split"] == split]

    assert [s for s, _ in losses(resumed)] == list(range(1, 15))
    assert same(losses(resumed), losses(full))
    assert same(losses(resumed, "valid", "valid_loss"), losses(full, "valid", "valid_loss"))
    for a, b in zip(resumed.model.parameters(), full.model.parameters()):
        assert same(a.cpu(), b.cpu())
    if ema_decay:
        for a, b in zip(resumed.ema.average, full.ema.average):
            assert same(a.cpu(), b.cpu())


def test_checkpoints_hold_the_moving_average_and_training_continues_from_raw_weights(tmp_path):
    tok = CharTokenizer.train(TEXT)
    torch.manual_seed(0)
    model = small_lm(tok)
    trajectory = []  # the weights before each update, then the final ones

    def forward(m, batch, carry):
        if m.training:
            trajectory.append([p.detach().clone() for p in m.parameters()])
        return lm_forward(m, batch, carry)

    decay, steps = 0.5, 5
    ids = [BOS] + tok.encode(TEXT)
    config = TrainConfig(steps=steps, lr=1e-2, warmup_steps=0, valid_every=steps, ema_decay=decay)
    trainer = Trainer(model, forward, TokenStream(ids, 2, 8), config, tmp_path, model.payload)
    trainer.fit()
    raw = [p.detach().clone() for p in model.parameters()]
    trajectory.append(raw)
    expected = [t.clone() for t in trajectory[0]]
    for step in range(steps):  # the ramp: decay min(0.5, (1 + step) / (10 + step))
        d = min(decay, (1 + step) / (10 + step))
        expected = [e * d + (1 - d) * p for e, p in zip(expected, trajectory[step + 1])]
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    saved = LanguageModel.load(tmp_path / "last.pt")
    for name_param, e in zip(saved.named_parameters(), expected):
        assert torch.allclose(name_param[1], e, atol=1e-6), name_param[0]
    for r, t in zip(ckpt["trainer"]["raw_params"], raw):
        assert torch.equal(r, t)
    assert not all(torch.equal(e, r) for e, r in zip(expected, raw))  # the average is not the raw weights


def test_snapshots_keep_the_weights_of_the_last_validations(tmp_path):
    trainer = run_training(tmp_path, steps=14, snapshots=2)  # validations at steps 4, 8, 12 and 14
    assert [p.name for p in trainer.snapshot_paths()] == ["snapshot-12.pt", "snapshot-14.pt"]
    assert sorted(p.name for p in tmp_path.glob("snapshot-*")) == ["snapshot-12.pt", "snapshot-14.pt"]
    last, snapshot = (load_checkpoint(tmp_path / name, task="textgen") for name in ("last.pt", "snapshot-14.pt"))
    assert "trainer" not in snapshot  # weights only
    assert all(torch.equal(last["model"][k], v) for k, v in snapshot["model"].items())
    twelve = LanguageModel.load(tmp_path / "snapshot-12.pt").state_dict()  # loads as any checkpoint does
    assert twelve.keys() == snapshot["model"].keys()
    assert any(not torch.equal(twelve[k], v) for k, v in snapshot["model"].items())
    # a fresh run in the same folder (--overwrite) does not mix in the old run's snapshots
    run_training(tmp_path, steps=6, snapshots=2)
    assert sorted(p.name for p in tmp_path.glob("snapshot-*")) == ["snapshot-4.pt", "snapshot-6.pt"]


def test_a_fresh_run_replaces_an_earlier_runs_checkpoints_at_once(tmp_path):
    for name in ("last.pt", "best.pt"):
        (tmp_path / name).write_bytes(b"an earlier run's")
    with pytest.raises(RuntimeError, match="out of memory, say"):  # a crash before the first checkpoint
        run_training(tmp_path, steps=8, crash_at=2)
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()


def test_outputs_best_last_log_and_plot(tmp_path):
    trainer = run_training(tmp_path, steps=8)
    for name in ("best.pt", "last.pt", "log.jsonl", "loss.png"):
        assert (tmp_path / name).exists(), name
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert {"loss", "lr", "tokens_per_s"} <= set(records[0])
    assert [r["step"] for r in records if r["split"] == "valid"] == [4, 8]
    assert trainer.best == min(r["valid_loss"] for r in records if r["split"] == "valid")


def test_clip_norm_zero_turns_clipping_off(tmp_path):
    def weights(clip_norm: float, folder: str) -> list[torch.Tensor]:
        return [
            p.detach().clone() for p in run_training(tmp_path / folder, steps=4, clip_norm=clip_norm).model.parameters()
        ]

    off, huge, tight = weights(0.0, "off"), weights(1e9, "huge"), weights(0.01, "tight")
    assert all(torch.equal(a, b) for a, b in zip(off, huge))
    assert not all(torch.equal(a, b) for a, b in zip(off, tight))  # clipping changes the run: the test has power
    norms = [
        json.loads(line)["grad_norm"]
        for line in (tmp_path / "off" / "log.jsonl").read_text().splitlines()
        if "grad_norm" in line
    ]
    assert norms and all(0 < n < float("inf") for n in norms)  # still measured and logged


def test_early_stopping_and_plateau_schedule(tmp_path):
    tok = CharTokenizer.train(TEXT)
    model = small_lm(tok)
    scores = iter([5.0, 4.0, 4.5, 4.6, 4.7, 4.8])  # improves once, then only worsens
    config = TrainConfig(
        steps=100, valid_every=2, patience=2, schedule="plateau", plateau_patience=1, plateau_factor=0.5, warmup_steps=0
    )
    ids = [BOS] + tok.encode(TEXT)
    trainer = Trainer(
        model,
        lm_forward,
        TokenStream(ids, 2, 8),
        config,
        tmp_path,
        model.payload,
        metrics_fn=lambda m: {"score": next(scores)},
        select="score",
        maximize=False,
    )
    trainer.fit()
    assert trainer.step == 8  # validations at 2, 4 (best), 6, 8: two without improvement stop it
    assert trainer.best == 4.0
    assert trainer.lr_at(trainer.step) == config.lr * 0.25


def test_cosine_schedule_warms_up_then_decays():
    tok = CharTokenizer.train(TEXT)
    config = TrainConfig(steps=100, lr=1e-3, warmup_steps=10, min_lr=1e-5)
    trainer = Trainer(
        small_lm(tok), lm_forward, TokenStream(list(range(4, 20)) * 4, 2, 4), config, "unused", lambda: {}
    )
    lrs = [trainer.lr_at(s) for s in range(100)]
    assert lrs[0] < lrs[5] < lrs[9] == max(lrs) and abs(lrs[-1] - 1e-5) < 1e-6
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


def test_padding_is_ignored_by_the_loss(tmp_path):
    tok = CharTokenizer.train(TEXT)
    model = small_lm(tok).eval()
    sentences = [[BOS] + tok.encode(s) for s in ("the fox", "a dog jumps over", "box")]
    trainer = Trainer(model, lm_forward, TokenStream(sentences[1] * 4, 2, 4), TrainConfig(), tmp_path, lambda: {})

    def batch_of(rows):
        x, _ = pad([r[:-1] for r in rows])
        y, _ = pad([r[1:] for r in rows])
        return x, y

    _, together, n_together, _ = trainer._loss(batch_of(sentences), None)
    alone = [trainer._loss(batch_of([s]), None) for s in sentences]
    assert n_together == sum(a[2] for a in alone)
    assert torch.allclose(together, sum(a[1] for a in alone), atol=1e-4)


@pytest.mark.parametrize(
    "field, value",
    [
        ("lr", float("nan")),
        ("clip_norm", -1.0),
        ("valid_every", 0),
        ("label_smoothing", 1.0),
        ("steps", 0),
        ("snapshots", -1),
    ],
)
def test_trainer_refuses_settings_out_of_range(tmp_path, field, value):
    """Checked before anything is written: NaN (every comparison with it is false) and values torch would
    take without complaint (a negative clip norm reverses the gradients) alike."""
    tok = CharTokenizer.train(TEXT)
    model = small_lm(tok, dropout=0.0, hidden=8)
    ids = [BOS] + tok.encode(TEXT)
    with pytest.raises(UserError, match=f"--{field.replace('_', '-')} = {value:g} is out of range"):
        Trainer(model, lm_forward, TokenStream(ids, 2, 8), TrainConfig(**{field: value}), tmp_path, model.payload)
    assert not any(tmp_path.iterdir())


def test_label_smoothed_loss_counts_only_the_real_tokens():
    """The label-smoothed training loss averages over non-PAD targets only: padding adds nothing to it."""
    torch.manual_seed(0)
    V, eps = 7, 0.1
    logits = torch.randn(2, 5, V) * 2
    targets = torch.tensor([[4, 5, 6, PAD, PAD], [6, 1, 4, 5, 2]])
    real = targets != PAD
    loss, nll, n = token_losses(logits, targets, label_smoothing=eps)
    alone, alone_nll, alone_n = token_losses(logits[real].unsqueeze(0), targets[real].unsqueeze(0), eps)
    assert n == alone_n == 8
    assert torch.allclose(loss, alone, atol=1e-6) and torch.allclose(nll, alone_nll, atol=1e-5)
    logp = logits[real].log_softmax(-1)  # (8, V): the real tokens only
    by_hand = ((1 - eps) * -logp.gather(1, targets[real].unsqueeze(1)).squeeze(1) - eps * logp.mean(-1)).mean()
    assert torch.allclose(loss, by_hand, atol=1e-6)
    assert torch.allclose(nll, -logp.gather(1, targets[real].unsqueeze(1)).sum(), atol=1e-5)
