"""``resume=<run dir>``: continue a run from its newest whole checkpoint, or do nothing if it finished.

Checks run before any work: the directory must exist; a finished run (``metrics.json`` without
``stopped_by_signal``) is left as it is; checkpoints that are torn or corrupt are skipped with
a warning; the composed config must equal the one the checkpoint was written with (every
difference is listed), so a resumed run cannot silently become another experiment.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from minituner.config.errors import ConfigError
from minituner.config.identity import without_import_paths
from minituner.store.checkpoint_io import CheckpointError, newest_valid_checkpoint, read_state

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
RUN_MARKERS = (".hydra/config.yaml", "manifest.json")  # written as a run starts (Hydra, the manifest callback)
# Keys that may differ between the interrupted run and its resumption: where things are written
# and how often checkpoints are taken, nothing that changes what is trained.
# (The loggers' save_dir is the run directory: a run moved or copied elsewhere still resumes.)
FREE_KEYS = ("resume", "paths", "trainer.default_root_dir", "trainer.enable_progress_bar", "callbacks.checkpoint",
             "callbacks.progress_bar", "callbacks.config_tree", "logger.tensorboard.save_dir",
             "logger.csv.save_dir", "logger.wandb.save_dir", "logger.mlflow.tracking_uri")  # fmt: skip


def resumable_config(cfg: DictConfig) -> dict:
    """The resolved config as a plain dict, without the keys a resumed run may change or import paths."""
    plain = without_import_paths(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False))
    for key in FREE_KEYS:
        *parents, leaf = key.split(".")
        node = plain
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return plain


def is_run_directory(directory: Path) -> bool:
    """Whether ``directory`` holds a minituner run (one of ``RUN_MARKERS``)."""
    return any((Path(directory) / name).is_file() for name in RUN_MARKERS)


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict) and value:
        return {k: v for key, sub in value.items() for k, v in _flatten(sub, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): value}


def config_changes(saved: dict, current: dict, saved_as: str = "in the checkpoint") -> list[str]:
    """One line per key whose value differs between ``saved`` and ``current`` (dotted keys).

    ``saved_as`` says where the saved config comes from, e.g. ``seed: 1234 in the checkpoint, 7 now``.
    """
    before, after = _flatten(saved), _flatten(current)
    lines = []
    for key in sorted(before.keys() | after.keys()):
        if key not in after:
            lines.append(f"{key}: {before[key]!r} {saved_as}, absent now")
        elif key not in before:
            lines.append(f"{key}: absent {saved_as}, {after[key]!r} now")
        elif before[key] != after[key]:
            lines.append(f"{key}: {before[key]!r} {saved_as}, {after[key]!r} now")
    return lines


@dataclass
class ResumePlan:
    """What a resumed run does: nothing (``finished_metrics``), or fit from ``checkpoint`` (None: step 0)."""

    checkpoint: Path | None = None
    finished_metrics: dict | None = None


def _finished_metrics(run_dir: Path) -> dict | None:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) and "stopped_by_signal" not in metrics else None


def plan_resume(cfg: DictConfig) -> ResumePlan:
    """Decide how ``resume=<run dir>`` continues (the run directory is ``paths.output_dir``).

    Raises:
        ConfigError: The directory does not exist, its checkpoints are all unusable, or the
            config differs from the checkpoint's (every changed key listed).
    """
    run_dir = Path(cfg.paths.output_dir)
    if not is_run_directory(run_dir):
        raise ConfigError([f"resume={cfg.resume!r}: {run_dir} is not a run directory"])
    finished = _finished_metrics(run_dir)
    if finished is not None:
        log.warning("resume=%s: the run has finished (metrics.json): nothing to do", cfg.resume)
        return ResumePlan(finished_metrics=finished)
    try:
        checkpoint, skipped = newest_valid_checkpoint(run_dir / CHECKPOINT_DIR)
    except CheckpointError as error:
        raise ConfigError([f"resume={cfg.resume!r}: {error}"]) from error
    for reason in skipped:
        log.warning("skipping a checkpoint: %s", reason)
    if checkpoint is None:
        log.warning("resume=%s: no checkpoint in %s: training starts again from step 0", cfg.resume,
                    run_dir / CHECKPOINT_DIR)  # fmt: skip
        return ResumePlan()
    saved = read_state(checkpoint)["checkpoint"].get("minituner", {}).get("config", {})
    changes = config_changes(saved, resumable_config(cfg))
    if changes:
        raise ConfigError(
            [
                f"resume={cfg.resume!r}: the config differs from the one {checkpoint.name} was written with "
                "(resume with the original overrides, or start a new run):",
                *changes,
            ]  # fmt: skip
        )
    log.warning("resuming from %s", checkpoint)
    return ResumePlan(checkpoint=checkpoint)
