"""Launcher configs: a parallel local sweep runs for real; the SLURM config composes and builds its launcher."""

from __future__ import annotations

import json

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate

from minituner.apps.runner import run_app
from minituner.config.shipped import CONF_DIR
from tests.helpers import QUICK, read_csv

pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")


def test_parallel_launcher_runs_the_jobs_in_worker_processes_and_reports_them(tmp_path, seed_tiny_base):
    seed_tiny_base(tmp_path)
    done = run_app("train", "-m", f"paths.outputs_dir={tmp_path}", *QUICK, "hydra/launcher=parallel", "lora.r=2,4")

    assert done.returncode == 0, done.stderr[-3000:]
    assert "Joblib.Parallel(n_jobs=2" in done.stdout + done.stderr  # the plugin, not the basic launcher
    (sweep,) = (tmp_path / "multiruns").iterdir()
    rows = read_csv(sweep / "sweep.csv")
    assert [(r["lora.r"], r["status"]) for r in rows] == [("2", "completed"), ("4", "completed")]
    assert int(rows[1]["trainable_params"]) == 2 * int(rows[0]["trainable_params"])
    jobs = [sweep / row["directory"] for row in rows]
    assert all((job / "adapter/adapter_model.safetensors").is_file() for job in jobs)  # whole run directories
    bases = {json.loads((job / "metrics.json").read_text())["base_sha256"] for job in jobs}
    assert len(bases) == 1 and len(list((tmp_path / "bases").glob("*/config.json"))) == 1  # one base built for both
    launcher = yaml.safe_load((sweep / "multirun.yaml").read_text())["hydra"]["launcher"]
    assert launcher["_target_"].endswith("JoblibLauncher") and launcher["n_jobs"] == 2


def test_slurm_config_composes_onto_the_submitit_schema_and_builds_its_launcher(tmp_path):
    overrides = ["hydra/launcher=slurm", "hydra.launcher.partition=cpu", f"paths.outputs_dir={tmp_path}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)

    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.timeout_min, launcher.cpus_per_task) == ("cpu", 60, 4)
    assert launcher.signal_delay_s > 0  # SLURM warns the job (SIGUSR2) before its time limit
    assert type(instantiate(launcher)).__name__ == "SlurmLauncher"


def test_a_key_the_launcher_does_not_know_is_refused_by_name(tmp_path):
    refused = pytest.raises(ConfigCompositionException, match="hydra.launcher.n_job")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"), refused:
        compose(config_name="train", overrides=["hydra/launcher=parallel", "hydra.launcher.n_job=3"])
