"""An exponential moving average of a model's weights: what validation sees and checkpoints hold as "model"
when a run keeps one (`TrainConfig.ema_decay`); the raw weights travel in the trainer state for --resume."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn


class WeightAverage:
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
        params = list(self.model.parameters())
        raw = [p.detach().clone() for p in params]
        with torch.no_grad():
            torch._foreach_copy_(params, self.average)
        try:
            yield raw
        finally:
            with torch.no_grad():
                torch._foreach_copy_(params, raw)
