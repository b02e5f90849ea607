"""Part B's check on every cell of base seeds x fine-tune seeds, for the default LoRA recipe.

Each cell is one ``minituner-train base.seed=B seed=S`` (the default LoRA recipe, the preview's
reference recipe; a missing base is pretrained first, the shipped one installed; the same run
directory as ``seed_robustness.py``'s LoRA cell, reused when it finished), then the preview's part B
on its adapter (``minituner.reports.parity``): model A (the adapter on the fp16 base) against model
B (on the NF4 base with the rest in fp16), on the preview's fixed batch. Per cell: A vs B relative
to the mean |logit|, the bare bases' own NF4 error and their ratio, and the check (B against the
adapter on the NF4-rounded weights held dense, bound: twice the fp16 rounding).

Writes ``benchmarks/results/part_b_grid.json`` and ``.md``.

    .venv/bin/python benchmarks/part_b_grid.py [--base-seeds 1234 7 99] [--seeds 1 2 3] [--jobs 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cli_runs import share_cores, timed_run
from nf4_width import fixed_batch, preview_config
from result_files import markdown_table, write_results

from minituner.reports.parity import parity
from minituner.store.base_cache import load_base

SCHEME, HALF = "nf4_dq", "float16"


def train_cell(outputs: Path, base_seed: int, seed: int) -> Path:
    """The cell's run directory, trained now unless it already finished (seed_robustness.py's LoRA cell)."""
    name = f"seed_robustness/lora_base{base_seed}_seed{seed}"
    if not (outputs / name / "metrics.json").is_file():
        timed_run(outputs, name, f"base.seed={base_seed}", f"seed={seed}")
    return outputs / name


def check_cell(run_dir: Path, batch) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    base = load_base(Path(metrics["base_dir"]))
    check, _ = parity(base, SCHEME, HALF, run_dir / "adapter", batch)
    keys = (
        "relative_diff",
        "bare_relative_diff",
        "ratio_to_bare",
        "composition_error",
        "tolerance",
        "within_tolerance",
    )
    trained = {k: metrics[k] for k in ("base_irregular_acc", "irregular_acc", "regular_ppl_drift")}
    return {"base_sha256": base.weights_sha256} | trained | {k: check[k] for k in keys}


def report(result: dict) -> str:
    rows = [
        [
            c["base_seed"],
            c["seed"],
            f"{c['relative_diff']:.2%}",
            f"{c['bare_relative_diff']:.2%}",
            f"{c['ratio_to_bare']:.3f}",
            f"{c['composition_error']:.4%}",
            f"{c['tolerance']:.4%}",
            "within" if c["within_tolerance"] else "**OUTSIDE**",
            f"{c['irregular_acc']:.2%}",
            f"{c['regular_ppl_drift']:+.2%}",
        ]
        for c in result["cells"]
    ]
    header = [
        "base seed",
        "seed",
        "A vs B",
        "bare bases",
        "ratio",
        "B vs C",
        "bound (2 x fp16 rounding)",
        "check",
        "LoRA accuracy",
        "LoRA drift",
    ]
    ratio, acc, drift = (
        stats([c[k] for c in result["cells"]]) for k in ("ratio_to_bare", "irregular_acc", "regular_ppl_drift")
    )
    return (
        markdown_table(header, rows)
        + f"\n\n{result['within']} of {len(result['cells'])} cells within the bound. Ratio of the adapted model's "
        f"NF4 error to the bare base's: {ratio['mean']:.3f} ± {ratio['sd']:.3f} (sd over cells), "
        f"range {ratio['min']:.3f}-{ratio['max']:.3f}. The LoRA runs themselves (the default recipe): "
        f"accuracy {acc['mean']:.2%} ± {acc['sd']:.2%}, worst cell {acc['min']:.2%}; control drift "
        f"{drift['mean']:+.2%} ± {drift['sd']:.2%}, worst cell {drift['max']:+.2%}.\n"
    )


def stats(values: list[float]) -> dict:
    """Mean, sd (over cells), min and max."""
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "sd": sd, "min": min(values), "max": max(values)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-seeds", type=int, nargs="+", default=[1234, 7, 99])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="paths.outputs_dir (bases/ reused)")
    parser.add_argument("--jobs", type=int, default=1, help="cells trained at once")
    args = parser.parse_args()
    share_cores(args.jobs)
    grid = [(b, s) for b in args.base_seeds for s in args.seeds]
    first = [(b, args.seeds[0]) for b in args.base_seeds]  # builds each missing base before its other cells
    with ThreadPoolExecutor(args.jobs) as pool:
        list(pool.map(lambda c: train_cell(args.outputs, *c), first))
        list(pool.map(lambda c: train_cell(args.outputs, *c), [c for c in grid if c not in first]))
    batch = fixed_batch(preview_config())
    cells = [{"base_seed": b, "seed": s} | check_cell(train_cell(args.outputs, b, s), batch) for b, s in grid]
    result = {
        "scheme": SCHEME,
        "half_dtype": HALF,
        "batch": len(batch[0]),
        "cells": cells,
        "within": sum(c["within_tolerance"] for c in cells),
        "ratio_to_bare": stats([c["ratio_to_bare"] for c in cells]),
    }
    write_results("part_b_grid", result, "Part B's check over base seeds x fine-tune seeds", report(result))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
