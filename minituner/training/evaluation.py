"""The test-split metrics of a model outside a training run (merged models, comparisons)."""

from __future__ import annotations

import lightning as L
from torch import nn

from minituner.training.module import MiniGPTModule


def evaluate_on_test_split(model: nn.Module, datamodule: L.LightningDataModule) -> dict[str, float]:
    """``trainer.test`` of ``model`` on ``datamodule``'s test split, quietly, on the CPU in fp32.

    Returns:
        The ``test/*`` metrics without their prefix (``irregular_acc``, ``regular_ppl``, ``ppl``, ``loss``).
    """
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        precision="32-true",
        logger=False,
        inference_mode=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.test(MiniGPTModule(model, optimizer=None), datamodule=datamodule, verbose=False)
    return {k.removeprefix("test/"): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")}
