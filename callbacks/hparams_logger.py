"""Each run's settings beside its final metrics, in every logger: TensorBoard's hparams view and the others.

Logged once the run's test metrics exist, so the HPARAMS tab of ``tensorboard --logdir`` over a
sweep directory compares every run of the sweep in one table. MLflow also gets the run's
artifacts (``metrics.json``, ``memory.json``, ``manifest.json``, the adapter or model) and the
run directory's name as the run's name; any other logger (W&B, CSV) its params and final metrics.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import MLFlowLogger, TensorBoardLogger
from minituner.callbacks.run_hooks import RunContext, RunHooks
from omegaconf import OmegaConf

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
        hparams = run_hparams(run.cfg)
        for logger in run.trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(hparams, final)
                logger.experiment.flush()
                continue
            logger.log_hyperparams(hparams)
            logger.log_metrics(final, step=run.trainer.global_step)
            if isinstance(logger, MLFlowLogger):
                log_mlflow_artifacts(logger, run.run_dir, metrics)


RUN_FILES = ("metrics.json", "memory.json", "manifest.json")


def log_mlflow_artifacts(logger: MLFlowLogger, run_dir: Path, metrics: dict) -> None:
    """The run's JSON files and its product (adapter or model directory) as MLflow artifacts."""
    client, run_id = logger.experiment, logger.run_id
    client.set_tag(run_id, "mlflow.runName", run_dir.name)
    client.set_tag(run_id, "minituner.run_dir", str(run_dir))
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            client.log_artifact(run_id, str(run_dir / name))
    for key in ("adapter_dir", "model_dir"):
        if key in metrics:
            client.log_artifacts(run_id, metrics[key], artifact_path=key.removesuffix("_dir"))
