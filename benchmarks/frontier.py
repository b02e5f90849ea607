"""What LoRA can and cannot keep: accuracy against control drift for each recipe tried, per base.

Two families, each run launched as a user would (fine-tune seed 1; validation and test figures):

* **weight decay** (the former default's lever, no replay, lr 1e-3): wd 0, 5, 10, 20 slide along
  one frontier: less drift only for less accuracy;
* **self-replay** (the default: lr 2e-3, wd 0): replay weights 0.25, 0.5, 1 move the frontier.

Prints one JSON object (every point) and draws ``benchmarks/figures/frontier.png``: one column per
base seed, validation on top (what the default was chosen from), test below, the 5% drift bar
dashed. The default recipe was chosen on the validation row only.

    python benchmarks/frontier.py --jobs 2
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from cli_runs import emit_json, share_cores, timed_run
from compare_regimes import scalars

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
    _, m = timed_run(outputs, name, *overrides, f"base.seed={base_seed}", "seed=1")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-seeds", type=int, nargs="+", default=[1234, 7, 99])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="paths.outputs_dir (bases/ reused)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once; each gets cores/jobs threads")
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    share_cores(args.jobs)
    grid = [(f, label, o, b) for b in args.base_seeds for f, runs in FAMILIES.items() for label, o in runs]
    with ThreadPoolExecutor(args.jobs) as pool:
        points = list(pool.map(lambda g: run_point(args.outputs, *g), grid))
    plot(points, args.base_seeds, FIGURE)
    emit_json({"benchmark": "frontier", "figure": str(FIGURE), "points": points}, args.json_out)


if __name__ == "__main__":
    main()
