"""The report of a Hydra multirun: one row per job in ``sweep.csv``, ``REPORT.md`` and ``sweep.png``.

``SweepReport`` is a Hydra callback (``conf/hydra/default.yaml``): it rewrites the report in the
sweep directory after every job, so a sweep that dies half-way still leaves the rows of the jobs
that finished, and once more when the sweep ends. ``minituner-sweep-report <sweep dir>`` rebuilds
it by hand. The swept keys are read from each job's ``.hydra/overrides.yaml`` (the keys whose
values differ between jobs), the figures from its ``metrics.json``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from minituner.reports.seed_groups import (
    SEED_KEYS,
    SeedGroup,
    Stats,
    group_findings,
    group_jobs,
    group_stats,
    groups_csv_text,
    groups_markdown,
    seed_keys,
)
from minituner.store.artifacts import write_atomic, write_text_atomic

log = logging.getLogger(__name__)

RANK_KEY = "lora.r"
GOAL_GAIN_POINTS = 10.0  # the phase's goals: task accuracy up >= 10 points ...
GOAL_MAX_DRIFT = 0.05  # ... with the control perplexity up <= 5%
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


def task_metric(metrics: dict) -> str:
    """The accuracy a job is judged by: ``label_acc`` for instruction labels, else the verb task's."""
    return "label_acc" if "label_acc" in metrics else "irregular_acc"


@dataclass
class Job:
    """One job of the sweep: where it ran, how it ended, what it was given and what it measured."""

    num: int
    directory: Path  # relative to the sweep directory
    status: str  # completed | failed | running | no result
    adapts: bool  # the regime trains LoRA adapters (rank settings apply)
    overrides: dict[str, str] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def value(self, key: str) -> str:
        """The job's override of ``key`` ("-" where it has none or the key does not apply)."""
        if key.startswith("lora.") and not self.adapts:
            return "-"
        return self.overrides.get(key, "-")


def parse_overrides(lines: list[str]) -> dict[str, str]:
    """``key=value`` overrides as a dict, without Hydra's ``+``/``~`` prefixes and ``hydra.``/``paths.`` keys."""
    parsed = {}
    for line in lines:
        key, _, value = line.partition("=")
        key = key.lstrip("+~")
        if not key.startswith(("hydra.", "paths.")):
            parsed[key] = value
    return parsed


def collect_jobs(sweep_dir: Path) -> list[Job]:
    """Every job directory under ``sweep_dir`` (found by its ``.hydra/overrides.yaml``), by job number."""
    jobs = []
    for overrides_file in sweep_dir.rglob("overrides.yaml"):
        hydra_dir = overrides_file.parent
        if hydra_dir.name != ".hydra" or not (hydra_dir / "config.yaml").is_file():
            continue
        directory = hydra_dir.parent
        num = OmegaConf.select(OmegaConf.load(hydra_dir / "hydra.yaml"), "hydra.job.num", default=len(jobs))
        config = OmegaConf.load(hydra_dir / "config.yaml")
        metrics = _read_json(directory / "metrics.json")
        status = "completed" if metrics else _read_json(directory / "manifest.json").get("status", "no result")
        jobs.append(
            Job(
                num=int(num),
                directory=directory.relative_to(sweep_dir),
                status=status,
                adapts=OmegaConf.select(config, "regime.trainable") == "lora",
                overrides=parse_overrides(list(OmegaConf.load(overrides_file))),
                metrics=metrics,
            )
        )
    return sorted(jobs, key=lambda j: j.num)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # a job still running or killed mid-way
        return {}


def swept_keys(jobs: list[Job]) -> list[str]:
    """Override keys whose values differ between jobs, in the order they first appear."""
    keys = list(dict.fromkeys(k for job in jobs for k in job.overrides))
    return [k for k in keys if len({job.overrides.get(k) for job in jobs}) > 1]


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
        cells = [str(job.num), job.status, *(job.value(k) for k in keys), accuracy, gain,
                 _pct(m.get("regular_ppl_drift"), 2), trainable, goals]  # fmt: skip
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


def plot_sweep(jobs: list[Job], path: Path) -> None:
    """Task accuracy, control drift and trainable parameters, against rank when rank is swept.

    Jobs that differ only in their seeds are drawn as one mean with a standard-deviation error
    bar, each seed as a point beside it.
    """
    done = [j for j in jobs if task_metric(j.metrics) in j.metrics]
    keys = swept_keys(jobs)
    panels = [
        ("task accuracy (%)", lambda m: 100 * m[task_metric(m)]),
        ("control ppl drift (%)", lambda m: 100 * m["regular_ppl_drift"] if "regular_ppl_drift" in m else None),
        ("trainable parameters", lambda m: m["trainable_params"]),
    ]
    figure = Figure(figsize=(13, 4))
    all_axes = figure.subplots(1, 3)
    for axes, (title, value) in zip(all_axes, panels, strict=True):
        if RANK_KEY in keys:
            _plot_against_rank(axes, done, [k for k in keys if k not in (RANK_KEY, *SEED_KEYS)], value)
        else:
            _plot_groups(axes, done, keys, value)
        axes.set_title(title)
    bases = [j.metrics[f"base_{task_metric(j.metrics)}"] for j in done if f"base_{task_metric(j.metrics)}" in j.metrics]
    if bases and len(set(bases)) == 1:  # every job of a sweep over one base starts from the same accuracy
        all_axes[0].axhline(100 * bases[0], linestyle=":", color="black", label="base")
    all_axes[1].axhline(100 * GOAL_MAX_DRIFT, linestyle=":", color="red", label="goal (max)")
    all_axes[2].set_yscale("log")
    for axes in all_axes:
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    figure.tight_layout()
    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=110))


def _mean_and_sd(values: list[float]) -> tuple[float, float]:
    stats = Stats.of(values)
    return stats.mean, stats.sd or 0.0


def _plot_groups(axes, jobs: list[Job], keys: list[str], value) -> None:
    """One bar per group (its mean; an error bar of one sd over seeds), each job as a point."""
    groups = group_jobs(jobs, keys)
    for x, members in enumerate(groups.values()):
        values = [v for v in (value(j.metrics) for j in members) if v is not None]
        if not values:
            continue
        mean, sd = _mean_and_sd(values)
        axes.bar(x, mean, color="tab:blue", alpha=0.6, yerr=sd if len(values) > 1 else None, capsize=4)
        if len(values) > 1:
            axes.plot([x] * len(values), values, "k.", alpha=0.7)
    axes.set_xticks(range(len(groups)), list(groups))
    axes.tick_params(axis="x", labelrotation=30)


def _plot_against_rank(axes, jobs: list[Job], series_keys: list[str], value) -> None:
    """One line per combination of the other swept keys; jobs without adapters as flat lines.

    Seeds of one rank: their mean with an sd error bar, each seed as a point.
    """
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        groups.setdefault(", ".join(f"{k}={job.value(k)}" for k in series_keys) or "LoRA", []).append(job)
    ranks = set()
    for name, members in groups.items():
        by_rank: dict[int, list[float]] = {}
        for job in (j for j in members if j.adapts and value(j.metrics) is not None):
            by_rank.setdefault(int(job.value(RANK_KEY)), []).append(value(job.metrics))
        if by_rank:
            xs = sorted(by_rank)
            means, sds = zip(*(_mean_and_sd(by_rank[r]) for r in xs), strict=True)
            seeded = any(len(v) > 1 for v in by_rank.values())
            line = axes.errorbar(xs, means, yerr=sds if seeded else None, marker="o", capsize=3, label=name)
            if seeded:
                points = [(r, v) for r in xs for v in by_rank[r]]
                axes.plot(*zip(*points, strict=True), ".", color=line.lines[0].get_color(), alpha=0.5)
            ranks.update(xs)
        flat = [value(j.metrics) for j in members if not j.adapts and value(j.metrics) is not None]
        if flat:
            axes.axhline(statistics.fmean(flat), linestyle="--", color="grey", label=f"{name} (no adapters)")
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted(ranks), [str(r) for r in sorted(ranks)])
    axes.set_xlabel("LoRA rank r")


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


class SweepReport(Callback):
    """Hydra callback: refresh the sweep report after each job of a multirun and when it ends."""

    def on_job_end(self, config: DictConfig, job_return, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        try:
            write_sweep_report(Path(config.hydra.sweep.dir))
        except Exception:  # the job itself finished; the final report is written at sweep end
            log.exception("could not refresh the sweep report")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        jobs = write_sweep_report(Path(config.hydra.sweep.dir))
        log.info("sweep report of %d job(s): %s", len(jobs), Path(config.hydra.sweep.dir) / "REPORT.md")
