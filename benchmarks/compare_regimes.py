"""Full fine-tuning, LoRA and QLoRA on the irregular subset, from one shared pretrained base.

Runs ``regime=pretrain`` (cold cache), ``regime=full``, ``regime=lora`` and
``experiment=qlora`` (the defaults) the way a user runs them and prints one JSON object: task
accuracy, control drift (forgetting, against the unquantized base), trainable parameters,
checkpoint bytes, the adapter-to-base size ratio and the quantized base's own figures, with the
goals (accuracy >= 95% and >= 60 points over the base, drift <= 5%, for LoRA and QLoRA). Also
draws the validation curves from the runs' TensorBoard events to
``benchmarks/figures/regimes.png``; with ``--write`` also writes ``benchmarks/results/compare_regimes.json``
and the generated ``compare_regimes.md``. One run of each: a single draw (the seed statistics are
``seed_robustness.py``'s).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from cli_runs import timed_run
from result_files import markdown_table, write_results
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

FIGURE = Path(__file__).parent / "figures" / "regimes.png"


def scalars(run_dir: Path, tag: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one scalar across a run's TensorBoard event files."""
    points: dict[int, float] = {}
    for events in sorted((run_dir / "tensorboard").glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            points.update({e.step: e.value for e in accumulator.Scalars(tag)})
    steps = sorted(points)
    return steps, [points[s] for s in steps]


def plot_curves(runs: dict[str, Path], path: Path) -> None:
    """Validation task accuracy and control perplexity per step (step 0: the base), per regime."""
    figure, (accuracy, perplexity) = plt.subplots(1, 2, figsize=(10, 4))
    for label, run_dir in runs.items():
        for axis, tag in ((accuracy, "val/irregular_acc"), (perplexity, "val/regular_ppl")):
            axis.plot(*scalars(run_dir, tag), marker="o", label=label)
    _, (base_ppl, *_) = scalars(next(iter(runs.values())), "val/regular_ppl")
    perplexity.axhline(base_ppl * 1.05, color="grey", linestyle="--", label="base + 5%")
    accuracy.axhline(0.95, color="grey", linestyle=":", label="95%")
    accuracy.set(title="irregular-verb task accuracy (val)", xlabel="optimizer step", ylim=(0, 1.02))
    perplexity.set(title="regular-verb control perplexity (val)", xlabel="optimizer step")
    for axis in (accuracy, perplexity):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def summary(seconds: float, metrics: dict, checkpoint_key: str) -> dict:
    return {
        "wall_seconds": round(seconds, 1),
        "base_irregular_acc": metrics["base_irregular_acc"],
        "irregular_acc": metrics["irregular_acc"],
        "base_regular_ppl": round(metrics["base_regular_ppl"], 4),
        "regular_ppl": round(metrics["regular_ppl"], 4),
        "regular_ppl_drift": round(metrics["regular_ppl_drift"], 4),
        "trainable_params": metrics["trainable_params"],
        "checkpoint_bytes": metrics[checkpoint_key],
        "base_bytes": metrics["base_bytes"],
    }


def report(result: dict) -> str:
    """The generated markdown: one row per regime."""
    rows = [
        [
            name,
            f"{run['wall_seconds']:.0f} s",
            f"{run['trainable_params']:,}",
            f"{run['checkpoint_bytes']:,} B",
            f"{100 * run['irregular_acc']:.2f}% (base {100 * run['base_irregular_acc']:.2f}%)",
            f"{run['regular_ppl']:.4f} ({100 * run['regular_ppl_drift']:+.2f}%; base {run['base_regular_ppl']:.4f})",
        ]
        for name, run in (
            ("regime=full", result["full"]),
            ("regime=lora", result["lora"]),
            ("experiment=qlora", result["qlora"]),
        )
    ]
    header = ["run", "wall time", "trainable params", "checkpoint", "irregular accuracy", "control ppl (drift)"]
    return (
        "One run of each regime from one freshly pretrained base (seed 1234), launched as a user launches them.\n\n"
        + markdown_table(header, rows)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write benchmarks/results/compare_regimes.json and .md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        outputs = Path(tmp)
        timed_run(outputs, "pretrain", "regime=pretrain")
        full_s, full_metrics = timed_run(outputs, "full", "regime=full")
        lora_s, lora_metrics = timed_run(outputs, "lora", "regime=lora")
        qlora_s, qlora_metrics = timed_run(outputs, "qlora", "experiment=qlora")
        plot_curves(
            {"full fine-tune": outputs / "full", "LoRA r=8": outputs / "lora", "QLoRA (NF4-DQ)": outputs / "qlora"},
            FIGURE,
        )
        full = summary(full_s, full_metrics, "model_bytes")
        lora = summary(lora_s, lora_metrics, "adapter_bytes")
        qlora = summary(qlora_s, qlora_metrics, "adapter_bytes")
        qlora["quant_scheme"] = qlora_metrics["quant_scheme"]
        qlora.update({k: round(v, 4) for k, v in qlora_metrics.items() if k.startswith("quantized_")})
    result = {
        "benchmark": "compare_regimes",
        "full": full,
        "lora": lora,
        "qlora": qlora,
        "adapter_to_base_bytes": round(lora["checkpoint_bytes"] / lora["base_bytes"], 4),
        "goals": {
            f"{name}_{goal}": met
            for name, run in (("lora", lora), ("qlora", qlora))
            for goal, met in (
                ("accuracy_at_least_0.95", run["irregular_acc"] >= 0.95),
                ("gain_at_least_60_points", run["irregular_acc"] - run["base_irregular_acc"] >= 0.60),
                ("drift_at_most_5_percent", run["regular_ppl_drift"] <= 0.05),
            )
        },
    }
    if args.write:
        write_results("compare_regimes", result, "Full fine-tuning, LoRA and QLoRA: one run each", report(result))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
