"""Shared helper of the benchmarks: run ``minituner-train`` as a user would, timed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from minituner.apps.runner import run_app


def timed_run(outputs: Path, name: str, *overrides: str) -> tuple[float, dict]:
    """Run the training app with ``overrides`` under ``outputs``; return (wall seconds, metrics)."""
    run_dir = outputs / name
    started = time.perf_counter()
    run_app("train", f"hydra.run.dir={run_dir}", f"paths.outputs_dir={outputs}", *overrides, timeout=None, check=True)
    return time.perf_counter() - started, json.loads((run_dir / "metrics.json").read_text())
