"""The report of a Hydra multirun: one row per job in ``sweep.csv``, ``REPORT.md`` and ``sweep.png``.

``reports.sweep_callback.SweepReport`` (a Hydra callback) writes it after every job and when the
sweep ends; ``minituner-sweep-report <sweep dir>`` rebuilds it by hand. The swept keys are read
from each job's ``.hydra/overrides.yaml`` (the keys whose values differ between jobs), the
figures from its ``metrics.json``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from omegaconf import OmegaConf

from minituner.reports.seed_groups import (
    SeedGroup,
    group_findings,
    group_jobs,
    group_stats,
    groups_csv_text,
    groups_markdown,
    seed_keys,
)
from minituner.reports.sweep_jobs import (
    GOAL_GAIN_POINTS,
    GOAL_MAX_DRIFT,
    Job,
    collect_jobs,
    swept_keys,
    task_metric,
)
from minituner.reports.sweep_plot import plot_sweep
from minituner.store.artifacts import write_text_atomic

# metrics.json keys copied into the CSV, in this order (when any job has them)
METRIC_KEYS = (
    "base_irregular_acc",
    "irregular_acc",
    "base_label_acc",
    "label_acc",
    "base_regular_ppl",
    "regular_ppl",
    "regular_ppl_drift",
    "trainable_params",
    "total_params",
    "adapter_bytes",
    "best_val_ppl",
    "best_step",
    "train_steps",
    "train_seconds",
)


def derived(metrics: dict) -> dict:
    """Figures computed from a job's metrics: accuracy gain, trainable share, the phase's goals."""
    out = {}
    task = task_metric(metrics)
    if task in metrics and f"base_{task}" in metrics:
        out["acc_gain_points"] = 100 * (metrics[task] - metrics[f"base_{task}"])
    if "trainable_params" in metrics and metrics.get("total_params"):
        out["trainable_fraction"] = metrics["trainable_params"] / metrics["total_params"]
    if "acc_gain_points" in out and "regular_ppl_drift" in metrics:
        meets = out["acc_gain_points"] >= GOAL_GAIN_POINTS and metrics["regular_ppl_drift"] <= GOAL_MAX_DRIFT
        out["meets_goals"] = meets
    return out


def table_rows(jobs: list[Job]) -> tuple[list[str], list[dict]]:
    """The CSV's header and rows: job, status, swept keys, metrics, derived figures."""
    keys = swept_keys(jobs)
    present = [k for k in METRIC_KEYS if any(k in job.metrics for job in jobs)]
    extra = list(dict.fromkeys(k for job in jobs for k in derived(job.metrics)))
    header = ["job", "status", *keys, *present, *extra, "directory"]
    rows = []
    for job in jobs:
        row = {"job": job.num, "status": job.status, **{k: job.value(k) for k in keys}}
        row |= {k: job.metrics.get(k, "") for k in present} | derived(job.metrics)
        rows.append(row | {"directory": str(job.directory)})
    return header, rows


def csv_text(header: list[str], rows: list[dict]) -> str:
    """The rows as CSV text (missing values empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _pct(value, digits: int = 1) -> str:
    return f"{100 * value:.{digits}f}%" if isinstance(value, int | float) else "-"


def markdown_table(jobs: list[Job]) -> str:
    """One line per job: the swept keys, task accuracy, drift, trainable parameters, goals."""
    keys = swept_keys(jobs)
    header = ["job", "status", *keys, "task acc (base -> tuned)", "gain", "control drift", "trainable", "goals"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for job in jobs:
        m, d = job.metrics, derived(job.metrics)
        task = task_metric(m)
        accuracy = f"{_pct(m.get(f'base_{task}'))} -> {_pct(m.get(task))}"
        gain = f"{d['acc_gain_points']:+.1f} pts" if "acc_gain_points" in d else "-"
        trainable = (
            f"{m['trainable_params']:,} ({_pct(d['trainable_fraction'], 2)})" if "trainable_fraction" in d else "-"
        )
        goals = {True: "met", False: "missed"}.get(d.get("meets_goals"), "-")
        cells = [
            str(job.num),
            job.status,
            *(job.value(k) for k in keys),
            accuracy,
            gain,
            _pct(m.get("regular_ppl_drift"), 2),
            trainable,
            goals,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings(jobs: list[Job]) -> list[str]:
    """Sentences read off the table: the most accurate job, the cheapest one that meets the goals."""
    done = [j for j in jobs if task_metric(j.metrics) in j.metrics]
    if not done:
        return ["No job has finished yet."]
    keys = swept_keys(jobs)

    def label(job: Job) -> str:
        return ", ".join(f"{k}={job.value(k)}" for k in keys) or f"job {job.num}"

    groups = seed_groups(jobs)
    if groups:
        return group_findings(groups, GOAL_GAIN_POINTS, GOAL_MAX_DRIFT) + _unfinished(jobs)
    best = max(done, key=lambda j: j.metrics[task_metric(j.metrics)])
    lines = [f"Highest task accuracy: {label(best)} ({_pct(best.metrics[task_metric(best.metrics)])})."]
    meeting = [j for j in done if derived(j.metrics).get("meets_goals")]
    if meeting:
        cheapest = min(meeting, key=lambda j: j.metrics.get("trainable_params", 0))
        lines.append(
            f"Fewest trainable parameters while meeting the goals (gain >= {GOAL_GAIN_POINTS:.0f} points, "
            f"drift <= {GOAL_MAX_DRIFT:.0%}): {label(cheapest)} ({cheapest.metrics['trainable_params']:,})."
        )
    elif any("meets_goals" in derived(j.metrics) for j in done):
        lines.append("No job meets both goals (gain >= 10 points and drift <= 5%).")
    return lines + _unfinished(jobs)


def _unfinished(jobs: list[Job]) -> list[str]:
    unfinished = [str(j.num) for j in jobs if j.status != "completed"]
    return [f"Jobs without a result: {', '.join(unfinished)}."] if unfinished else []


def seed_groups(jobs: list[Job]) -> list[SeedGroup]:
    """Per group of jobs that differ only in their seeds: (label, rows of its finished jobs, statistics).

    Empty when the sweep does not vary a seed.
    """
    keys = swept_keys(jobs)
    if not seed_keys(keys):
        return []
    _, rows = table_rows(jobs)
    by_num = {row["job"]: row for row in rows}
    grouped = []
    for label, members in group_jobs(jobs, keys).items():
        finished = [by_num[j.num] for j in members if task_metric(j.metrics) in j.metrics]
        grouped.append((label, finished, group_stats(finished) if finished else {}))
    return grouped


def report_text(sweep_dir: Path, jobs: list[Job]) -> str:
    """The generated REPORT.md of the sweep."""
    multirun = sweep_dir / "multirun.yaml"
    command = ""
    if multirun.is_file():
        task = OmegaConf.select(OmegaConf.load(multirun), "hydra.overrides.task", default=[])
        command = f"\nCommand: `minituner-train -m {' '.join(task)}`\n"
    done = sum(j.status == "completed" for j in jobs)
    groups = seed_groups(jobs)
    groups_section = f"\n{groups_markdown(groups)}\n" if groups else ""
    return f"""# Sweep report: `{sweep_dir.name}`

Generated from the jobs' `metrics.json` by `minituner/reports/sweep.py` (refreshed after every job
and at the end of the sweep; `minituner-sweep-report {sweep_dir}` rebuilds it). Do not edit by hand.
{command}
{len(jobs)} job(s), {done} completed. Task accuracy: the tuned model scores the correct irregular
past form above the regularized one (test split), or with instruction data (`data.labels`) the
record's own label above the others (held-out records); control drift: relative change of the regular-verb
test perplexity from the base; goals: gain >= {GOAL_GAIN_POINTS:.0f} points and drift <= {GOAL_MAX_DRIFT:.0%}.

{markdown_table(jobs)}

{chr(10).join(f"- {line}" for line in findings(jobs))}
{groups_section}
![sweep](sweep.png)

Every column of every job is in `sweep.csv`. Compare the runs' curves and hyperparameters in
TensorBoard (HPARAMS tab): `tensorboard --logdir {sweep_dir}`.
"""


def write_sweep_report(sweep_dir: Path) -> list[Job]:
    """Write ``sweep.csv``, ``REPORT.md``, ``sweep.png`` into ``sweep_dir``; return the jobs found.

    A sweep over seeds also gets ``sweep_groups.csv`` (the statistics per group).
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep directory {sweep_dir} does not exist")
    jobs = collect_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no job directories (with .hydra/overrides.yaml) under {sweep_dir}")
    header, rows = table_rows(jobs)
    write_text_atomic(sweep_dir / "sweep.csv", csv_text(header, rows))
    groups = seed_groups(jobs)
    if groups:
        write_text_atomic(sweep_dir / "sweep_groups.csv", groups_csv_text(groups))
    plot_sweep(jobs, sweep_dir / "sweep.png")
    write_text_atomic(sweep_dir / "REPORT.md", report_text(sweep_dir, jobs))
    return jobs
