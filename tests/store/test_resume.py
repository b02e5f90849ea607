"""Exact resume: a run killed with SIGKILL and resumed ends bit-identical to one that never stopped.

Runs are real ``minituner-train`` processes (shuffle and dropout on); ``crash_at_batch.py`` kills
one from inside a training step, so the kill lands mid-epoch, inside a gradient-accumulation
window or just after an epoch's checkpoint, as the case asks.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from minituner.apps.runner import run_app
from minituner.store.run_directory import LOCK_FILE
from minituner.training.pipeline import train as run_train_here
from tests.helpers import compose_config, save_tiny_base

HERE = Path(__file__).parent
# 2 epochs of 20 batches, dropout in the model and the adapters, a seeded shuffle
RUN = [
    "model=tiny",
    "model.dropout=0.1",
    "regime.max_epochs=2",
    "trainer.limit_train_batches=20",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]
VARYING = {"train_seconds", "adapter_dir"}  # what may differ between two identical runs


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return save_tiny_base(tmp_path_factory.mktemp("base") / "tiny", dropout=0.1)


def train(tmp_path: Path, base: Path, *overrides: str, crash_at: int | str | None = None):
    args = [f"paths.outputs_dir={tmp_path}/outputs", f"base.path={base}", *RUN, *overrides]
    if crash_at is None:
        return run_app("train", *args, timeout=300)
    command = [sys.executable, str(HERE / "crash_at_batch.py"), str(crash_at), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def resume_here(run_dir: Path, base: Path, *overrides: str) -> dict:
    """``minituner-train ... resume=<run dir>`` composed as the CLI composes it, run in this process.

    The kill needs a process of its own; the resumption does not (the CLI's own handling of
    ``resume=`` is what the exit-code tests below run as processes).
    """
    args = [f"base.path={base}", *RUN, f"resume={run_dir}", *overrides]
    return run_train_here(compose_config(args, run_dir.parent, run=run_dir.name))


def output(done: subprocess.CompletedProcess) -> str:
    return done.stdout + done.stderr  # Hydra logs to stdout, Python warnings go to stderr


def metrics(run_dir: Path) -> dict:
    return {k: v for k, v in json.loads((run_dir / "metrics.json").read_text()).items() if k not in VARYING}


def snapshot(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name not in ("train.log", LOCK_FILE)  # Hydra's log, the lock's holder
    }


def steps(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, base) -> Path:
    """An uninterrupted run (checkpoints every 3 steps, as the crashed runs take them)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    done = train(run_dir.parent, base, f"hydra.run.dir={run_dir}", "callbacks.checkpoint.every_n_steps=3")
    assert done.returncode == 0, output(done)
    return run_dir


EVERY_3 = "callbacks.checkpoint.every_n_steps=3"


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, base) -> Callable[[int, Path], Path]:
    """A copy, at ``into``, of a run (checkpoints every 3 steps) SIGKILLed at batch N; each N is run once a module."""
    originals: dict[int, Path] = {}

    def copy(crash_at: int, into: Path) -> Path:
        if crash_at not in originals:
            run_dir = tmp_path_factory.mktemp(f"killed-at-{crash_at}") / "run"
            killed = train(run_dir.parent, base, f"hydra.run.dir={run_dir}", EVERY_3, crash_at=crash_at)
            assert killed.returncode == -9, output(killed)  # SIGKILL: nothing ran after the kill
            originals[crash_at] = run_dir
        shutil.copytree(originals[crash_at], into)
        return into

    return copy


@pytest.mark.parametrize(
    "crash_at,overrides,expected_checkpoints",
    [
        (13, ["callbacks.checkpoint.every_n_steps=3"], ["step-00000009", "step-00000012"]),  # mid-epoch
        (25, ["callbacks.checkpoint.every_n_steps=50"], ["step-00000020"]),  # right after the epoch's checkpoint
    ],
    ids=["mid-epoch", "next-epoch"],
)
def test_a_killed_run_resumes_to_the_same_adapter_and_metrics(
    tmp_path, base, reference, crash_at, overrides, expected_checkpoints, caplog
):
    run_dir = tmp_path / "run"
    killed = train(tmp_path, base, f"hydra.run.dir={run_dir}", *overrides, crash_at=crash_at)
    assert killed.returncode == -9  # SIGKILL: nothing ran after the kill
    assert not (run_dir / "metrics.json").exists() and steps(run_dir) == expected_checkpoints

    resume_here(run_dir, base, *overrides)
    assert f"resuming from {run_dir}/checkpoints/{expected_checkpoints[-1]}" in caplog.text
    assert metrics(run_dir) == metrics(reference)  # adapter_sha256 included: bit-identical weights


def test_a_kill_inside_a_gradient_accumulation_window_resumes_exactly(tmp_path, base):
    accumulate = ["trainer.accumulate_grad_batches=3", "callbacks.checkpoint.every_n_steps=1"]
    reference = train(tmp_path, base, f"hydra.run.dir={tmp_path}/reference", *accumulate)
    assert reference.returncode == 0, output(reference)
    run_dir = tmp_path / "run"
    # windows are batches 0-2, 3-5, 6-8, 9-11: batch 10 is inside the fourth
    killed = train(tmp_path, base, f"hydra.run.dir={run_dir}", *accumulate, crash_at=10)
    assert killed.returncode == -9
    assert steps(run_dir) == ["step-00000002", "step-00000003"]  # taken at window ends only

    resume_here(run_dir, base, *accumulate)
    assert metrics(run_dir) == metrics(tmp_path / "reference")


def test_a_run_stopped_by_sigterm_saved_a_checkpoint_and_resumes_exactly(tmp_path, base, reference):
    run_dir = tmp_path / "run"
    stopped = train(
        tmp_path, base, f"hydra.run.dir={run_dir}", "callbacks.checkpoint.every_n_steps=3", crash_at="13:SIGTERM"
    )
    assert stopped.returncode == 143, output(stopped)
    assert json.loads((run_dir / "metrics.json").read_text())["stopped_by_signal"] == "SIGTERM"
    assert steps(run_dir) == ["step-00000012", "step-00000014"]  # the step in flight finished, then saved

    resume_here(run_dir, base, "callbacks.checkpoint.every_n_steps=3")
    assert metrics(run_dir) == metrics(reference)


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one_with_a_warning(
    tmp_path, base, reference, caplog, killed_run
):
    run_dir = killed_run(13, tmp_path / "run")
    tensors = run_dir / "checkpoints/step-00000012/tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-10])  # torn

    resume_here(run_dir, base, "callbacks.checkpoint.every_n_steps=3")
    assert "skipping a checkpoint" in caplog.text and "does not match the SHA-256" in caplog.text
    assert "resuming from" in caplog.text and "step-00000009" in caplog.text
    assert metrics(run_dir) == metrics(reference)


def test_only_corrupt_checkpoints_is_an_error_not_a_fresh_start(tmp_path, base, killed_run):
    run_dir = killed_run(7, tmp_path / "run")
    for state in (run_dir / "checkpoints").glob("*/state.json"):
        state.write_text("{not json")
    before = snapshot(run_dir)

    resumed = train(tmp_path, base, f"resume={run_dir}", "callbacks.checkpoint.every_n_steps=3")
    assert resumed.returncode == 2
    assert "no usable checkpoint" in output(resumed) and "state.json is not valid JSON" in output(resumed)
    assert snapshot(run_dir) == before


def test_resuming_with_a_changed_config_lists_the_changes_and_changes_nothing(tmp_path, base, killed_run):
    run_dir = killed_run(7, tmp_path / "run")
    before = snapshot(run_dir)

    resumed = train(tmp_path, base, f"resume={run_dir}", "lora.r=4", "seed=7")
    assert resumed.returncode == 2
    assert "the config differs" in output(resumed)
    assert "lora.r: 8 in the checkpoint, 4 now" in output(resumed)
    assert "seed: 1234 in the checkpoint, 7 now" in output(resumed)
    assert snapshot(run_dir) == before


def test_resuming_a_finished_run_does_nothing(base, reference, caplog):
    before = snapshot(reference)
    resume_here(reference, base, "callbacks.checkpoint.every_n_steps=3")
    assert "the run has finished" in caplog.text
    assert snapshot(reference) == before


def test_resuming_a_directory_that_is_not_a_run_is_an_error(tmp_path, base):
    resumed = train(tmp_path, base, f"resume={tmp_path}/nowhere")
    assert resumed.returncode == 2
    assert f"resume='{tmp_path}/nowhere'" in output(resumed) and "is not a run directory" in output(resumed)


def _stopped(pid: int) -> bool:
    """Whether the process is stopped (SIGSTOP): state ``T`` in ``/proc/<pid>/stat``."""
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "T"


def test_two_resumptions_of_one_run_one_runs_and_the_other_is_refused_naming_it(tmp_path, base, reference, killed_run):
    run_dir = killed_run(13, tmp_path / "run")
    args = [f"paths.outputs_dir={tmp_path}/outputs", f"base.path={base}", *RUN, f"resume={run_dir}", EVERY_3]
    # The first pauses itself (SIGSTOP) inside a training step, holding the run directory's lock.
    first = subprocess.Popen(
        [sys.executable, str(HERE / "crash_at_batch.py"), "20:SIGSTOP", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not _stopped(first.pid):
            assert first.poll() is None and time.monotonic() < deadline, "the first resumption never paused"
            time.sleep(0.2)
        second = run_app("train", *args, timeout=120)
        assert second.returncode == 2, output(second)
        assert f"{run_dir} is in use by another minituner process: pid {first.pid} on " in output(second)
        assert "resuming from" not in output(second)  # refused before any work
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr[-3000:]
    assert metrics(run_dir) == metrics(reference)  # the survivor ends bit-identical to an uninterrupted run
