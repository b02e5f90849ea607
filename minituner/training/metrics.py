"""Evaluation metrics: perplexity, the irregular-verb task accuracy, forgetting drift."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric, Metric
from torchmetrics.text import Perplexity

from minituner.model.minigpt import IGNORE_INDEX


def summed_target_logprob(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum over positions of log p(target), skipping ``IGNORE_INDEX`` targets.

    Args:
        logits: (N, T, V) model outputs.
        targets: (N, T) token ids or ``IGNORE_INDEX``.

    Returns:
        (N,) summed log-probabilities.
    """
    logprobs = F.log_softmax(logits.float(), dim=-1)
    mask = targets != IGNORE_INDEX
    picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (N, T)
    return (picked * mask).sum(dim=-1)


def candidate_preferences(model: torch.nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Whether the model scores the correct candidate above every other one, per item.

    Args:
        model: A MiniGPT (or anything with the same ``forward``).
        inputs: (B, K, T) ids; index 0 holds context + correct candidate, 1..K-1 the others.
        targets: (B, K, T) targets, ``IGNORE_INDEX`` except on the candidate tokens.

    Returns:
        (B,) boolean tensor, True where the correct candidate beats all others (ties lose).
    """
    batch, choices, seq = inputs.shape
    logits, _ = model(inputs.view(batch * choices, seq))
    scores = summed_target_logprob(logits, targets.view(batch * choices, seq)).view(batch, choices)
    return scores[:, 0] > scores[:, 1:].max(dim=1).values


def relative_drift(before: float, after: float) -> float:
    """Relative change ``(after - before) / before``, e.g. of the control perplexity."""
    return (after - before) / before


def evaluation_metrics() -> dict[str, Metric]:
    """Fresh metric objects for one evaluation stage, keyed by the name they are logged under."""
    return {
        "ppl": Perplexity(ignore_index=IGNORE_INDEX),
        "regular_ppl": Perplexity(ignore_index=IGNORE_INDEX),
        "irregular_acc": MeanMetric(),
        "label_acc": MeanMetric(),
    }


# batch kind of a choice dataset -> the accuracy it is logged as
CHOICE_METRICS = {"task": "irregular_acc", "labels": "label_acc"}
