"""How much of QLoRA's gap to LoRA does each variant close? NF4 block sizes, int4, LoftQ, QPiSSA, DoRA, QDoRA.

For every variant of ``conf/variant/`` (the rows), on each base seed:

* (a) the reconstruction error at initialisation of every adapted layer, ``||W - W_0|| / ||W||`` with
  ``W_0`` the weight the layer computes with at step 0 (dequantized base + scaling * B A, DoRA's
  magnitude applied);
* (b) part B's measure at initialisation: mean |logit - logit of the fp32 base| / mean |logit| on the
  first 64 test sentences (the fp32 base is exact for LoRA, PiSSA and DoRA on it);

and over base seeds x fine-tune seeds, each cell one ``minituner-train variant=<row>`` launched as a
user launches it, at each budget (``default``: the recipe; ``short``: ``regime.max_steps=40``):

* (c) accuracy on the irregular test split and control drift: mean ± sd and the worst cell;
* (d) the share of QLoRA's gap to LoRA each row closes, ``mean(row - qlora) / mean(lora - qlora)`` over
  the paired cells (same base, same seed), with a bootstrap interval over cells;
* (e) the step time relative to LoRA (median of train_seconds / train_steps, cells run ``--jobs`` at once).

With ``--write``: ``results/<name>.{json,md}`` and ``figures/<name>.png`` (``--name``, default ``qlora_gap``).
A cell whose run directory already holds ``metrics.json`` is read, not run again.

    python benchmarks/qlora_gap.py --jobs 2 --write                          # the whole study
    python benchmarks/qlora_gap.py --budgets short --base-seeds 1234 --rows lora qlora loftq1
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import matplotlib
import torch
from hydra import compose, initialize_config_dir

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from cli_runs import emit_json, finished_or_run, share_cores
from result_files import markdown_table, write_results

from minituner.apps.preview import fixed_batch
from minituner.config.base_request import base_dir_for
from minituner.config.shipped import CONF_DIR
from minituner.lora.layer import LoRALinear, lora_layers
from minituner.reports.merge_fidelity import compare_logits, logits_of
from minituner.store.base_cache import load_base
from minituner.training.pipeline import adapt_frozen_base

ROWS = ["lora", "qlora", "qlora_b32", "qlora_b128", "int4", "loftq1", "loftq5", "qpissa", "dora", "qdora"]
BUDGETS = {"default": [], "short": ["regime.max_steps=40"]}
FIGURES = Path(__file__).parent / "figures"
BATCH = 64
BOOTSTRAP = 2000


def effective_weight(layer: LoRALinear) -> torch.Tensor:
    """What an adapted layer computes with: base + scaling * B A, scaled row-wise to DoRA's magnitude."""
    weight = layer.base_weight() + layer.delta_weight().float()
    if layer.dora:
        weight = weight * (layer.lora_magnitude_vector.float() / torch.linalg.norm(weight, dim=1)).unsqueeze(1)
    return weight


def init_figures(outputs: Path, row: str, base_seed: int) -> dict:
    """(a) and (b) for one row on one base: per-layer reconstruction error, logit error at step 0."""
    overrides = [f"variant={row}", f"base.seed={base_seed}", f"paths.outputs_dir={outputs}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    base = load_base(base_dir_for(cfg))
    model = copy.deepcopy(base.model)
    adapt_frozen_base(cfg, model)
    layers = {
        name: (
            torch.linalg.norm(base.model.get_submodule(name).weight - effective_weight(layer))
            / torch.linalg.norm(base.model.get_submodule(name).weight)
        ).item()
        for name, layer in lora_layers(model).items()
    }
    inputs, mask = fixed_batch(cfg, BATCH)
    with torch.no_grad():
        logits = compare_logits(logits_of(base.model, inputs), logits_of(model, inputs), mask)
    return {
        "layers": layers,
        "reconstruction": statistics.fmean(layers.values()),
        "logit_error": logits["relative_diff"],
    }


def run_cell(outputs: Path, budget: str, row: str, base_seed: int, seed: int) -> dict:
    """One fine-tune of the grid: its accuracy, drift and step time (a finished run of it is read, not rerun)."""
    name = f"qlora_gap/{budget}/{row}_base{base_seed}_seed{seed}"
    overrides = [f"variant={row}", *BUDGETS[budget], f"base.seed={base_seed}", f"seed={seed}"]
    wall, m = finished_or_run(outputs, name, *overrides)
    return {
        "budget": budget,
        "row": row,
        "base_seed": base_seed,
        "seed": seed,
        "base_sha256": m["base_sha256"],
        "irregular_acc": m["irregular_acc"],
        "regular_ppl_drift": m["regular_ppl_drift"],
        "step_seconds": m["train_seconds"] / max(1, m["train_steps"]),
        "train_steps": m["train_steps"],
        "wall_seconds": round(wall, 1) if wall else None,
    }


def stats(values: list[float]) -> dict:
    """Mean, sd, min and max."""
    return {
        "mean": statistics.fmean(values),
        "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def gap_share(row: list[float], lora: list[float], qlora: list[float]) -> dict:
    """Share of the (paired) QLoRA-to-LoRA gap that ``row`` closes, with a bootstrap over cells.

    ``gap_resolved`` is false when the 95% bootstrap interval of the gap itself reaches 0: the share
    is then a ratio of noise and is left out.
    """
    cells = list(range(len(row)))
    rng = random.Random(0)

    def share(sample: list[int]) -> tuple[float, float]:
        gap = statistics.fmean(lora[i] - qlora[i] for i in sample)
        closed = statistics.fmean(row[i] - qlora[i] for i in sample)
        return gap, closed / gap if gap else float("nan")

    gap, value = share(cells)
    draws = [share([rng.choice(cells) for _ in cells]) for _ in range(BOOTSTRAP)]
    gaps = sorted(g for g, _ in draws)
    shares = sorted(s for _, s in draws if s == s)
    resolved = gap != 0 and (gaps[int(0.025 * BOOTSTRAP)] > 0 if gap > 0 else gaps[int(0.975 * BOOTSTRAP)] < 0)

    def percentile(q: float) -> float:
        return shares[min(len(shares) - 1, int(q * len(shares)))]

    return {
        "gap": gap,
        "gap_resolved": resolved,
        "share": value if resolved else None,
        "share_68": [percentile(0.16), percentile(0.84)] if resolved else None,
    }


def summarize(cells: list[dict], budget: str, rows: list[str]) -> dict:
    """Per row: accuracy and drift statistics, worst cells, gap shares, relative step time."""
    by_row = {
        row: sorted(
            (c for c in cells if c["budget"] == budget and c["row"] == row), key=lambda c: (c["base_seed"], c["seed"])
        )
        for row in rows
    }
    lora_step = statistics.median(c["step_seconds"] for c in by_row["lora"]) if by_row.get("lora") else None
    result = {}
    for row, row_cells in by_row.items():
        if not row_cells:
            continue
        acc = [c["irregular_acc"] for c in row_cells]
        drift = [c["regular_ppl_drift"] for c in row_cells]
        entry = {
            "cells": len(row_cells),
            "irregular_acc": stats(acc),
            "regular_ppl_drift": stats(drift),
            "step_time_vs_lora": statistics.median(c["step_seconds"] for c in row_cells) / lora_step
            if lora_step
            else None,
        }
        if {"lora", "qlora"} <= by_row.keys() and len(by_row["lora"]) == len(by_row["qlora"]) == len(row_cells):
            entry["share_acc"] = gap_share(acc, *[[c["irregular_acc"] for c in by_row[r]] for r in ("lora", "qlora")])
            # less drift is better: the gap runs from QLoRA's drift down to LoRA's
            negated = [[-c["regular_ppl_drift"] for c in by_row[r]] for r in ("lora", "qlora")]
            entry["share_drift"] = gap_share([-d for d in drift], *negated)
        result[row] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=ROWS, default=ROWS)
    parser.add_argument("--budgets", nargs="+", choices=sorted(BUDGETS), default=["short", "default"])
    parser.add_argument("--base-seeds", type=int, nargs="+", default=[1234, 7, 99])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="paths.outputs_dir (bases/ reused)")
    parser.add_argument("--jobs", type=int, default=1, help="cells run at once (each gets cores/jobs threads)")
    parser.add_argument("--write", action="store_true", help="write results/<name>.{json,md} and figures/<name>.png")
    parser.add_argument("--name", default="qlora_gap", help="stem of the result files")
    args = parser.parse_args()
    share_cores(args.jobs)
    grid = [(b, r, bs, s) for b in args.budgets for bs in args.base_seeds for s in args.seeds for r in args.rows]
    first = list({bs: (b, r, bs, s) for b, r, bs, s in reversed(grid)}.values())  # builds a missing base once
    rest = [cell for cell in grid if cell not in first]
    with ThreadPoolExecutor(args.jobs) as pool:
        cells = [c for part in (first, rest) for c in pool.map(lambda cell: run_cell(args.outputs, *cell), part)]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    init = {r: {bs: init_figures(args.outputs, r, bs) for bs in args.base_seeds} for r in args.rows}
    result = {
        "benchmark": "qlora_gap",
        "budgets": {b: BUDGETS[b] for b in args.budgets},
        "init": {
            r: {
                "reconstruction": stats([v["reconstruction"] for v in per_base.values()]),
                "logit_error": stats([v["logit_error"] for v in per_base.values()]),
                "per_base": {str(bs): v for bs, v in per_base.items()},
            }
            for r, per_base in init.items()
        },
        "cells": cells,
        "summary": {b: summarize(cells, b, args.rows) for b in args.budgets},
    }
    if args.write:
        draw(result, FIGURES / f"{args.name}.png")
        title = "The QLoRA gap: what each variant closes"
        write_results(args.name, result, title, report(result, f"../figures/{args.name}.png"))
    emit_json(result, None)


def _pm(s: dict, scale: float = 100, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{scale * s['mean']:{sign}.2f} ± {scale * s['sd']:.2f}"


def _share(entry: dict, key: str) -> str:
    share = entry.get(key)
    if share is None:
        return ""
    if not share["gap_resolved"]:
        return "gap not resolved"
    low, high = share["share_68"]
    return f"{100 * share['share']:.0f}% [{100 * low:.0f}, {100 * high:.0f}]"


def report(result: dict, figure: str) -> str:
    """The init table, one table per budget, and the claims checked against the papers."""
    init_rows = [
        [row, f"{100 * v['reconstruction']['mean']:.2f}%", f"{100 * v['logit_error']['mean']:.2f}%"]
        for row, v in result["init"].items()
    ]
    text = [
        "At initialisation, mean over the base seeds. Reconstruction: the Frobenius norm of W - W_0 over that of W "
        "(W_0: the weight the layer computes with at step 0), mean over the adapted layers. Logit error: mean "
        "absolute difference to the fp32 base's logits over their mean magnitude, on 64 test sentences.\n",
        markdown_table(["variant", "reconstruction error", "logit error"], init_rows),
    ]
    header = [
        "variant",
        "accuracy mean ± sd (%)",
        "worst",
        "drift mean ± sd (%)",
        "worst",
        "gap closed: accuracy",
        "gap closed: drift",
        "step time vs LoRA",
    ]
    for budget, rows in result["summary"].items():
        table = [
            [
                row,
                _pm(e["irregular_acc"]),
                f"{100 * e['irregular_acc']['min']:.2f}",
                _pm(e["regular_ppl_drift"], signed=True),
                f"{100 * e['regular_ppl_drift']['max']:+.2f}",
                _share(e, "share_acc"),
                _share(e, "share_drift"),
                f"{e['step_time_vs_lora']:.2f}" if e["step_time_vs_lora"] else "",
            ]
            for row, e in rows.items()
        ]
        overrides = " ".join(result["budgets"][budget]) or "the recipe as shipped"
        cells = next(iter(rows.values()))["cells"] if rows else 0
        text += [f"\n**Budget `{budget}`** ({overrides}; {cells} cells per variant):\n", markdown_table(header, table)]
    text += [
        "\nGap closed: `mean(variant - QLoRA) / mean(LoRA - QLoRA)` over paired cells, [16th, 84th] percentile of a "
        "bootstrap over cells; *gap not resolved* where the 95% interval of the gap itself reaches zero.",
        f"\n![QLoRA gap]({figure})",
        "\n" + claims(result),
    ]
    return "\n".join(text)


def claims(result: dict) -> str:
    """The papers' claims next to what this grid measured, a line each (words follow the figures)."""
    lines = ["Claims of the literature, against this grid:\n"]
    for budget, rows in result["summary"].items():
        loftq, qpissa = rows.get("loftq1"), rows.get("qpissa")
        if loftq and loftq.get("share_acc"):
            lines.append(
                f"- LoftQ closes ~85% of the gap on Phi-2 and about a third on Llama-3-8B; here ({budget}): "
                f"accuracy {_share(loftq, 'share_acc')}, drift {_share(loftq, 'share_drift')}."
            )
        if qpissa and "qlora" in rows:
            qlora = rows["qlora"]["irregular_acc"]["mean"]
            lines.append(
                f"- QPiSSA (SVD in fp32, residual quantized) starts without PiSSA-on-4-bit's high loss; here "
                f"({budget}) its accuracy is {100 * qpissa['irregular_acc']['mean']:.2f}% against QLoRA's "
                f"{100 * qlora:.2f}%."
            )
        if {"dora", "lora"} <= rows.keys():
            dora, lora = rows["dora"], rows["lora"]
            lines.append(
                f"- DoRA vs LoRA (paper: DoRA ahead; PEFT's comparison: slightly behind at +26% time); here "
                f"({budget}): {100 * dora['irregular_acc']['mean']:.2f}% vs {100 * lora['irregular_acc']['mean']:.2f}% "
                f"accuracy, step time x{dora['step_time_vs_lora']:.2f}."
            )
    init = result["init"]
    if {"loftq1", "qlora"} <= init.keys():
        lines.append(
            f"- At initialisation LoftQ (1 round) reconstructs the adapted weights to "
            f"{100 * init['loftq1']['reconstruction']['mean']:.2f}% against QLoRA's "
            f"{100 * init['qlora']['reconstruction']['mean']:.2f}%, and 5 rounds to "
            f"{100 * init.get('loftq5', init['loftq1'])['reconstruction']['mean']:.2f}%."
        )
    return "\n".join(lines)


def draw(result: dict, path: Path) -> None:
    """Accuracy and drift per variant, one column per budget: mean ± sd, the worst cell as a cross."""
    budgets = list(result["summary"])
    fig, axes = plt.subplots(2, len(budgets), figsize=(5.5 * len(budgets), 6.5), squeeze=False)
    for col, budget in enumerate(budgets):
        rows = result["summary"][budget]
        names = list(rows)
        for line, (key, worst, label) in enumerate(
            [("irregular_acc", "min", "irregular accuracy (%)"), ("regular_ppl_drift", "max", "control drift (%)")]
        ):
            ax = axes[line][col]
            means = [100 * rows[n][key]["mean"] for n in names]
            sds = [100 * rows[n][key]["sd"] for n in names]
            ax.errorbar(range(len(names)), means, yerr=sds, fmt="o", capsize=3, label="mean ± sd")
            ax.plot(range(len(names)), [100 * rows[n][key][worst] for n in names], "x", color="C3", label="worst cell")
            ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if line == 0:
                ax.set_title(f"budget: {budget}")
                ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
