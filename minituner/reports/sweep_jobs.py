"""The jobs of a Hydra multirun as the sweep report reads them: overrides, status, metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

RANK_KEY = "lora.r"
GOAL_GAIN_POINTS = 10.0  # the phase's goals: task accuracy up >= 10 points ...
GOAL_MAX_DRIFT = 0.05  # ... with the control perplexity up <= 5%


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
