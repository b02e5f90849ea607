"""A Hydra callback that checks the run (or sweep) directory before Hydra writes anything into it.

Hydra creates the run directory, its ``.hydra/`` and ``train.log`` before the app's code runs,
so the checks that protect a user's directory must run earlier, in ``on_run_start``: a new run
goes only into a new or empty directory or a run of the same config, ``resume=`` must name a
run directory, and a directory another live process holds is refused with the holder named.
For ``minituner-train`` the whole config validation runs here (``base.path``, the trainer's
hardware...), for ``minituner-generate`` its prompts, adapters and base, for ``minituner-data`` its
data file. Each refusal prints its reason and exits 2 with nothing written.
"""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, open_dict

from minituner.config.destinations import run_dir_problems
from minituner.config.errors import ConfigError
from minituner.config.generation import plan_generation
from minituner.config.validation import inspection_problems, validate_config
from minituner.store.run_directory import busy_message, lock_holder

SWEEP_MARKER = "multirun.yaml"  # Hydra writes it into every sweep directory


def _refuse(message: str) -> None:
    print(f"Error: {message}", file=sys.stderr)
    sys.exit(2)


class RunDirectoryGuard(Callback):
    """Refuse a run directory that is not the run's to use (see the module docstring)."""

    def on_run_start(self, config: DictConfig, config_name: str | None = None, **kwargs: Any) -> None:
        if os.environ.get("LOCAL_RANK", "0") != "0":  # a DDP rank relaunched into rank 0's run directory
            return
        run_dir = Path(str(config.hydra.run.dir))
        holder = lock_holder(run_dir)
        if holder is not None:
            _refuse(busy_message(run_dir, holder))
        task = copy.deepcopy(config)
        with open_dict(task):
            task.pop("hydra")
            task.paths.output_dir = str(run_dir)  # what ${hydra:runtime.output_dir} will say
        if config_name == "train":  # minituner-train: the whole validation, before Hydra writes a byte
            try:
                validate_config(task)
            except ConfigError as error:
                _refuse(str(error))
        else:
            problems = run_dir_problems(task, run_dir)
            if problems:
                _refuse(str(ConfigError(problems)))
            if config_name == "generate":  # prompts, adapters, the base's context: before Hydra writes
                try:
                    plan_generation(task)
                except ConfigError as error:
                    _refuse(str(error))
            elif config_name == "inspect_data":  # the data file, before Hydra writes
                problems = inspection_problems(task)
                if problems:
                    _refuse(str(ConfigError(problems)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        # Hydra writes each job's .hydra/ and log before any job-level check could run, so a sweep
        # whose jobs another live process is running is refused here, before its first job
        for job_dir in sorted(p for p in sweep_dir.iterdir() if p.is_dir()):
            holder = lock_holder(job_dir)
            if holder is not None:
                _refuse(f"the sweep directory {sweep_dir} has a job running: {busy_message(job_dir, holder)}")
        if (sweep_dir / SWEEP_MARKER).is_file() or not any(sweep_dir.iterdir()):
            return
        names = sorted(p.name for p in sweep_dir.iterdir())
        _refuse(
            f"the sweep directory {sweep_dir} (hydra.sweep.dir) is not empty and is not a Hydra sweep (it "
            f"holds {', '.join(names[:5])}): choose another hydra.sweep.dir"
        )
