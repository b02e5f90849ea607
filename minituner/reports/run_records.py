"""Figures read back from finished run directories: the per-step loss, the memory snapshots."""

from __future__ import annotations

import json
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def step_losses(run_dir: Path) -> list[float]:
    """The per-step ``train/loss`` values of a run, from its TensorBoard events."""
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    events.Reload()
    return [e.value for e in events.Scalars("train/loss")]


def memory_rows(run_dirs: dict[str, Path]) -> dict[str, dict]:
    """Per labelled run: ledger buckets at step 2, RSS after construction and step 2, CUDA when present."""
    rows = {}
    for label, run_dir in run_dirs.items():
        memory = json.loads((run_dir / "memory.json").read_text())
        built, step2 = memory["snapshots"]["after_construction"], memory["snapshots"]["after_step_2"]
        ledger = step2["ledger"]
        rows[label] = {
            **{b: ledger[b] for b in ("weights", "grads", "adam", "total")},
            "rss_after_construction": built["rss_bytes"],
            "rss_after_step_2": step2["rss_bytes"],
            "training_footprint_rss": step2["rss_bytes"] - built["rss_bytes"],
            "cuda_max_allocated": step2.get("cuda_max_allocated_bytes"),
            "predicted_equals_measured": all(r["equal"] for r in memory["predicted_vs_measured"].values()),
        }
    return rows
