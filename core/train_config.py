"""What training does: its settings as one dataclass (steps, learning-rate schedule, regularisation, validation,
averaging, seed), the learning-rate schedule they describe, the objective (cross-entropy per target token) and the
moving average of the weights; and what the trainer is given: batch sources and a task's step."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.errors import MAX_SEED
from core.tokenizers import PAD


@dataclass
class TrainConfig:
    steps: int = 2000
    lr: float = 2e-3
    weight_decay: float = 0.0
    clip_norm: float = 1.0  # 0: no clipping (as in fairseq); the gradient norm is still logged
    label_smoothing: float = 0.0
    schedule: str = "cosine"
    warmup_steps: int = 100
    min_lr: float = 1e-4
    plateau_factor: float = 0.5
    plateau_patience: int = 1
    valid_every: int = 250
    patience: int = 0
    ema_decay: float = 0.0
    snapshots: int = 0
    seed: int = 1

    CHOICES = {"schedule": ["cosine", "plateau", "constant"]}
    # (low, high, low_open, high_open) for core.errors.check_config
    RANGES = {"steps": (1,), "lr": (0, None, True), "weight_decay": (0,), "clip_norm": (0,),
              "label_smoothing": (0, 1, False, True), "warmup_steps": (0,), "min_lr": (0,),
              "plateau_factor": (0, 1, True), "plateau_patience": (0,), "valid_every": (1,), "patience": (0,),
              "ema_decay": (0, 1, False, True), "snapshots": (0,), "seed": (0, MAX_SEED)}  # fmt: skip
    ORDER = [("min_lr", "lr")]  # the schedule decays from lr to min_lr: above it, the rate would rise


def learning_rate(config: TrainConfig, step: int, plateau_scale: float = 1.0) -> float:
    """The rate at update `step`: linear warm-up, then cosine decay to min_lr, or constant times the plateau
    scale (which shrinks on validations that do not improve)."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps > 0 else 1.0
    if config.schedule == "cosine":
        progress = min(1.0, max(0, step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
        return warm * (config.min_lr + (config.lr - config.min_lr) * 0.5 * (1 + math.cos(math.pi * progress)))
    return warm * config.lr * plateau_scale


def token_losses(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor, int]:
    """logits (B, T, V), targets (B, T) -> the mean loss to optimise per target token (with label smoothing),
    the summed plain negative log-likelihood (nats, detached) and the number of target tokens (not PAD)."""
    logits = logits.float().reshape(-1, logits.size(-1))  # (B*T, V)
    targets = targets.reshape(-1)  # (B*T,)
    n_tokens = int((targets != PAD).sum())
    nll = F.cross_entropy(logits, targets, ignore_index=PAD, reduction="sum")
    loss = (
        nll
        if label_smoothing == 0
        else F.cross_entropy(logits, targets, ignore_index=PAD, reduction="sum", label_smoothing=label_smoothing)
    )
    return loss / max(1, n_tokens), nll.detach(), n_tokens


class WeightAverage:
    """An exponential moving average of a model's weights: what validation sees and checkpoints hold as "model"
    when a run keeps one (`TrainConfig.ema_decay`); the raw weights travel in the trainer state for --resume."""

    def __init__(self, model: nn.Module, decay: float):
        self.model, self.decay = model, decay
        self.average = [p.detach().clone() for p in model.parameters()]

    def update(self, step: int) -> None:
        """Move the average towards the weights after update number `step` (from 0)."""
        # Early on the average would be dominated by the random initial weights: ramp the decay up with the
        # number of updates (as TensorFlow's ExponentialMovingAverage does with num_updates).
        decay = min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(self.average, [p.detach() for p in self.model.parameters()], 1.0 - decay)

    def reset(self) -> None:
        """The average starts again from the model's weights as they are (a resumed run: the saved average)."""
        self.average = [p.detach().clone() for p in self.model.parameters()]

    @contextmanager
    def swapped_in(self) -> Iterator[list[Tensor]]:
        """Inside, the model holds the average; yields copies of the raw weights, which are back on exit."""
        params: list[Tensor] = list(self.model.parameters())
        raw = [p.detach().clone() for p in params]
        with torch.no_grad():
            torch._foreach_copy_(params, self.average)
        try:
            yield raw
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, raw)


class BatchSource(Protocol):
    carries_state: bool

    def __len__(self) -> int: ...

    def batch(self, epoch: int, index: int) -> Any: ...


# forward_fn(model, batch, carry) -> (logits (B, T, V), targets (B, T), carry for the next batch or None), and
# optionally a fourth element: a scalar added to the loss that training minimises (a regulariser such as an
# attention penalty; validation loss and perplexity stay the plain cross-entropy)
ForwardFn = Callable[[Any, Any, Any], tuple]  # (the task's model, a batch, the carry)


class ForwardStep(nn.Module):
    """`forward_fn` as a module's forward: DistributedDataParallel prepares its gradient exchange in forward,
    and a task's forward_fn may call any parts of the model (encoder, decoder) rather than model.forward."""

    def __init__(self, model: nn.Module, forward_fn: ForwardFn):
        super().__init__()
        self.model, self.forward_fn = model, forward_fn

    def forward(self, batch: Any, carry: Any) -> tuple:
        return self.forward_fn(self.model, batch, carry)
