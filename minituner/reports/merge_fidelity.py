"""What merging an adapter into a quantized base costs, measured: logits, task, drift, changed codes.

Two ways to end with one quantized model and no adapter: merge into the quantized weights
(dequantize, add the update, quantize again; what PEFT does for a 4-bit base) or merge into the
full-precision base and quantize the result. Both are compared with what QLoRA serves unmerged:
the adapter on the quantized base.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import lightning as L
import torch
from torch import nn

from minituner.lora.adapter_io import load_adapter
from minituner.lora.layer import QuantizedMergeWarning
from minituner.lora.merge import MERGE_TARGETS, merged_quantized
from minituner.model.precision import cast_frozen_base
from minituner.quant.linear import changed_block_share, quantize_model
from minituner.store.base_cache import LoadedBase
from minituner.training.evaluation import evaluate_on_test_split
from minituner.training.metrics import relative_drift

UNMERGED = "unmerged"


@torch.no_grad()
def logits_of(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """Eval-mode logits (no dropout)."""
    model.eval()
    return model(inputs)[0]


def compare_logits(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> dict:
    """Mean |a - b| over the scored positions, relative to mean |a|, and top-1 agreement."""
    diff = (a - b).abs()[mask].mean().item()
    scale = a.abs()[mask].mean().item()
    agree = (a.argmax(-1) == b.argmax(-1))[mask].float().mean().item()
    return {"mean_abs_diff": diff, "mean_abs_logit": scale, "relative_diff": diff / scale, "top1_agreement": agree}


def base_copy(base: LoadedBase, scheme: str = "none", dtype: str = "float32", adapter_dir: Path | None = None):
    """A copy of the base: linears quantized to ``scheme``, the rest in ``dtype``, an adapter on it if given.

    Quantized weights are checked for NaN/Inf whenever they are dequantized.
    """
    model = copy.deepcopy(base.model)
    if scheme != "none":
        quantize_model(model, scheme, check_dequantized=True)
    cast_frozen_base(model, dtype)
    if adapter_dir is not None:
        load_adapter(model, adapter_dir, base.weights_sha256)
    return model


def merge_fidelity(
    base: LoadedBase,
    adapter_dir: Path,
    scheme: str,
    batch: tuple[torch.Tensor, torch.Tensor],
    datamodule: L.LightningDataModule,
    base_regular_ppl: float,
) -> dict[str, dict]:
    """The adapter unmerged on the ``scheme`` base, and merged into it both ways (``MERGE_TARGETS``).

    Args:
        base: The full-precision base the adapter was trained on.
        adapter_dir: The adapter.
        scheme: The quantization scheme of the served base.
        batch: Input ids and the mask of their scored positions, for the logit comparison.
        datamodule: Its test split gives the task accuracy and the control perplexity.
        base_regular_ppl: The full-precision base's control perplexity (the drift's reference).

    Returns:
        Per row (``unmerged``, then each merge target): the logit comparison with the unmerged
        model, ``irregular_acc``, ``regular_ppl``, ``regular_ppl_drift`` and
        ``changed_block_share`` (quantization blocks whose codes differ from the base's).
    """
    inputs, mask = batch
    unmerged = base_copy(base, scheme, adapter_dir=adapter_dir)
    reference = logits_of(unmerged, inputs)
    models = {UNMERGED: unmerged}
    with warnings.catch_warnings():  # measuring the rounding is the point here
        warnings.simplefilter("ignore", QuantizedMergeWarning)
        for merge_into in MERGE_TARGETS:
            models[merge_into], _ = merged_quantized(base.model, adapter_dir, scheme, merge_into, base.weights_sha256)
    rows = {}
    for label, model in models.items():
        metrics = evaluate_on_test_split(model, datamodule)
        rows[label] = compare_logits(reference, logits_of(model, inputs), mask) | {
            "irregular_acc": metrics["irregular_acc"],
            "regular_ppl": metrics["regular_ppl"],
            "regular_ppl_drift": relative_drift(base_regular_ppl, metrics["regular_ppl"]),
            "changed_block_share": changed_block_share(unmerged, model),
        }
    return rows
