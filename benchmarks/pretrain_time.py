"""Time pretraining the default base from a cold cache, then fully fine-tuning it.

Runs ``minituner-train regime=pretrain`` and then ``regime=full`` as subprocesses (the way a
user runs them) in a fresh temporary outputs directory, and prints one JSON object with the
wall-clock seconds of each and the metrics they wrote; ``--write`` also writes
``benchmarks/results/pretrain_time.json`` and the generated ``pretrain_time.md``.
Goal: pretraining <= 120 s on 2 cores.

    .venv/bin/python benchmarks/pretrain_time.py [--write]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from cli_runs import timed_run
from result_files import markdown_table, write_results

GOAL_SECONDS = 120


def report(result: dict) -> str:
    """Wall-clock seconds and the figures each run wrote."""
    pretrain, full = result["pretrain"], result["full_finetune"]
    rows = [
        ["`regime=pretrain`", f"{pretrain['wall_seconds']} s", pretrain["steps"], f"{pretrain['irregular_acc']:.2%}"],
        ["`regime=full`", f"{full['wall_seconds']} s", full["steps"], f"{full['irregular_acc']:.2%}"],
    ]
    verdict = "met" if pretrain["meets_goal"] else "not met"
    return (
        f"{markdown_table(['run', 'wall clock', 'steps', 'irregular-verb accuracy'], rows)}\n\n"
        f"Pretraining goal <= {GOAL_SECONDS} s: {verdict}. Control perplexity of the base "
        f"{pretrain['regular_ppl']}; after full fine-tuning {full['regular_ppl']} "
        f"(drift {full['regular_ppl_drift']:+.2%})."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write results/pretrain_time.{json,md}")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outputs = Path(tmp)
        pretrain_s, pretrain = timed_run(outputs, "pretrain", "regime=pretrain")
        full_s, full = timed_run(outputs, "full", "regime=full")
    result = {
        "benchmark": "pretrain_time",
        "pretrain": {
            "wall_seconds": round(pretrain_s, 1),
            "train_seconds": pretrain["train_seconds"],
            "steps": pretrain["train_steps"],
            "goal_seconds": GOAL_SECONDS,
            "meets_goal": pretrain_s <= GOAL_SECONDS,
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
    }
    if args.write:
        write_results("pretrain_time", result, "Pretraining the default base from a cold cache", report(result))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
