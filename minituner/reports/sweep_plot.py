"""``sweep.png``: task accuracy, control drift and trainable parameters of a sweep's jobs."""

from __future__ import annotations

import statistics
from pathlib import Path

from matplotlib.figure import Figure

from minituner.reports.seed_groups import SEED_KEYS, Stats, group_jobs
from minituner.reports.sweep_jobs import GOAL_MAX_DRIFT, RANK_KEY, Job, swept_keys, task_metric
from minituner.store.artifacts import write_atomic


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
