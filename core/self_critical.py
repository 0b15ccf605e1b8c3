"""Sequence-level training: optimise the metric a task is judged by, with self-critical policy gradients (Rennie et
al. 2017, "Self-critical Sequence Training for Image Captioning"), for every task at once.

For each example of a batch, `samples` outputs are drawn with `core.search.sample` (temperature 1, optionally
top-k) and the greedy output is decoded; the task's reward scores each against the example's references, and the
loss is (reward(sample) - baseline) * -log p(sample), averaged over the sampled tokens. The baseline is the greedy
output's reward ("greedy", Rennie et al.) or the mean reward of the example's other samples ("mean", Kool et al.
2019, "Buy 4 REINFORCE samples, get a baseline for free"). Both searches run under no_grad through the ordinary
search; the log-probabilities come from one teacher-forced pass over the samples, so decoder and search stay as
they are. The whole step runs in eval mode: the policy trained is the one that decodes (no dropout), and the
teacher-forced pass scores the model the samples came from (the search's rules, such as forbidden tokens, aside).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.batching import pad
from core.context import Context
from core.search import greedy, sample
from core.tokenizers import PAD

# hypotheses' tokens (N lists, without start token and EOS), each one's references -> rewards (N,)
Reward = Callable[[list[list[int]], list[Any]], Tensor]


@dataclass(frozen=True)
class SelfCritical:
    samples: int = 5  # outputs drawn per example
    baseline: str = "greedy"  # "greedy": the greedy output's reward; "mean": the other samples' mean reward
    top_k: int = 0  # 0: draw from the whole distribution
    max_len: int = 30  # tokens per output at most

    CHOICES = {"baseline": ["greedy", "mean"]}
    RANGES = {"samples": (1,), "top_k": (0,), "max_len": (1,)}


@dataclass
class Episode:
    """What a task hands sequence-level training for one batch of B examples."""

    decoder: nn.Module
    ctx: Context  # one row per example; its tensors keep their autograd history (the encoder trains too)
    start_tokens: Tensor  # (B,)
    references: list[Any]  # one entry per example, as the reward reads it
    eos: int
    forbid: Sequence[int] = ()
    min_len: int = 0
    max_len: Tensor | None = None  # (B,): each example's own limit on its outputs (SelfCritical.max_len caps it)


def self_critical(
    episode: Callable[[Any, Any], Episode], reward: Reward, config: SelfCritical
) -> Callable[[Any, Any, Any], tuple[Tensor, int, dict[str, float]]]:
    """A `Trainer` objective: (model, batch, carry) -> (loss, sampled tokens, figures for the run log: the mean
    reward of the samples, of the baseline and of greedy, and the share of samples beating greedy).
    `episode(model, batch)` makes the batch's `Episode`."""
    if config.baseline == "mean" and config.samples < 2:
        raise ValueError("the mean-of-the-others baseline needs at least 2 samples per example")

    def objective(model: Any, batch: Any, carry: Any) -> tuple[Tensor, int, dict[str, float]]:
        was_training = model.training
        model.eval()
        try:
            return _step(episode(model, batch), reward, config)
        finally:
            model.train(was_training)

    return objective


def _step(episode: Episode, reward: Reward, config: SelfCritical) -> tuple[Tensor, int, dict[str, float]]:
    K, ctx = config.samples, episode.ctx
    limit: int | Tensor = config.max_len if episode.max_len is None else episode.max_len.clamp(max=config.max_len)
    rules: dict[str, Any] = dict(eos=episode.eos, min_len=episode.min_len, forbid=episode.forbid)
    drawn = ctx.index_select(torch.arange(ctx.rows, device=ctx.h0.device).repeat_interleave(K))  # b's: b*K ...
    starts = episode.start_tokens.repeat_interleave(K)
    with torch.no_grad():
        each = limit if isinstance(limit, int) else limit.repeat_interleave(K)
        samples = sample(episode.decoder, _detached(drawn), starts, max_len=each, top_k=config.top_k, **rules)
        best = greedy(episode.decoder, _detached(ctx), episode.start_tokens, max_len=limit, **rules)
    references = [ref for ref in episode.references for _ in range(K)]
    rewards = reward([h.tokens for h in samples], references).float().view(-1, K)  # (B, K)
    greedy_rewards = reward([h.tokens for h in best], list(episode.references)).float().view(-1, 1)  # (B, 1)
    if config.baseline == "greedy":
        baseline = greedy_rewards.expand_as(rewards)
    else:  # each sample's baseline leaves its own reward out, so that it stays unbiased
        baseline = (rewards.sum(dim=1, keepdim=True) - rewards) / (K - 1)
    advantage = (rewards - baseline).view(-1).to(ctx.h0.device)  # (B*K,)
    sequences = [h.tokens + ([episode.eos] if h.finished else []) for h in samples]
    targets, _ = pad(sequences)  # (B*K, T)
    inputs = torch.cat([starts.cpu().unsqueeze(1), targets[:, :-1]], dim=1).to(ctx.h0.device)  # (B*K, T)
    targets = targets.to(ctx.h0.device)
    logits = episode.decoder(inputs, drawn)  # (B*K, T, V)
    nll = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=PAD, reduction="none")  # (B*K, T)
    n_tokens = int((targets != PAD).sum())
    loss = (advantage.unsqueeze(1) * nll).sum() / max(1, n_tokens)
    figures = {
        "reward": float(rewards.mean()),
        "baseline": float(baseline.mean()),
        "greedy_reward": float(greedy_rewards.mean()),
        "beat_greedy": float((rewards > greedy_rewards).float().mean()),
    }
    return loss, n_tokens, figures


def _detached(ctx: Context) -> Context:
    """The context without its autograd history: the searches need none."""
    tensors = {f.name: getattr(ctx, f.name) for f in fields(ctx)}
    return replace(ctx, **{name: t.detach() for name, t in tensors.items() if t is not None})
