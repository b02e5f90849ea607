"""Learning-rate schedules, built from config as partials that receive the optimizer."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(optimizer: Optimizer, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.1) -> LambdaLR:
    """Linear warm-up to the base learning rate, then cosine decay to ``min_lr_ratio`` of it.

    Args:
        optimizer: The optimizer whose learning rates are scaled.
        total_steps: Optimizer steps of the whole run (the module passes the trainer's estimate).
        warmup_steps: Steps of linear warm-up; capped at ``total_steps``.
        min_lr_ratio: Final learning rate as a fraction of the base one.
    """
    total_steps = max(1, int(total_steps))
    warmup_steps = min(warmup_steps, total_steps)

    def scale(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, scale)
