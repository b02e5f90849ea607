"""Loggers beside TensorBoard that need a word of setup: MLflow on its local file store."""

from __future__ import annotations

import os

from lightning.pytorch.loggers import MLFlowLogger


def local_mlflow_logger(
    tracking_uri: str, experiment_name: str = "minituner", run_name: str | None = None, log_model: bool = False
) -> MLFlowLogger:
    """Lightning's ``MLFlowLogger`` on MLflow's local file store: a directory, no server.

    MLflow 3 refuses its file store unless ``MLFLOW_ALLOW_FILE_STORE`` is set (it recommends a
    database); a local directory is what an offline experiment log wants, so this opts in, unless
    the environment already says otherwise.

    Args:
        tracking_uri: The store's directory (``outputs/mlruns``).
        experiment_name: The MLflow experiment every run goes into.
        run_name: The MLflow run's name (None: MLflow picks one).
        log_model: Let Lightning log checkpoints as MLflow artifacts.
    """
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(
        experiment_name=experiment_name, run_name=run_name, tracking_uri=tracking_uri, log_model=log_model
    )
