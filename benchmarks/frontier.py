"""What LoRA can and cannot keep: accuracy against control drift for each recipe tried, per base.

Two families, each run launched as a user would (fine-tune seed 1; validation and test figures):

* **weight decay** (no replay, lr 1e-3): wd 0, 5, 10, 20 slide along one frontier: less drift
  only for less accuracy;
* **self-replay** (the default: lr 2e-3, wd 0): replay weights 0.25, 0.5, 1 move the frontier.

Prints one JSON object (every point) and draws ``benchmarks/figures/frontier.png``: one column per
base seed, validation on top (what the default was chosen from), test below, the 5% drift bar
dashed. The default recipe was chosen on the validation row only. ``--write`` also writes
``benchmarks/results/frontier.json`` and the generated ``frontier.md``. A point whose run
directory already holds ``metrics.json`` is read, not run again.

    .venv/bin/python benchmarks/frontier.py --jobs 2 [--write]
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from cli_runs import emit_json, finished_or_run, share_cores
from compare_regimes import scalars
from result_files import markdown_table, write_results

FIGURE = Path(__file__).parent / "figures" / "frontier.png"
MAX_DRIFT = 0.05
FAMILIES = {
    "weight decay, no replay (lr 1e-3)": [
        (f"wd {wd}", ["regime.replay.weight=0", "regime.optimizer.lr=1e-3", f"regime.optimizer.weight_decay={wd}"])
        for wd in (0, 5, 10, 20)
    ],
    "self-replay (lr 2e-3, wd 0; default 0.5)": [
        (f"replay {w}", [f"regime.replay.weight={w}"]) for w in (0.25, 0.5, 1.0)
    ],
}


def run_point(outputs: Path, family: str, label: str, overrides: list[str], base_seed: int) -> dict:
    """One fine-tune; its last validation and its test figures."""
    name = f"frontier/base{base_seed}_{label.replace(' ', '')}"
    _, m = finished_or_run(outputs, name, *overrides, f"base.seed={base_seed}", "seed=1")
    _, val_acc = scalars(outputs / name, "val/irregular_acc")
    _, val_ppl = scalars(outputs / name, "val/regular_ppl")  # step 0 is the base
    return {
        "family": family,
        "label": label,
        "overrides": overrides,
        "base_seed": base_seed,
        "val_acc": val_acc[-1],
        "val_drift": val_ppl[-1] / val_ppl[0] - 1,
        "test_acc": m["irregular_acc"],
        "test_drift": m["regular_ppl_drift"],
    }


def plot(points: list[dict], base_seeds: list[int], path: Path) -> None:
    """Accuracy (y) against drift (x): a line per family, validation on top, test below."""
    figure, axes = plt.subplots(2, len(base_seeds), figsize=(4.5 * len(base_seeds), 8), squeeze=False)
    for column, base_seed in enumerate(base_seeds):
        for row, split in enumerate(("val", "test")):
            ax = axes[row][column]
            for family in FAMILIES:
                mine = [p for p in points if p["family"] == family and p["base_seed"] == base_seed]
                xs = [100 * p[f"{split}_drift"] for p in mine]
                ys = [100 * p[f"{split}_acc"] for p in mine]
                ax.plot(xs, ys, marker="o", label=family)
                for i, (p, x, y) in enumerate(zip(mine, xs, ys, strict=True)):  # stacked: replay points crowd
                    ax.annotate(
                        p["label"],
                        (x, y),
                        fontsize=7,
                        xytext=(4, -9 - 8 * i * ("replay" in p["label"])),
                        textcoords="offset points",
                    )
            ax.axvline(100 * MAX_DRIFT, linestyle="--", color="red", label="5% drift bar")
            ax.set_title(f"base seed {base_seed}: {'validation' if split == 'val' else 'test'}")
            ax.set_xlabel("control perplexity drift (%)")
            ax.set_ylabel("irregular-verb accuracy (%)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small", loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def report(points: list[dict]) -> str:
    """One row per point: validation and test accuracy and drift, the 5% bar checked on both."""

    def bar(drift: float) -> str:
        return "" if drift <= MAX_DRIFT else " (over the bar)"

    rows = [
        [
            p["base_seed"],
            p["family"],
            p["label"],
            f"{p['val_acc']:.2%}",
            f"{p['val_drift']:+.2%}{bar(p['val_drift'])}",
            f"{p['test_acc']:.2%}",
            f"{p['test_drift']:+.2%}{bar(p['test_drift'])}",
        ]
        for p in points
    ]
    header = ["base seed", "family", "point", "val accuracy", "val drift", "test accuracy", "test drift"]
    return (
        "Fine-tune seed 1 on each base, one run per point; drift is the control perplexity's rise "
        f"(bar {MAX_DRIFT:.0%}).\n\n{markdown_table(header, rows)}\n\n![frontier](../figures/frontier.png)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-seeds", type=int, nargs="+", default=[1234, 7, 99])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="paths.outputs_dir (bases/ reused)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once; each gets cores/jobs threads")
    parser.add_argument("--write", action="store_true", help="write results/frontier.{json,md}")
    args = parser.parse_args()
    share_cores(args.jobs)
    grid = [(f, label, o, b) for b in args.base_seeds for f, runs in FAMILIES.items() for label, o in runs]
    with ThreadPoolExecutor(args.jobs) as pool:
        points = list(pool.map(lambda g: run_point(args.outputs, *g), grid))
    plot(points, args.base_seeds, FIGURE)
    result = {"benchmark": "frontier", "figure": "benchmarks/figures/frontier.png", "points": points}
    if args.write:
        title = "Accuracy against control drift: weight decay and self-replay"
        write_results("frontier", result, title, report(points))
    emit_json(result, None)


if __name__ == "__main__":
    main()
