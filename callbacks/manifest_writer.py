"""``manifest.json``: what produced a run, written when it starts and completed when it ends.

At the start: the composed config and the overrides, the seed, package versions, the git
commit and dirty flag, the host, and the SHA-256 of the base weights. At the end: the
adapter's (or model's) SHA-256, the final metrics and the artifact paths, and
``status: completed`` (``interrupted`` when a signal stopped training early, see
``callbacks/graceful_stop.py``) — or ``status: failed`` with the error when the run raises. Every write
is atomic, so the file is always a complete JSON document.
"""

from __future__ import annotations

import time
import traceback

import lightning as L
from minituner.callbacks.run_hooks import RunContext, RunHooks, is_main_process
from omegaconf import OmegaConf

from minituner.store.artifacts import write_json_atomic
from minituner.store.provenance import git_state, host_info, package_versions

MANIFEST_FILE = "manifest.json"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class ManifestWriter(L.Callback, RunHooks):
    """Write ``<run dir>/manifest.json`` at run start, and complete it at the end or on failure."""

    def __init__(self):
        self.manifest: dict = {}

    def on_run_start(self, run: RunContext) -> None:
        base = run.base
        self.manifest = {
            "status": "running",
            "started_at": _now(),
            "seed": run.cfg.seed,
            "overrides": run.overrides,
            "config": OmegaConf.to_container(run.cfg, resolve=True),
            "versions": package_versions(),
            "git": git_state(),
            "host": host_info(),
            "base": {
                "path": str(base.directory) if base is not None else None,
                "sha256": base.weights_sha256 if base is not None else None,
            },
        }
        if is_main_process():
            write_json_atomic(run.run_dir / MANIFEST_FILE, self.manifest)

    def on_run_end(self, run: RunContext, metrics: dict) -> None:
        if metrics.get("base_sha256") and not self.manifest["base"]["sha256"]:  # pretraining made the base
            self.manifest["base"] = {"path": metrics["base_dir"], "sha256": metrics["base_sha256"]}
        trained = {
            "adapter": (metrics.get("adapter_dir"), metrics.get("adapter_sha256")),
            "model": (metrics.get("model_dir"), metrics.get("model_sha256")),
        }
        self.manifest.update(
            status="interrupted" if "stopped_by_signal" in metrics else "completed",
            finished_at=_now(),
            metrics=metrics,
            artifacts={k: {"path": p, "sha256": h} for k, (p, h) in trained.items() if p},
        )
        write_json_atomic(run.run_dir / MANIFEST_FILE, self.manifest)

    def on_run_failed(self, run: RunContext, error: BaseException) -> None:
        if not self.manifest:  # failed before the model existed (e.g. while building the base)
            self.on_run_start(run)
        self.manifest.update(
            status="failed",
            finished_at=_now(),
            error={"type": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()},
        )
        write_json_atomic(run.run_dir / MANIFEST_FILE, self.manifest)
