"""SIGTERM / SIGINT (/ SIGUSR2) during training: the step finishes, the artifacts are saved, the exit code says why."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from minituner.callbacks.graceful_stop import GracefulStop
from safetensors.torch import load_file

from tests.helpers import QUICK, cached_bases, read_metrics, save_tiny_base, start_train

LONG = [o for o in QUICK if not o.startswith("trainer.max_steps")] + ["trainer.max_steps=1000000"]


def start_and_signal(tmp_path: Path, run: str, signum: signal.Signals, *overrides: str) -> subprocess.Popen:
    """Start a run that would train for a very long time, signal it once training has begun."""
    process = start_train(tmp_path, run, *overrides)
    checkpoints = tmp_path / run / "checkpoints"
    deadline = time.monotonic() + 120
    # The first checkpoint (step 50) proves training is some steps in, however loaded the machine is
    # (a fixed sleep after the logger's first file was not enough under two test workers).
    while not checkpoints.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signum)
    process.wait(timeout=120)
    return process


def test_sigterm_finishes_the_step_saves_the_adapter_and_exits_143(tmp_path):
    base = save_tiny_base(tmp_path / "base")  # what it learnt does not matter here, only its shape

    process = start_and_signal(tmp_path, "run", signal.SIGTERM, f"base.path={base}", "evaluate_base=false", *LONG)

    assert process.returncode == 128 + signal.SIGTERM, process.stderr.read()[-2000:]
    metrics = read_metrics(tmp_path / "run")
    assert metrics["stopped_by_signal"] == "SIGTERM" and 0 < metrics["train_steps"] < 1_000_000
    assert "irregular_acc" in metrics  # tested as usual after the early end
    adapter = load_file(tmp_path / "run/adapter/adapter_model.safetensors")  # whole and loadable
    assert adapter and metrics["adapter_sha256"]
    assert json.loads((tmp_path / "run/manifest.json").read_text())["status"] == "interrupted"


def test_an_interrupted_pretraining_caches_no_base(tmp_path):
    process = start_and_signal(tmp_path, "pre", signal.SIGINT, "regime=pretrain", *LONG)

    assert process.returncode == 128 + signal.SIGINT
    assert not cached_bases(tmp_path)
    manifest = json.loads((tmp_path / "pre/manifest.json").read_text())
    assert manifest["status"] == "failed"
    assert manifest["error"]["message"].startswith("pretraining stopped by SIGINT at step")
    assert "the base is not cached" in (tmp_path / "pre/train.log").read_text()


def test_sigusr2_the_slurm_launchers_time_limit_warning_is_a_graceful_stop_too():
    stop = GracefulStop()
    previous = stop._install()
    try:
        os.kill(os.getpid(), signal.SIGUSR2)  # handled before os.kill returns (main thread)
        assert stop.run_metrics() == {"stopped_by_signal": "SIGUSR2"}
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
