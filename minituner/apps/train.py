"""``minituner-train [overrides]``: a thin ``@hydra.main`` around :func:`minituner.training.pipeline.train`."""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from minituner.callbacks.run_hooks import is_main_process
from minituner.config.errors import ConfigError
from minituner.config.shipped import CONF_DIR
from minituner.store.run_directory import RunDirectoryBusy
from minituner.training.pipeline import RunInterrupted, interrupted_exit_code, train
from minituner.training.terminal import quiet_library_notices, run_summary

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def main(cfg: DictConfig) -> None:
    """Console entry point ``minituner-train``: exit 2 for a bad config, 128 + signal when stopped."""
    quiet_library_notices()
    try:
        metrics = train(cfg)
    except (ConfigError, RunDirectoryBusy) as error:  # refused before any work
        log.error("%s", error)
        sys.exit(2)
    except RunInterrupted as error:
        log.error("%s", error)
        sys.exit(interrupted_exit_code(error.signal_name))
    if is_main_process():
        print(run_summary(cfg.paths.output_dir, metrics))
    if "stopped_by_signal" in metrics:  # saved, but unfinished: tell the caller (a scheduler, a shell)
        sys.exit(interrupted_exit_code(metrics["stopped_by_signal"]))


if __name__ == "__main__":
    main()
