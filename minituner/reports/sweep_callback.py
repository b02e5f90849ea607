"""The Hydra callback behind every multirun's report (registered in ``conf/hydra/default.yaml``).

It rewrites the report in the sweep directory after every job, so a sweep that dies half-way
still leaves the rows of the jobs that finished, and once more when the sweep ends.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from minituner.reports.sweep import write_sweep_report

log = logging.getLogger(__name__)


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
