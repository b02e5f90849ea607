"""Time the main job from a cold cache: pretrain the default base, then fully fine-tune it.

Runs ``minituner-train regime=pretrain`` and then ``regime=full`` as subprocesses (the way a
user runs them) in a fresh temporary outputs directory, and prints one JSON object with the
wall-clock seconds of each and the metrics they wrote. Goal: pretraining <= 120 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from cli_runs import timed_run


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outputs = Path(tmp)
        pretrain_s, pretrain = timed_run(outputs, "pretrain", "regime=pretrain")
        full_s, full = timed_run(outputs, "full", "regime=full")
    print(
        json.dumps(
            {
                "benchmark": "pretrain_time",
                "cpu_count": os.cpu_count(),
                "pretrain": {
                    "wall_seconds": round(pretrain_s, 1),
                    "train_seconds": pretrain["train_seconds"],
                    "steps": pretrain["train_steps"],
                    "goal_seconds": 120,
                    "meets_goal": pretrain_s <= 120,
                    "irregular_acc": pretrain["irregular_acc"],
                    "regular_ppl": round(pretrain["regular_ppl"], 4),
                },
                "full_finetune": {
                    "wall_seconds": round(full_s, 1),
                    "steps": full["train_steps"],
                    "irregular_acc": full["irregular_acc"],
                    "base_irregular_acc": full["base_irregular_acc"],
                    "regular_ppl": round(full["regular_ppl"], 4),
                    "regular_ppl_drift": round(full["regular_ppl_drift"], 4),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
