"""Start minituner's console scripts as child processes, the way a user runs them.

The preview trains its runs in processes of their own (so their memory figures do not mix), the
benchmarks time runs as launched from a shell, and the tests check exit codes, signals and
artifacts of real processes: all of them go through here.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

APPS = {
    "train": "train", "preview": "preview", "count": "count", "merge": "merge", "generate": "generate",
    "sweep-report": "sweep_report", "data": "data",
}  # fmt: skip


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
