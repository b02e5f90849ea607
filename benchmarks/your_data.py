"""The shipped instruction example end to end: ``experiment=sentiment``, and the same with weight decay 5.

Runs ``minituner-train experiment=sentiment`` as a user would, in a fresh outputs directory (so the
256-token base, ``base.recipe=pretrain_packed``, is pretrained first and timed), then the same
with ``regime.optimizer.weight_decay=5``, and prints one JSON object: the held-out label accuracy,
the response perplexity and the verb-control perplexity before and after, training time, adapter
bytes. ``--write`` also writes ``benchmarks/results/your_data.json`` and the generated ``.md``.
One run each (seed 1234): a single draw.

    .venv/bin/python benchmarks/your_data.py [--write]      # about 10 min on 2 cores
    .venv/bin/python benchmarks/your_data.py --from-json --write   # the page again from the kept JSON
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from cli_runs import emit_json, timed_run
from result_files import RESULTS, markdown_table, write_results

RUNS = {
    "experiment=sentiment": ["experiment=sentiment"],
    "experiment=sentiment regime.optimizer.weight_decay=5": ["experiment=sentiment", "regime.optimizer.weight_decay=5"],
}
KEPT = ("label_acc", "ppl", "regular_ppl", "regular_ppl_drift", "train_seconds", "train_steps", "adapter_bytes")


def measure() -> dict:
    """Both runs from one cold outputs directory; the base's build as its own row."""
    with tempfile.TemporaryDirectory() as tmp:
        outputs = Path(tmp)
        runs = {}
        for index, (name, overrides) in enumerate(RUNS.items()):
            seconds, metrics = timed_run(outputs, f"run{index}", *overrides)
            runs[name] = {"wall_seconds": round(seconds, 1)} | {
                key: metrics[key] for key in KEPT + tuple(f"base_{k}" for k in KEPT[:3])
            }
        built = json.loads((outputs / "run0" / "base_build" / "metrics.json").read_text())
    return {"base_build": {"train_seconds": built["train_seconds"], "train_steps": built["train_steps"]}, "runs": runs}


def report(result: dict) -> str:
    """One row per run: base -> after for each metric."""
    rows = [
        [
            f"`{name}`",
            f"{run['base_label_acc']:.1%} -> **{run['label_acc']:.1%}**",
            f"{run['base_ppl']:,.3f} -> {run['ppl']:,.3f}",
            f"{run['base_regular_ppl']:,.3f} -> {run['regular_ppl']:,.3f} ({run['regular_ppl_drift']:+.0%})",
            f"{run['train_steps']} steps, {run['train_seconds']:.0f} s",
            f"{run['adapter_bytes']:,} B",
        ]
        for name, run in result["runs"].items()
    ]
    build = result["base_build"]
    header = [
        "run",
        "label accuracy (50 held-out records)",
        "response ppl",
        "control ppl (drift)",
        "training",
        "adapter",
    ]
    return (
        f"{markdown_table(header, rows)}\n\n"
        f"The `minigpt_long` base (`base.recipe=pretrain_packed`) was pretrained first: "
        f"{build['train_steps']} steps, {build['train_seconds']:.0f} s. One run each, seed 1234."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write results/your_data.{json,md}")
    parser.add_argument("--from-json", action="store_true", help="regenerate the page from the kept JSON, run nothing")
    args = parser.parse_args()
    kept = RESULTS / "your_data.json"
    result = json.loads(kept.read_text()) if args.from_json else {"benchmark": "your_data", **measure()}
    if args.write:
        write_results("your_data", result, "Fine-tuning on the shipped instruction example", report(result))
    emit_json(result, None)


if __name__ == "__main__":
    main()
