"""Who may use a run directory: a new run only a new or empty one (or its own), and one process at a time.

* A new run (not ``resume=``) is refused, before anything is written, a directory that holds
  files of something else or a run with a different config
  (``config.destinations.run_directory_problems``, with :data:`LOCK_FILE` and :data:`HYDRA_FILES`).
* :func:`run_lock`: a run holds ``<run dir>/.minituner-run.lock`` (an advisory ``flock`` plus
  the holder's pid, host, start time and command) for its lifetime; a second process on the
  same directory fails at once naming the holder. The kernel releases the lock when its holder
  dies, so a lock file left by a dead process is taken over, with a warning.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_FILE = ".minituner-run.lock"
HYDRA_FILES = {".hydra", "train.log"}  # what Hydra itself writes into a run directory as the run starts


class RunDirectoryBusy(RuntimeError):
    """Another live process holds the run directory; the message names it (pid, host, start time, command)."""


def lock_holder(run_dir: Path) -> dict | None:
    """Who holds ``run_dir``'s lock now (``pid``, ``host``, ``started``, ``command``); None when nobody does."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read_holder(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        holder = json.loads(os.read(fd, 65536).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        holder = None
    return holder if isinstance(holder, dict) else {}


def describe_holder(holder: dict) -> str:
    """``pid 123 on host, since 2026-12-02T16:00:00 (minituner-train ...)``."""
    text = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('started', '?')}"
    return text + (f" ({holder['command']})" if holder.get("command") else "")


def busy_message(run_dir: Path, holder: dict) -> str:
    """The error a second process on ``run_dir`` gets."""
    return (
        f"{run_dir} is in use by another minituner process: {describe_holder(holder)}. One process per run "
        "directory: wait for it to end (or stop it), or use another directory"
    )


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the ``with`` block.

    Raises:
        RunDirectoryBusy: At once, when a live process holds it (named in the message).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirectoryBusy(busy_message(run_dir, _read_holder(fd))) from None
        stale = _read_holder(fd)
        if stale:  # a holder that ended cleanly empties the file: this one died holding it
            log.warning(
                "taking over the lock of %s left by %s, which is no longer running", run_dir, describe_holder(stale)
            )
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        os.fsync(fd)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
