"""The training objective: cross-entropy per target token, with label smoothing, padding left out."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from core.tokenizers import PAD


def token_losses(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> tuple[Tensor, Tensor, int]:
    """logits (B, T, V), targets (B, T) -> the mean loss to optimise per target token (with label smoothing),
    the summed plain negative log-likelihood (nats, detached) and the number of target tokens (not PAD)."""
    logits = logits.float().reshape(-1, logits.size(-1))  # (B*T, V)
    targets = targets.reshape(-1)  # (B*T,)
    n_tokens = int((targets != PAD).sum())
    nll = F.cross_entropy(logits, targets, ignore_index=PAD, reduction="sum")
    loss = nll if label_smoothing == 0 else F.cross_entropy(logits, targets, ignore_index=PAD, reduction="sum",
                                                            label_smoothing=label_smoothing)
    return loss / max(1, n_tokens), nll.detach(), n_tokens
