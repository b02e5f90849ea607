"""Who may use a run directory: a new run only a new or empty one (or its own), and one process at a time.

* :func:`run_directory_problems`: a new run (not ``resume=``) is refused, before anything is
  written, a directory that holds files of something else or a run with a different config.
* :func:`run_lock`: a run holds ``<run dir>/.minituner-run.lock`` (an advisory ``flock`` plus
  the holder's pid, host, start time and command) for its lifetime; a second process on the
  same directory fails at once naming the holder. The kernel releases the lock when its holder
  dies, so a lock file left by a dead process is taken over, with a warning.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import fcntl
import json
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from minituner.store.ownership import listing
from minituner.store.resume import config_changes, is_run_directory, resumable_config

log = logging.getLogger(__name__)

LOCK_FILE = ".minituner-run.lock"
HYDRA_FILES = {".hydra", "train.log"}  # what Hydra itself writes into a run directory as the run starts


class RunDirectoryBusy(RuntimeError):
    """Another live process holds the run directory; the message names it (pid, host, start time, command)."""


def _comparable(cfg: DictConfig, run_dir: Path) -> dict:
    """``cfg`` as :func:`resumable_config` compares it, with its output directory pinned to ``run_dir``."""
    pinned = copy.deepcopy(cfg)
    with open_dict(pinned):
        pinned.pop("hydra", None)
        OmegaConf.update(pinned, "paths.output_dir", str(run_dir), force_add=True)
    return resumable_config(pinned)


def _saved_config(run_dir: Path) -> DictConfig:
    """The config of the run in ``run_dir``: Hydra's ``.hydra/config.yaml``, else the manifest's (a library run)."""
    hydra_config = run_dir / ".hydra" / "config.yaml"
    if hydra_config.is_file():
        return OmegaConf.load(hydra_config)
    return OmegaConf.create(json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))["config"])


def run_directory_problems(run_dir: Path, cfg: DictConfig) -> list[str]:
    """Why a new run with ``cfg`` may not use ``run_dir``; [] when it may.

    Allowed: a missing or empty directory, one holding only what Hydra writes as the run starts,
    or minituner's run directory of the same config (a repeat of that run).
    """
    run_dir = Path(run_dir)
    where = f"the run directory {run_dir} (hydra.run.dir)"
    if not run_dir.exists():
        return []
    if not run_dir.is_dir():
        return [f"{where} is a file: choose another hydra.run.dir"]
    names = {p.name for p in run_dir.iterdir()} - {LOCK_FILE}
    if not is_run_directory(run_dir):
        foreign = names - HYDRA_FILES
        if not foreign:
            return []
        return [f"{where} is not empty and is not a minituner run (it holds {listing(foreign)}): a new run goes "
                "into a new or empty directory; choose another hydra.run.dir"]  # fmt: skip
    try:
        saved = _comparable(_saved_config(run_dir), run_dir)
        changes = config_changes(saved, _comparable(cfg, run_dir), saved_as="in that run")
    except (OSError, OmegaConfBaseException, YAMLError, ValueError, KeyError, TypeError) as error:
        return [f"{where} holds a run whose config cannot be read ({type(error).__name__}: {error}): "
                "choose another hydra.run.dir"]  # fmt: skip
    if changes:
        shown = "; ".join(changes[:3]) + (f"; ... ({len(changes)} in all)" if len(changes) > 3 else "")
        return [f"{where} holds another run, with a different config ({shown}): continue that run with "
                f"resume={run_dir} and its own overrides, or choose another hydra.run.dir"]  # fmt: skip
    return []


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
    return (f"{run_dir} is in use by another minituner process: {describe_holder(holder)}. One process per run "
            "directory: wait for it to end (or stop it), or use another directory")  # fmt: skip


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
            log.warning("taking over the lock of %s left by %s, which is no longer running", run_dir,
                        describe_holder(stale))  # fmt: skip
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
