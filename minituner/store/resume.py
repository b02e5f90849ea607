"""``resume=<run dir>``: continue a run from its newest whole checkpoint, or do nothing if it finished.

Checks run before any work: the directory must exist; a finished run (``metrics.json`` without
``stopped_by_signal``) is left as it is; checkpoints that are torn or corrupt are skipped with
a warning; the run's config (as a plain dict, see ``config.identity.resumable_config``) must
equal the one the checkpoint was written with (every difference is listed), so a resumed run
cannot silently become another experiment.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from minituner.store.checkpoint_io import CheckpointError, newest_valid_checkpoint, read_state

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
RUN_MARKERS = (".hydra/config.yaml", "manifest.json")  # written as a run starts (Hydra, the manifest callback)


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


class ResumeError(ValueError):
    """``resume=`` cannot continue the run; ``problems`` says why (one line each)."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


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


def plan_resume(run_dir: Path, request: str, config: dict) -> ResumePlan:
    """Decide how ``resume=<request>`` continues the run in ``run_dir``.

    Args:
        run_dir: The run directory.
        request: The value of ``resume=`` as given (for the messages).
        config: The current run's config as compared with the checkpoint's.

    Raises:
        ResumeError: The directory is not a run, its checkpoints are all unusable, or the
            config differs from the checkpoint's (every changed key listed).
    """
    run_dir = Path(run_dir)
    if not is_run_directory(run_dir):
        raise ResumeError([f"resume={request!r}: {run_dir} is not a run directory"])
    finished = _finished_metrics(run_dir)
    if finished is not None:
        log.warning("resume=%s: the run has finished (metrics.json): nothing to do", request)
        return ResumePlan(finished_metrics=finished)
    try:
        checkpoint, skipped = newest_valid_checkpoint(run_dir / CHECKPOINT_DIR)
    except CheckpointError as error:
        raise ResumeError([f"resume={request!r}: {error}"]) from error
    for reason in skipped:
        log.warning("skipping a checkpoint: %s", reason)
    if checkpoint is None:
        log.warning(
            "resume=%s: no checkpoint in %s: training starts again from step 0", request, run_dir / CHECKPOINT_DIR
        )
        return ResumePlan()
    saved = read_state(checkpoint)["checkpoint"].get("minituner", {}).get("config", {})
    changes = config_changes(saved, config)
    if changes:
        intro = (
            f"resume={request!r}: the config differs from the one {checkpoint.name} was written with "
            "(resume with the original overrides, or start a new run):"
        )
        raise ResumeError([intro, *changes])
    log.warning("resuming from %s", checkpoint)
    return ResumePlan(checkpoint=checkpoint)
