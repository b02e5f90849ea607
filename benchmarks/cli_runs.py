"""Shared helper of the benchmarks: run ``minituner-train`` as a user would, timed."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from minituner.apps.runner import run_app


def timed_run(outputs: Path, name: str, *overrides: str, env: dict[str, str] | None = None) -> tuple[float, dict]:
    """Run the training app with ``overrides`` under ``outputs`` (``env``: variables added to the child's
    environment); return (wall seconds, metrics)."""
    run_dir = outputs / name
    child_env = os.environ | (env or {})
    started = time.perf_counter()
    run_app(
        "train",
        f"hydra.run.dir={run_dir}",
        f"paths.outputs_dir={outputs}",
        *overrides,
        timeout=None,
        check=True,
        env=child_env,
    )
    return time.perf_counter() - started, json.loads((run_dir / "metrics.json").read_text())


def finished_or_run(outputs: Path, name: str, *overrides: str) -> tuple[float | None, dict]:
    """The metrics of run ``name`` under ``outputs``: read when it already finished (wall None), else run now."""
    finished = outputs / name / "metrics.json"
    if finished.is_file():
        return None, json.loads(finished.read_text())
    return timed_run(outputs, name, *overrides)


def share_cores(jobs: int) -> None:
    """Give each of ``jobs`` concurrent runs cores/jobs torch threads (children inherit OMP_NUM_THREADS)."""
    if jobs > 1:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))


def emit_json(result: dict, json_out: Path | None) -> None:
    """Print ``result`` as JSON, and write it to ``json_out`` too when given."""
    text = json.dumps(result, indent=2)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(text + "\n")
    print(text)
