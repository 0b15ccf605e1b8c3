"""Sequence-level training (core.self_critical): its gradient is REINFORCE's, a baseline equal to the sample gives
none, and a reward that cross-entropy ignores moves the greedy output; the speed path never reads stale weights."""

import json

import pytest
import torch
from torch import nn

from core.context import Context
from core.decoder import DecoderConfig, build_decoder
from core.search import greedy
from core.self_critical import Episode, SelfCritical, self_critical
from core.tokenizers import BOS, EOS, PAD
from core.train_config import TrainConfig, token_losses
from core.trainer import Trainer

VOCAB, HIDDEN, MEMORY = 9, 16, 6
RARE = 7  # the token the made-up reward asks for


class Toy(nn.Module):
    """A decoder started from a learned state and attending to a learned memory of 3 positions per example."""

    def __init__(self, attention: str = "bahdanau"):
        super().__init__()
        config = DecoderConfig(emb_dim=8, hidden_dim=HIDDEN, cell="gru", attention=attention, dropout=0.3)
        self.decoder = build_decoder(VOCAB, config, memory_dim=MEMORY)
        self.h0 = nn.Parameter(torch.randn(1, 1, HIDDEN) * 0.5)
        self.memory = nn.Parameter(torch.randn(1, 3, MEMORY))

    def context(self, examples: int) -> Context:
        return Context(h0=self.h0.expand(1, examples, HIDDEN), memory=self.memory.expand(examples, 3, MEMORY))

    def episode(self, references: list) -> Episode:
        starts = torch.full((len(references),), BOS)
        return Episode(self.decoder, self.context(len(references)), starts, references, EOS, forbid=(PAD, BOS))


def toy_episode(model: Toy, batch: list) -> Episode:
    return model.episode(batch)


def counting_reward(calls: list):
    """Rewards the rare token and brevity; records what it scored (the samples first, then greedy)."""

    def reward(hypotheses: list[list[int]], references: list) -> torch.Tensor:
        calls.append([list(h) for h in hypotheses])
        return torch.tensor([h.count(RARE) - 0.1 * len(h) for h in hypotheses])

    return reward


def sequence_log_prob(model: Toy, tokens: list[int], finished: bool) -> torch.Tensor:
    """log p(tokens [+ EOS]) under the model, step by step with autograd (eval mode, as the objective scores)."""
    ctx = model.decoder.prepare(model.context(1))
    state, previous, total = model.decoder.start(ctx), torch.tensor([BOS]), torch.zeros(())
    for token in tokens + ([EOS] if finished else []):
        logp, state = model.decoder.step(previous, state, ctx)
        total = total + logp[0, token]
        previous = torch.tensor([token])
    return total


@pytest.mark.parametrize("baseline", ["greedy", "mean"])
def test_the_gradient_is_the_reinforce_formula(baseline):
    torch.manual_seed(0)
    model, calls = Toy(), []
    config = SelfCritical(samples=3, baseline=baseline, max_len=6)
    objective = self_critical(toy_episode, counting_reward(calls), config)
    model.train()
    loss, n_tokens, figures = objective(model, ["a", "b"], None)
    assert model.training, "the step leaves the model in the mode it found it in"
    model.zero_grad()
    loss.backward()
    found = {name: p.grad.clone() for name, p in model.named_parameters()}

    samples, best = calls
    rewards = torch.tensor([h.count(RARE) - 0.1 * len(h) for h in samples]).view(2, 3)
    if baseline == "greedy":
        baselines = torch.tensor([h.count(RARE) - 0.1 * len(h) for h in best]).view(2, 1).expand(2, 3)
    else:
        baselines = (rewards.sum(dim=1, keepdim=True) - rewards) / 2
    model.eval()
    expected_loss = torch.zeros(())
    for hypothesis, advantage in zip(samples, (rewards - baselines).view(-1).tolist()):
        finished = len(hypothesis) < config.max_len
        expected_loss = expected_loss - advantage * sequence_log_prob(model, hypothesis, finished)
    assert n_tokens == sum(len(h) + (len(h) < config.max_len) for h in samples)
    expected_loss = expected_loss / n_tokens
    model.zero_grad()
    expected_loss.backward()
    assert float(loss.detach()) == pytest.approx(float(expected_loss.detach()), abs=1e-5)
    for name, p in model.named_parameters():
        assert torch.allclose(found[name], p.grad, atol=1e-6), name
    assert figures["reward"] == pytest.approx(float(rewards.mean()))
    assert figures["baseline"] == pytest.approx(float(baselines.mean()))


def test_one_sample_that_is_the_greedy_output_gives_no_gradient():
    torch.manual_seed(1)
    model = Toy()
    objective = self_critical(toy_episode, counting_reward([]), SelfCritical(samples=1, top_k=1, max_len=6))
    loss, _, figures = objective(model, ["a", "b", "c"], None)
    loss.backward()
    assert float(loss.detach()) == 0.0 and figures["beat_greedy"] == 0.0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())


def test_a_mean_baseline_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2 samples"):
        self_critical(toy_episode, counting_reward([]), SelfCritical(samples=1, baseline="mean"))


def greedy_output(model: Toy) -> list[int]:
    model.eval()
    return greedy(model.decoder, model.context(1), torch.tensor([BOS]), max_len=6, eos=EOS, forbid=(PAD, BOS))[0].tokens


class Repeated:
    """The same batch of references every step."""

    carries_state = False

    def __init__(self, batch):
        self.value = batch

    def __len__(self) -> int:
        return 1

    def batch(self, epoch: int, index: int):
        return self.value


def test_a_reward_that_cross_entropy_ignores_moves_greedy_towards_it(tmp_path):
    """Trained on "4 5" nine times in ten and "4 7" once, greedy says "4 5"; rewarding the rare 7, a few hundred
    self-critical steps through the Trainer make greedy say it, and the run log and the reward curves show it."""
    torch.manual_seed(0)
    model = Toy(attention="none")
    targets = torch.tensor([[4, 5, EOS]] * 9 + [[4, RARE, EOS]])
    inputs = torch.cat([torch.full((10, 1), BOS), targets[:, :-1]], dim=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(150):
        loss = token_losses(model.decoder(inputs, model.context(10)), targets)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert greedy_output(model) == [4, 5]

    def reward(hypotheses, references):
        return torch.tensor([float(RARE in h) for h in hypotheses])

    def says_rare(m):
        return {"valid_rare": float(RARE in greedy_output(m))}

    objective = self_critical(toy_episode, reward, SelfCritical(samples=4, max_len=6))
    config = TrainConfig(steps=200, lr=0.01, schedule="constant", warmup_steps=0, valid_every=50, clip_norm=0)
    trainer = Trainer(model, None, Repeated(["x"] * 8), config, tmp_path, dict, metrics_fn=says_rare,
                      select="valid_rare", maximize=True, objective=objective)  # fmt: skip
    trainer.fit()
    assert greedy_output(model) == [4, RARE]
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert {"reward", "baseline", "greedy_reward", "beat_greedy"} <= set(train[0])
    assert train[-1]["greedy_reward"] == 1.0 and train[0]["greedy_reward"] == 0.0
    assert (tmp_path / "rewards.png").stat().st_size > 1000


def test_the_speed_path_reads_the_weights_of_the_last_optimizer_step():
    """Decoding, a fused AdamW step and decoding again without a train()/eval() switch: the second decode reads the
    new weights (the packed copies of the speed path are remade after any optimizer step)."""
    torch.manual_seed(0)
    config = DecoderConfig(emb_dim=32, hidden_dim=512, cell="gru", dropout=0.0, input_feeding=False)
    decoder = build_decoder(1200, config).eval()  # an output weight of 614k values: packed on the speed path
    ctx, tokens = Context(h0=torch.randn(1, 4, 512)), torch.tensor([4, 5, 6, 7])
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=0.1, fused=True)

    def logp(grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad):  # with autograd: the plain path, always from the weights themselves
            return decoder.step(tokens, decoder.start(ctx), ctx)[0]

    before = logp(grad=False)
    assert torch.allclose(before, logp(grad=True), atol=1e-5)
    optimizer.zero_grad()
    (-logp(grad=True)[:, 8].sum()).backward()
    optimizer.step()
    after = logp(grad=False)
    assert not torch.allclose(after, before, atol=1e-3), "the step changed the weights"
    assert torch.allclose(after, logp(grad=True).detach(), atol=1e-5)
