"""Shared helper of the benchmarks: run ``minituner-train`` as a user would, timed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = str(Path(sys.executable).parent / "minituner-train")


def timed_run(outputs: Path, name: str, *overrides: str) -> tuple[float, dict]:
    """Run the training app with ``overrides`` under ``outputs``; return (wall seconds, metrics)."""
    run_dir = outputs / name
    command = [SCRIPT, f"hydra.run.dir={run_dir}", f"paths.outputs_dir={outputs}", *overrides]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started, json.loads((run_dir / "metrics.json").read_text())
