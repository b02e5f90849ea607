"""Do the default recipes hold for every seed? LoRA and QLoRA over base seeds x fine-tune seeds.

Each cell is one ``minituner-train [experiment=qlora] base.seed=B seed=S`` launched as a user
launches it (a missing base is pretrained first, once per base seed). Prints one JSON object:
every cell's test accuracy, gain over its base and control drift; per recipe the mean, sd, median
and worst cell, and how many cells meet the phase's bar (drift <= 5%, gain >= 10 points) and the
accuracy target (>= 95%); and the machine (CPU, kernel ISA, threads), since bases differ between CPUs.

    python benchmarks/seed_robustness.py                       # 3 base seeds x 3 seeds, LoRA + QLoRA
    python benchmarks/seed_robustness.py --base-seeds 1234 --seeds 1 2 --recipes lora
    python benchmarks/seed_robustness.py --recipes lora lora_bf16 --jobs 2 \
        --json-out benchmarks/results/half_precision_seeds.json        # fp32 vs bf16 frozen base
"""

from __future__ import annotations

import argparse
import os
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cli_runs import emit_json, share_cores, timed_run
from result_files import markdown_table, write_results

from minituner.store.provenance import host_info

RECIPES = {
    "lora": [],
    "qlora": ["experiment=qlora"],
    # the same recipes on a half-precision frozen base (base.dtype; adapters stay fp32)
    "lora_bf16": ["base.dtype=bfloat16"],
    "lora_fp16": ["base.dtype=float16"],
    "qlora_bf16": ["experiment=qlora", "base.dtype=bfloat16"],
}
MAX_DRIFT, MIN_GAIN_POINTS, TARGET_ACC = 0.05, 10.0, 0.95


def summary(cells: list[dict]) -> dict:
    """Mean, sd, median and worst of accuracy and drift over cells, and the cells meeting the bars."""
    acc = [c["irregular_acc"] for c in cells]
    drift = [c["regular_ppl_drift"] for c in cells]

    def stats(values: list[float]) -> dict:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return {
            "mean": statistics.fmean(values),
            "sd": spread,
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }

    return {
        "cells": len(cells),
        "irregular_acc": stats(acc),
        "regular_ppl_drift": stats(drift),
        "gain_points": stats([c["gain_points"] for c in cells]),
        "cells_meeting_bar": sum(c["meets_bar"] for c in cells),
        "cells_at_target_acc": sum(a >= TARGET_ACC for a in acc),
        "worst_cell_acc": min(acc),
        "worst_cell_drift": max(drift),
    }


def run_cell(outputs: Path, recipe: str, base_seed: int, seed: int) -> dict:
    """One fine-tune; its figures as a cell of the grid."""
    wall, m = timed_run(
        outputs,
        f"seed_robustness/{recipe}_base{base_seed}_seed{seed}",
        *RECIPES[recipe],
        f"base.seed={base_seed}",
        f"seed={seed}",
    )
    gain = 100 * (m["irregular_acc"] - m["base_irregular_acc"])
    return {
        "recipe": recipe,
        "base_seed": base_seed,
        "seed": seed,
        "base_sha256": m["base_sha256"],
        "base_irregular_acc": m["base_irregular_acc"],
        "base_regular_ppl": m["base_regular_ppl"],
        "irregular_acc": m["irregular_acc"],
        "regular_ppl": m["regular_ppl"],
        "regular_ppl_drift": m["regular_ppl_drift"],
        "gain_points": gain,
        "meets_bar": m["regular_ppl_drift"] <= MAX_DRIFT and gain >= MIN_GAIN_POINTS,
        "wall_seconds": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-seeds", type=int, nargs="+", default=[1234, 7, 99])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=["lora", "qlora"])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="paths.outputs_dir (bases/ reused)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="cells run at once; each gets cores/jobs threads (OMP_NUM_THREADS)"
    )
    parser.add_argument("--json-out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    share_cores(args.jobs)
    # a missing base is built by the first cell that needs it, before that base's other cells start
    grid = [(r, b, s) for b in args.base_seeds for s in args.seeds for r in args.recipes]
    first = list({base_seed: (r, base_seed, s) for r, base_seed, s in reversed(grid)}.values())
    rest = [cell for cell in grid if cell not in first]
    with ThreadPoolExecutor(args.jobs) as pool:

        def run(cells: list) -> list[dict]:
            return list(pool.map(lambda c: run_cell(args.outputs, *c), cells))

        cells = run(first) + run(rest)
    cells.sort(key=lambda c: (c["recipe"], args.base_seeds.index(c["base_seed"]), c["seed"]))
    result = {
        "benchmark": "seed_robustness",
        "bars": {"max_drift": MAX_DRIFT, "min_gain_points": MIN_GAIN_POINTS, "target_acc": TARGET_ACC},
        "machine": host_info() | {"omp_num_threads": os.environ.get("OMP_NUM_THREADS")},
        "cells": cells,
        "summary": {r: summary([c for c in cells if c["recipe"] == r]) for r in args.recipes},
    }
    if args.json_out:
        write_results(
            args.json_out.stem,
            result,
            "Seed robustness of the default recipes",
            report(result),
            directory=args.json_out.parent,
        )
    emit_json(result, None)


def report(result: dict) -> str:
    """The summary per recipe and every cell, as markdown tables."""
    header = ["recipe", "cells meeting the bar", "accuracy mean ± sd", "worst cell", "drift mean ± sd", "worst cell"]
    rows = [
        [
            recipe,
            f"{s['cells_meeting_bar']} / {s['cells']}",
            f"{100 * s['irregular_acc']['mean']:.1f} ± {100 * s['irregular_acc']['sd']:.1f}%",
            f"{100 * s['worst_cell_acc']:.2f}%",
            f"{100 * s['regular_ppl_drift']['mean']:+.2f} ± {100 * s['regular_ppl_drift']['sd']:.2f}%",
            f"{100 * s['worst_cell_drift']:+.2f}%",
        ]
        for recipe, s in result["summary"].items()
    ]
    cells = [
        [
            c["recipe"],
            c["base_seed"],
            c["seed"],
            c["base_sha256"][:8],
            f"{100 * c['irregular_acc']:.2f}%",
            f"{100 * c['regular_ppl_drift']:+.2f}%",
            "yes" if c["meets_bar"] else "**no**",
        ]
        for c in result["cells"]
    ]
    bars = result["bars"]
    return (
        f"Bar: drift <= {bars['max_drift']:.0%} and gain >= {bars['min_gain_points']:.0f} points.\n\n"
        + markdown_table(header, rows)
        + "\n\n"
        + markdown_table(["recipe", "base seed", "seed", "base", "accuracy", "drift", "meets the bar"], cells)
    )


if __name__ == "__main__":
    main()
