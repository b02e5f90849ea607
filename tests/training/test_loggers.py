"""The usual loggers beside TensorBoard: MLflow's local file store and W&B offline, as a user combines them."""

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from minituner.config.validation import ConfigError, logger_problems, validate_config
from minituner.training.pipeline import train
from tests.helpers import QUICK, compose_config, save_tiny_base


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory) -> tuple[Path, dict, Path]:
    """A quick LoRA run with logger=[tensorboard,mlflow,wandb]: its directory, metrics and MLflow store."""
    tmp_path = tmp_path_factory.mktemp("loggers")
    base = save_tiny_base(tmp_path / "base")
    cfg = compose_config(
        [
            *QUICK,
            "regime=lora",
            f"base.path={base}",
            "logger=[tensorboard,mlflow,wandb]",
            "trainer.log_every_n_steps=1",
        ],
        tmp_path,
    )
    metrics = train(cfg)
    return Path(cfg.paths.output_dir), metrics, Path(cfg.paths.outputs_dir) / "mlruns"


def test_mlflow_records_the_params_the_metrics_and_the_artifacts_of_the_run(logged_run):
    run_dir, metrics, store = logged_run
    client = MlflowClient(str(store))
    experiment = client.get_experiment_by_name("minituner")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == run_dir.name and run.data.tags["minituner.run_dir"] == str(run_dir)
    expected = {"regime": "lora", "quant": "none", "base_dtype": "float32", "lora_r": "8"}
    assert expected.items() <= run.data.params.items()
    assert run.data.metrics["hparams/irregular_acc"] == pytest.approx(metrics["irregular_acc"])
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 3  # every step
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "memory.json", "manifest.json", "adapter"} <= artifacts
    adapter = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= adapter
    stored = Path(run.info.artifact_uri.removeprefix("file://")) / "metrics.json"
    assert json.loads(stored.read_text()) == json.loads((run_dir / "metrics.json").read_text())


def test_wandb_writes_an_offline_run_inside_the_run_directory(logged_run):
    run_dir, _, _ = logged_run
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline.glob("*.wandb"))  # the run's records, waiting for an explicit `wandb sync`


def test_a_logger_whose_package_is_missing_is_a_config_error(make_cfg, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    cfg = make_cfg("logger=[tensorboard,mlflow]")
    assert logger_problems(cfg) == [
        "logger.mlflow needs the mlflow package, which is not installed: "
        "pip install 'minituner[mlflow]' (or drop it: logger=tensorboard)"
    ]
    with pytest.raises(ConfigError, match="logger.mlflow needs the mlflow package"):
        validate_config(cfg)
