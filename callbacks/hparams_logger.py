"""TensorBoard's hparams view: each run's regime, rank and quant scheme beside its final metrics.

Logged once the run's test metrics exist, so the HPARAMS tab of ``tensorboard --logdir`` over a
sweep directory compares every run of the sweep in one table.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import OmegaConf

from minituner.training.run_hooks import RunContext, RunHooks

HPARAM_KEYS = {
    "regime": "regime.name",
    "quant": "quant.scheme",
    "base_dtype": "base.dtype",
    "model": "model.name",
    "lora_r": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_targets": "lora.target_modules",
    "lr": "regime.optimizer.lr",
    "weight_decay": "regime.optimizer.weight_decay",
    "replay_weight": "regime.replay.weight",
    "seed": "seed",
    "base_seed": "base.seed",
}
METRIC_KEYS = ("irregular_acc", "label_acc", "regular_ppl", "regular_ppl_drift", "trainable_params", "train_seconds")


def run_hparams(cfg) -> dict:
    """The swept settings of a run as flat scalars/strings (TensorBoard takes no lists)."""
    values = {name: OmegaConf.select(cfg, key) for name, key in HPARAM_KEYS.items()}
    if cfg.regime.trainable != "lora":
        values = {k: v for k, v in values.items() if not k.startswith("lora_")}
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in values.items() if v is not None}


class HparamsLogger(L.Callback, RunHooks):
    """Log ``run_hparams`` with the final metrics (as ``hparams/<metric>``) to TensorBoard."""

    def on_run_end(self, run: RunContext, metrics: dict) -> None:
        final = {f"hparams/{k}": float(metrics[k]) for k in METRIC_KEYS if isinstance(metrics.get(k), int | float)}
        for logger in run.trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(run_hparams(run.cfg), final)
                logger.experiment.flush()
