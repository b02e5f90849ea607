"""What data-parallel training must keep equal on every rank, and the check that it did."""

from __future__ import annotations

import hashlib

import lightning as L
import torch
from torch import nn


def trainable_sha256(model: nn.Module) -> str:
    """SHA-256 over the names and bytes of the trainable tensors (what DDP must keep equal on every rank)."""
    digest = hashlib.sha256()
    for name, parameter in sorted(model.named_parameters()):
        if parameter.requires_grad:
            digest.update(name.encode())
            digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def rank_digests(trainer: L.Trainer, model: nn.Module) -> list[str]:
    """Every rank's :func:`trainable_sha256`, rank 0 first; an error if the ranks disagree."""
    digests: list[str | None] = [None] * trainer.world_size
    torch.distributed.all_gather_object(digests, trainable_sha256(model))
    if len(set(digests)) > 1:
        raise RuntimeError(f"the ranks' trained weights differ after fit: {digests}")
    return digests
