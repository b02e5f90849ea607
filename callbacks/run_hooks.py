"""Hooks around a whole run, for the moments Lightning's fit loop does not see.

A run builds (or loads) the base before any Trainer exists, quantizes it and injects LoRA
between fit-free evaluations, and saves its artifacts after fit. Callbacks that must see those
moments (the memory snapshots after construction, the manifest's base and adapter hashes, a
failure outside ``fit``) also subclass ``RunHooks``; ``train`` calls them in order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig
from torch import nn

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What a run has built so far (filled in as it goes)."""

    cfg: DictConfig
    run_dir: Path
    overrides: list[str] = field(default_factory=list)
    model: nn.Module | None = None
    base: Any = None  # minituner.store.base_cache.LoadedBase of fine-tuning runs
    trainer: Any = None  # lightning.Trainer once built


class RunHooks:
    """No-op run hooks; override the ones a callback needs."""

    def on_run_start(self, run: RunContext) -> None:
        """The model is constructed (the base loaded or built); nothing trained yet."""

    def on_model_ready(self, run: RunContext) -> None:
        """The base is quantized and the adapters injected; fit is next."""

    def run_metrics(self) -> dict:
        """Entries this callback adds to ``metrics.json`` once fit has ended (none by default)."""
        return {}

    def on_run_end(self, run: RunContext, metrics: dict) -> None:
        """Training and testing finished and the artifacts are written."""

    def on_run_failed(self, run: RunContext, error: BaseException) -> None:
        """The run raised ``error`` (re-raised after the hooks)."""


RECORD_HOOKS = ("on_run_end", "on_run_failed")  # hooks that write the run's record


def is_main_process() -> bool:
    """True in single-process runs and on rank 0 of a distributed one (the rank that writes files)."""
    return rank_zero_only.rank == 0


def notify(callbacks: list, hook: str, *args) -> None:
    """Call ``hook`` on every callback that implements ``RunHooks``.

    A failing hook during ``on_run_failed`` is logged, never allowed to mask the original error.
    In a distributed run only rank 0 gets the hooks that write the run's record.
    """
    if hook in RECORD_HOOKS and not is_main_process():
        return
    for callback in callbacks:
        if not isinstance(callback, RunHooks):
            continue
        if hook != "on_run_failed":
            getattr(callback, hook)(*args)
            continue
        try:
            callback.on_run_failed(*args)
        except Exception:  # the run's own error matters more than this one
            log.exception("%s.on_run_failed raised", type(callback).__name__)
