"""Who may use a directory: the base.path and hydra.run.dir checks (exit 2, nothing written) and the run lock."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from minituner.apps.run_dir_guard import RunDirectoryGuard
from minituner.config.errors import ConfigError
from minituner.config.shipped import CONF_DIR
from minituner.config.validation import validate_config
from minituner.store.base_cache import load_base
from minituner.store.run_directory import LOCK_FILE, RunDirectoryBusy, lock_holder, run_lock
from minituner.training.pipeline import train
from tests.helpers import QUICK, compose_config, run_train, users_directory


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def output(done) -> str:
    return done.stdout + done.stderr


def test_base_path_at_a_users_directory_exits_2_before_any_training(tmp_path):
    mine = users_directory(tmp_path / "mine")
    before = snapshot(mine)
    done = run_train(tmp_path, "run", "model=tiny", f"base.path={mine}", timeout=120)
    assert done.returncode == 2, output(done)
    assert f"base.path='{mine}' is not a base directory: it has no model.safetensors" in output(done)
    assert snapshot(mine) == before and sorted(p.name for p in mine.iterdir()) == ["notes.md", "sub"]
    assert not (tmp_path / "outputs").exists()  # no base was pretrained into the cache
    assert not (tmp_path / "run").exists()  # and Hydra wrote nothing either


def test_a_run_directory_that_holds_a_users_files_exits_2_and_nothing_is_written(tmp_path):
    mine = users_directory(tmp_path / "mine")
    before = snapshot(mine)
    done = run_train(tmp_path, "mine", "model=tiny", timeout=120)
    assert done.returncode == 2, output(done)
    assert "is not empty and is not a minituner run (it holds notes.md, sub)" in output(done)
    assert snapshot(mine) == before and sorted(p.name for p in mine.iterdir()) == ["notes.md", "sub"]  # no .hydra/


def hydra_config(tmp_path: Path, *overrides: str):
    """The whole config as Hydra composes it for ``minituner-train``, ``hydra`` node included."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", [f"paths.outputs_dir={tmp_path}/outputs", *overrides], return_hydra_config=True)


def test_the_guard_refuses_another_runs_directory_and_a_held_one(tmp_path, capsys):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra/config.yaml").write_text("{{ torn")
    with pytest.raises(SystemExit) as stop:
        RunDirectoryGuard().on_run_start(config=hydra_config(tmp_path, f"hydra.run.dir={run_dir}", "lora.r=4"))
    assert stop.value.code == 2 and "holds a run whose config cannot be read" in capsys.readouterr().err

    previous = compose_config(["model=tiny"], tmp_path, run="run")
    (run_dir / ".hydra/config.yaml").write_text(json.dumps(_plain(previous)))
    with pytest.raises(SystemExit):
        RunDirectoryGuard().on_run_start(
            config=hydra_config(tmp_path, f"hydra.run.dir={run_dir}", "model=tiny", "lora.r=4")
        )
    err = capsys.readouterr().err
    assert (
        "holds another run, with a different config (lora.r: 8 in that run, 4 now): continue that run with "
        f"resume={run_dir}" in err
    )

    same = hydra_config(tmp_path, f"hydra.run.dir={run_dir}", "model=tiny")
    RunDirectoryGuard().on_run_start(config=same)  # a repeat of the same run: allowed
    with run_lock(run_dir), pytest.raises(SystemExit):
        RunDirectoryGuard().on_run_start(config=same)
    assert f"{run_dir} is in use by another minituner process: pid {os.getpid()}" in capsys.readouterr().err


def _plain(cfg) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def test_a_second_holder_is_refused_at_once_and_named(tmp_path):
    with run_lock(tmp_path / "run"):
        holder = lock_holder(tmp_path / "run")
        assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
        busy = rf"in use by another minituner process: pid {os.getpid()} on "
        with pytest.raises(RunDirectoryBusy, match=busy), run_lock(tmp_path / "run"):
            pass
    assert lock_holder(tmp_path / "run") is None
    assert (tmp_path / "run" / LOCK_FILE).read_text() == ""  # a clean exit leaves no holder behind


def test_a_stale_lock_of_a_dead_process_is_taken_over_with_a_warning(tmp_path, caplog):
    (tmp_path / "run").mkdir()
    stale = {"pid": 999999, "host": "gone", "started": "2026-01-01T00:00:00+00:00", "command": "minituner-train"}
    (tmp_path / "run" / LOCK_FILE).write_text(json.dumps(stale))  # written, never unlocked: its holder died
    assert lock_holder(tmp_path / "run") is None  # nobody holds it
    with caplog.at_level(logging.WARNING), run_lock(tmp_path / "run"):
        assert lock_holder(tmp_path / "run")["pid"] == os.getpid()
    assert "taking over the lock" in caplog.text and "pid 999999 on gone" in caplog.text


def test_a_missing_base_path_is_built_there(tmp_path):
    base_dir = tmp_path / "my_base"
    cfg = compose_config(["model=tiny", "trainer.fast_dev_run=true", f"base.path={base_dir}"], tmp_path)
    metrics = train(cfg)
    assert load_base(base_dir).weights_sha256 == metrics["base_sha256"]
    assert not (tmp_path / "outputs" / "bases").exists()  # not in the cache: where the user asked


def test_a_repeat_in_the_same_directory_is_allowed_and_another_config_is_not(tmp_path, seed_tiny_base):
    seed_tiny_base(tmp_path / "outputs")
    train(compose_config([*QUICK, "regime=full"], tmp_path, run="run"))  # no Hydra: the manifest holds the config
    validate_config(compose_config([*QUICK, "regime=full"], tmp_path, run="run"))  # the same config: a repeat
    other = compose_config([*QUICK, "regime=full", "seed=7"], tmp_path, run="run")
    refused = r"holds another run, with a different config \(.*seed: 1234 in that run, 7 now\): continue that run with"
    with pytest.raises(ConfigError, match=refused):
        validate_config(other)


def test_the_guard_refuses_a_sweep_directory_that_is_not_a_sweep(tmp_path, capsys):
    mine = users_directory(tmp_path / "mine")
    with pytest.raises(SystemExit) as stop:
        RunDirectoryGuard().on_multirun_start(config=hydra_config(tmp_path, f"hydra.sweep.dir={mine}"))
    assert stop.value.code == 2
    assert "is not empty and is not a Hydra sweep (it holds notes.md, sub)" in capsys.readouterr().err
    (mine / "multirun.yaml").write_text("{}")  # an earlier sweep's directory: Hydra adds jobs beside its own
    RunDirectoryGuard().on_multirun_start(config=hydra_config(tmp_path, f"hydra.sweep.dir={mine}"))


def test_the_guard_refuses_a_sweep_whose_job_another_process_holds(tmp_path, capsys):
    """A second sweep into a running sweep's directory stops before Hydra writes into any job of it."""
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}")
    with run_lock(sweep / "0"), pytest.raises(SystemExit) as stop:
        RunDirectoryGuard().on_multirun_start(config=hydra_config(tmp_path, f"hydra.sweep.dir={sweep}"))
    assert stop.value.code == 2
    busy = f"{sweep / '0'} is in use by another minituner process: pid {os.getpid()}"
    assert f"the sweep directory {sweep} has a job running: {busy}" in capsys.readouterr().err
    RunDirectoryGuard().on_multirun_start(config=hydra_config(tmp_path, f"hydra.sweep.dir={sweep}"))  # released
