"""A sweep as a user runs it, kept as a result file: the rank ablation or the target-module comparison.

Runs ``minituner-train -m experiment=<name> hydra/launcher=parallel`` (two jobs at a time, one core
each) into ``<outputs>/multiruns/<name>``, then keeps what the sweep's own report says
(``minituner/reports/sweep.py``): ``--write`` writes ``benchmarks/results/<name>.json`` (every job's
row and the statistics per setting over the fine-tune seeds), the generated ``<name>.md`` (the job
table, the findings, the seed statistics) and ``benchmarks/figures/<name>.png`` (the sweep's
``sweep.png``). A sweep directory that already holds the sweep's jobs is reported, not run again.

    .venv/bin/python benchmarks/sweep_results.py rank_ablation --write                # 6 ranks x 3 seeds
    .venv/bin/python benchmarks/sweep_results.py target_modules --seeds 1 --write     # one draw per setting
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from result_files import write_results

from minituner.apps.runner import run_app
from minituner.reports.seed_groups import groups_markdown
from minituner.reports.sweep import findings, markdown_table, seed_groups, table_rows, write_sweep_report
from minituner.reports.sweep_jobs import collect_jobs
from minituner.store.artifacts import write_atomic

EXPERIMENTS = {
    "rank_ablation": "LoRA rank ablation",
    "target_modules": "LoRA target modules",
}
FIGURES = Path(__file__).parent / "figures"


def run_sweep(outputs: Path, name: str, seeds: list[int]) -> Path:
    """The sweep directory of ``experiment=name``, run now unless it already holds the sweep's jobs."""
    sweep_dir = outputs / "multiruns" / name
    if not (sweep_dir.is_dir() and collect_jobs(sweep_dir)):
        run_app(
            "train",
            "-m",
            f"experiment={name}",
            "hydra/launcher=parallel",
            f"hydra.sweep.dir={sweep_dir}",
            f"paths.outputs_dir={outputs}",
            f"seed={','.join(map(str, seeds))}",
            timeout=None,
            check=True,
        )
    return sweep_dir


def summarise(sweep_dir: Path) -> tuple[dict, str]:
    """The sweep's rows and seed statistics as JSON, and its report's tables as markdown."""
    jobs = write_sweep_report(sweep_dir)
    _, rows = table_rows(jobs)
    groups = seed_groups(jobs)
    result = {
        "sweep_dir": str(sweep_dir),
        "jobs": rows,
        "groups": [
            {"group": label, "stats": {k: dataclasses.asdict(v) for k, v in stats.items()}}
            for label, _, stats in groups
        ],
    }
    body = markdown_table(jobs) + "\n\n" + "\n".join(f"- {line}" for line in findings(jobs))
    if groups:
        body += f"\n\n{groups_markdown(groups)}"
    return result, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="fine-tune seeds per setting")
    parser.add_argument("--outputs", type=Path, default=Path("outputs"), help="paths.outputs_dir (bases/ reused)")
    parser.add_argument("--write", action="store_true", help="write results/<experiment>.{json,md} and its figure")
    args = parser.parse_args()
    sweep_dir = run_sweep(args.outputs.resolve(), args.experiment, args.seeds)
    result, body = summarise(sweep_dir)
    result["experiment"] = args.experiment
    if args.write:
        figure = FIGURES / f"{args.experiment}.png"
        write_atomic(figure, lambda path: path.write_bytes((sweep_dir / "sweep.png").read_bytes()))
        command = f"`minituner-train -m experiment={args.experiment} seed={','.join(map(str, args.seeds))}`"
        intro = f"The sweep {command}, two jobs at a time, each a run as a user launches it.\n\n"
        figure_link = f"\n\n![{EXPERIMENTS[args.experiment]}](../figures/{figure.name})"
        write_results(args.experiment, result, EXPERIMENTS[args.experiment], intro + body + figure_link)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
