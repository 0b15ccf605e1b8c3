"""What training does, as one dataclass (steps, learning-rate schedule, regularisation, validation, averaging,
seed), and the learning-rate schedule it describes."""
from __future__ import annotations

import math
from dataclasses import dataclass

from core.errors import MAX_SEED


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
              "ema_decay": (0, 1, False, True), "snapshots": (0,), "seed": (0, MAX_SEED)}
    ORDER = [("min_lr", "lr")]  # the schedule decays from lr to min_lr: above it, the rate would rise


def learning_rate(config: TrainConfig, step: int, plateau_scale: float = 1.0) -> float:
    """The rate at update `step`: linear warm-up, then cosine decay to min_lr, or constant times the plateau
    scale (which shrinks on validations that do not improve)."""
    warm = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps > 0 else 1.0
    if config.schedule == "cosine":
        progress = min(1.0, max(0, step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
        return warm * (config.min_lr + (config.lr - config.min_lr) * 0.5 * (1 + math.cos(math.pi * progress)))
    return warm * config.lr * plateau_scale
