"""Start minituner's console scripts as child processes, the way a user runs them.

The preview trains its runs in processes of their own (so their memory figures do not mix), the
benchmarks time runs as launched from a shell, and the tests check exit codes, signals and
artifacts of real processes: all of them go through here.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from pathlib import Path

import torch

from minituner.training.terminal import PROGRESS_PREFIX

# Niceness of the runs started in the background beside a longer one: with all at the same priority
# on 2 cores, the longest run (the critical path) got a core only part of the time.
BACKGROUND_NICENESS = 10

APPS = {
    "train": "train",
    "preview": "preview",
    "count": "count",
    "merge": "merge",
    "generate": "generate",
    "sweep-report": "sweep_report",
    "data": "data",
}


def app_command(app: str, *args: str) -> list[str]:
    """The command line of ``minituner-<app> args...``.

    The console script beside this interpreter when it is installed there (a venv's ``bin/``),
    else ``python -m minituner.apps.<module>`` with this interpreter.
    """
    if app not in APPS:
        raise ValueError(f"unknown app {app!r}: one of {sorted(APPS)}")
    script = Path(sys.executable).parent / f"minituner-{app}"
    if script.is_file():
        return [str(script), *args]
    return [sys.executable, "-m", f"minituner.apps.{APPS[app]}", *args]


def run_app(
    app: str, *args: str, timeout: float | None = 600, check: bool = False, **kwargs
) -> subprocess.CompletedProcess:
    """Run ``minituner-<app> args...`` to the end, its output captured as text.

    Args:
        app: ``train``, ``preview``, ``count``, ``merge`` or ``sweep-report``.
        *args: Its command-line arguments (Hydra overrides for the Hydra apps).
        timeout: Seconds before the child is killed (``subprocess.TimeoutExpired``).
        check: Raise ``subprocess.CalledProcessError`` on a non-zero exit.
        **kwargs: Passed to ``subprocess.run`` (``cwd``, ``env``, ...).
    """
    return subprocess.run(
        app_command(app, *args), capture_output=True, text=True, timeout=timeout, check=check, **kwargs
    )


def start_app(app: str, *args: str, **kwargs) -> subprocess.Popen:
    """Start ``minituner-<app> args...`` without waiting: stdout discarded, stderr piped as text unless given."""
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    kwargs.setdefault("stderr", subprocess.PIPE)
    return subprocess.Popen(app_command(app, *args), text=True, **kwargs)


class RelayedApp:
    """A child app whose output is read line by line as it comes.

    The lines ``show`` picks are printed with ``label`` in front; the last ``keep`` lines are kept
    to explain a failure.

    Args:
        app: As for :func:`start_app`.
        label: Printed before each shown line (e.g. the run directory's name).
        *args: The app's command-line arguments.
        show: Which of its lines (stdout and stderr together) to print as they come.
        keep: How many of its last lines to keep.
        **kwargs: Passed to ``subprocess.Popen`` (``env``, ``cwd``, ...).
    """

    last_shown = time.monotonic()  # when any relayed app last printed a line (see ``wait_all``)

    def __init__(self, app: str, label: str, *args: str, show: Callable[[str], bool], keep: int = 40, **kwargs):
        self.label = label
        self.process = start_app(app, *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kwargs)
        self.tail: deque[str] = deque(maxlen=keep)
        self._reader = threading.Thread(target=self._relay, args=(label, show), daemon=True)
        self._reader.start()

    def _relay(self, label: str, show: Callable[[str], bool]) -> None:
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.tail.append(line)
            if show(line):
                print(f"  [{label}] {line if len(line) <= 200 else line[:199] + '…'}", flush=True)
                RelayedApp.last_shown = time.monotonic()

    def wait(self) -> int:
        """Wait for the child and for the last of its output; its exit code."""
        code = self.process.wait()
        self._reader.join()
        return code


def wait_all(children: list[RelayedApp], quiet_seconds: float = 8.0) -> list[int]:
    """Wait for every child; when none has shown a line for ``quiet_seconds``, say which still work.

    Returns:
        Their exit codes, in order.
    """
    started = RelayedApp.last_shown = time.monotonic()  # silence counts from now, not from an earlier wait
    while any(child.process.poll() is None for child in children):
        time.sleep(0.25)
        if time.monotonic() - RelayedApp.last_shown >= quiet_seconds:
            working = ", ".join(child.label for child in children if child.process.poll() is None)
            print(f"  ... still working ({time.monotonic() - started:.0f} s): {working}", flush=True)
            RelayedApp.last_shown = time.monotonic()
    return [child.wait() for child in children]


def training_milestone(line: str) -> bool:
    """A training child's progress lines (every few seconds), its milestones, and where it wrote its run."""
    milestones = ("no base at", "self-replay: the base wrote")
    return line.startswith((PROGRESS_PREFIX, "run directory:")) or any(m in line for m in milestones)


def start_training_runs(
    runs: dict[Path, list[str]], outputs_dir: str, background: Collection[Path] = ()
) -> dict[Path, RelayedApp]:
    """Start ``minituner-train`` once per run directory, all in parallel, each in its own process.

    Their progress lines are shown as they come, each with its run directory's name. The cores are
    shared out (``OMP_NUM_THREADS`` = cores / runs, unless set already): OpenMP threads of several
    processes spinning against each other on the same cores make each many times slower. The runs
    in ``background`` get a lower scheduling priority (nice +10, where the system has one), so that
    the longest run is not slowed by the short ones.
    """
    threads = str(max(1, (os.cpu_count() or 1) // len(runs)))
    env = os.environ | {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)}
    children = {
        run_dir: RelayedApp(
            "train",
            run_dir.name,
            *overrides,
            f"hydra.run.dir={run_dir}",
            f"paths.outputs_dir={outputs_dir}",
            show=training_milestone,
            env=env,
        )
        for run_dir, overrides in runs.items()
    }
    for run_dir in background if hasattr(os, "setpriority") else ():  # POSIX only
        with contextlib.suppress(OSError):  # already ended, or not allowed: it only costs time
            os.setpriority(os.PRIO_PROCESS, children[run_dir].process.pid, BACKGROUND_NICENESS)
    return children


def finish_training_runs(children: dict[Path, RelayedApp]) -> dict[Path, dict]:
    """Wait for the runs :func:`start_training_runs` started.

    Returns:
        Each run directory's metrics.

    Raises:
        RuntimeError: A run failed; names its command and shows its last lines.
    """
    for child, code in zip(children.values(), wait_all(list(children.values())), strict=True):
        if code != 0:
            tail = "\n".join(child.tail)
            raise RuntimeError(f"{' '.join(child.process.args)} failed (exit {code}); its last lines:\n{tail}")
    return {run_dir: json.loads((run_dir / "metrics.json").read_text()) for run_dir in children}


def training_runs(runs: dict[Path, list[str]], outputs_dir: str) -> dict[Path, dict]:
    """Run ``minituner-train`` once per run directory, all in parallel, and wait for them (their metrics)."""
    return finish_training_runs(start_training_runs(runs, outputs_dir))


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block on ``count`` torch threads, then give back the count it had."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
