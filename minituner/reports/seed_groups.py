"""Seed statistics of a sweep: jobs that differ only in their seeds form one group.

A training result is one draw from a distribution. When a multirun sweeps ``seed`` and/or
``base.seed``, each group (one setting of the other swept keys) gets n, mean, standard deviation,
min, max and a 95% Student-t confidence interval of every numeric figure, and it meets the
phase's goals only when its **worst** seed does.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass

SEED_KEYS = ("seed", "base.seed")
# two-sided 95% quantiles of Student's t, by degrees of freedom (n - 1)
T_975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)


def t_quantile_975(degrees_of_freedom: int) -> float:
    """The 97.5% quantile of Student's t (exact to 3 decimals up to 30 degrees, then ~1.96 + 2.4/df)."""
    if degrees_of_freedom < 1:
        raise ValueError("a confidence interval needs at least 2 values")
    if degrees_of_freedom <= len(T_975):
        return T_975[degrees_of_freedom - 1]
    return 1.95996 + 2.4 / degrees_of_freedom  # within 0.002 of the exact value beyond 30


@dataclass(frozen=True)
class Stats:
    """Summary of one figure over the seeds of a group (``sd``/``ci95`` are None for one value)."""

    n: int
    mean: float
    sd: float | None
    min: float
    max: float
    ci95: float | None  # half-width: the interval is mean +- ci95

    @classmethod
    def of(cls, values: list[float]) -> Stats:
        """The statistics of ``values`` (sample standard deviation, t-based interval)."""
        n = len(values)
        sd = statistics.stdev(values) if n > 1 else None
        ci = t_quantile_975(n - 1) * sd / math.sqrt(n) if sd is not None else None
        return cls(n, statistics.fmean(values), sd, min(values), max(values), ci)


SeedGroup = tuple[str, list[dict], dict[str, Stats]]  # label, rows of its finished jobs, their statistics


def seed_keys(keys: list[str]) -> list[str]:
    """The swept keys that are seeds."""
    return [k for k in keys if k in SEED_KEYS]


def group_label(job, keys: list[str]) -> str:
    """``key=value, ...`` of the non-seed swept keys (``all jobs`` when only seeds are swept)."""
    return ", ".join(f"{k}={job.value(k)}" for k in keys if k not in SEED_KEYS) or "all jobs"


def group_jobs(jobs: list, keys: list[str]) -> dict[str, list]:
    """Jobs by :func:`group_label`, in the order their groups first appear."""
    groups: dict[str, list] = {}
    for job in jobs:
        groups.setdefault(group_label(job, keys), []).append(job)
    return groups


def group_stats(rows: list[dict]) -> dict[str, Stats]:
    """Statistics of every numeric column that the rows (finished jobs of one group) all have."""
    columns = [k for k, v in rows[0].items() if isinstance(v, int | float) and not isinstance(v, bool)]
    return {
        k: Stats.of([float(r[k]) for r in rows])
        for k in columns
        if k != "job" and all(isinstance(r.get(k), int | float) and not isinstance(r.get(k), bool) for r in rows)
    }


def worst_seed_meets(rows: list[dict]) -> bool | None:
    """Whether every seed of a group meets the goals (None when the goals do not apply)."""
    verdicts = [r["meets_goals"] for r in rows if "meets_goals" in r]
    return all(verdicts) if verdicts and len(verdicts) == len(rows) else None


def groups_csv_text(groups: list[SeedGroup]) -> str:
    """``sweep_groups.csv``: per group n, then mean, sd, min, max and ci95 of every figure."""
    figures = list(dict.fromkeys(k for _, _, stats in groups for k in stats))
    header = ["group", "n", "meets_goals_worst_seed"]
    header += [f"{k}_{s}" for k in figures for s in ("mean", "sd", "min", "max", "ci95")]
    rows = []
    for label, finished, stats in groups:
        row = {"group": label, "n": len(finished), "meets_goals_worst_seed": worst_seed_meets(finished)}
        for k, st in stats.items():
            row |= {f"{k}_{name}": getattr(st, name) for name in ("mean", "sd", "min", "max", "ci95")}
        rows.append({k: ("" if v is None else v) for k, v in row.items()})
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _spread(stats: Stats | None, digits: int = 1) -> str:
    """``mean ± sd% [ci low, ci high]`` in percent (only ``mean%`` for a single value)."""
    if stats is None:
        return "-"
    if stats.sd is None:
        return f"{100 * stats.mean:.{digits}f}%"
    low, high = 100 * (stats.mean - stats.ci95), 100 * (stats.mean + stats.ci95)
    return f"{100 * stats.mean:.{digits}f} ± {100 * stats.sd:.{digits}f}% [{low:.{digits}f}, {high:.{digits}f}]"


def groups_markdown(groups: list[SeedGroup]) -> str:
    """The REPORT.md section of a seed sweep: mean ± sd [95% CI], the worst seed, and the goals."""
    lines = [
        "## Seed statistics",
        "",
        "Jobs that differ only in their seeds form one group: mean ± sd [95% Student-t confidence",
        "interval] over its seeds, the worst seed (lowest accuracy, highest drift), and the goals judged",
        "on the **worst seed** (a group meets them only if every seed does). Every figure per group",
        "(n, mean, sd, min, max, ci95) is in `sweep_groups.csv`.",
        "",
        "| group | n | task acc | worst acc | control drift | worst drift | goals (worst seed) |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, finished, stats in groups:
        task = next((t for t in ("label_acc", "irregular_acc") if t in stats), None)
        drift = stats.get("regular_ppl_drift")
        goals = {True: "met", False: "missed"}.get(worst_seed_meets(finished), "-")
        cells = [
            label,
            str(len(finished)),
            _spread(stats.get(task)),
            f"{100 * stats[task].min:.1f}%" if task else "-",
            _spread(drift, digits=2),
            f"{100 * drift.max:.2f}%" if drift else "-",
            goals,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_findings(groups: list[SeedGroup], goal_gain_points: float, goal_max_drift: float) -> list[str]:
    """The findings of a seed sweep, per group: the best mean accuracy, and the goals on the worst seed."""
    scored = [(label, rows, stats) for label, rows, stats in groups if rows]
    if not scored:
        return ["No job has finished yet."]
    task = "label_acc" if "label_acc" in scored[0][2] else "irregular_acc"
    label, _, stats = max(scored, key=lambda g: g[2][task].mean)
    lines = [
        f"Highest mean task accuracy: {label} ({100 * stats[task].mean:.1f}% over {stats[task].n} seed(s), "
        f"worst seed {100 * stats[task].min:.1f}%)."
    ]
    goals = f"(gain >= {goal_gain_points:.0f} points, drift <= {goal_max_drift:.0%})"
    meeting = [(label, rows) for label, rows, _ in scored if worst_seed_meets(rows)]
    if meeting:
        cheapest = min(meeting, key=lambda g: g[1][0].get("trainable_params", 0))
        lines.append(f"Fewest trainable parameters while every seed meets the goals {goals}: {cheapest[0]}.")
    elif any(worst_seed_meets(rows) is not None for _, rows, _ in scored):
        lines.append(f"No group meets both goals {goals} on its worst seed.")
    return lines
