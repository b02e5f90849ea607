"""Checks of the paths a run reads its base from and writes to, before any work.

``base.path`` must be a base (or, for a base to be built there, a place minituner may write
one); the directories a run writes as a whole (the base it pretrains, its ``adapter/`` or
``model/``) must be new, empty or minituner's own of that kind; a new run's directory must be
new, empty or a run of the same config, and ``resume=`` must name a run directory.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException
from yaml import YAMLError

from minituner.config.base_request import base_dir_for, shipped_dir, trains_base
from minituner.config.identity import resumable_config
from minituner.store.artifacts import readable_directory
from minituner.store.base_cache import CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE
from minituner.store.ownership import OwnershipError, artifact_kind, check_writable, listing
from minituner.store.resume import RUN_MARKERS, config_changes, is_run_directory
from minituner.store.run_directory import HYDRA_FILES, LOCK_FILE
from minituner.store.shipped import BASES, shipped_entry

BASE_FILES = (WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE)


def writable_problems(directory: Path, kind: str, key: str) -> list[str]:
    """Why a ``kind`` artifact may not be written at ``directory`` (``key`` names the setting that chose it)."""
    try:
        check_writable(directory, kind)
    except OwnershipError as error:
        return [f"{key}: {error}"]
    existing = next(p for p in (directory, *directory.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        return [f"{key}: cannot write {directory}: {existing} is not writable"]
    return []


def base_path_problems(cfg: DictConfig) -> list[str]:
    """``base.path``: where a pretraining run writes its base, or the base a fine-tune starts from."""
    path = OmegaConf.select(cfg, "base.path")
    if not path:
        return []
    directory = Path(str(path))
    if trains_base(cfg):
        return writable_problems(directory, "base", f"base.path={path!r}")
    source = readable_directory(directory)
    if not source.exists():
        if not cfg.base.build_if_missing:
            return [
                f"base.path={path!r} does not exist and base.build_if_missing=false: give a base directory, "
                "or allow base.build_if_missing=true to pretrain the base there"
            ]
        return writable_problems(directory, "base", f"base.path={path!r} (missing: the base would be built there)")
    if not source.is_dir():
        return [f"base.path={path!r} is a file, not a base directory"]
    missing = [name for name in BASE_FILES if not (source / name).is_file()]
    if not missing:
        return []
    kind = artifact_kind(source)
    found = f"minituner's {kind}" if kind else listing({p.name for p in source.iterdir()}) or "nothing"
    hint = " (an adapter goes on its base with regime=lora, or into it by minituner-merge)" * (kind == "adapter")
    return [
        f"base.path={path!r} is not a base directory: it has no {', '.join(missing)} (found: {found}){hint}; "
        "give a directory written by `minituner-train regime=pretrain`, a full fine-tune's model/ or "
        "minituner-merge"
    ]


def output_dir(cfg: DictConfig) -> Path | None:
    """The run directory (``paths.output_dir``), None when it cannot be resolved (composed outside Hydra)."""
    try:
        value = OmegaConf.select(cfg, "paths.output_dir", throw_on_resolution_failure=True)
    except OmegaConfBaseException:
        return None
    return Path(str(value)) if value else None


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
        return [
            f"{where} is not empty and is not a minituner run (it holds {listing(foreign)}): a new run goes "
            "into a new or empty directory; choose another hydra.run.dir"
        ]
    try:
        saved = _comparable(_saved_config(run_dir), run_dir)
        changes = config_changes(saved, _comparable(cfg, run_dir), saved_as="in that run")
    except (OSError, OmegaConfBaseException, YAMLError, ValueError, KeyError, TypeError) as error:
        return [
            f"{where} holds a run whose config cannot be read ({type(error).__name__}: {error}): "
            "choose another hydra.run.dir"
        ]
    if changes:
        shown = "; ".join(changes[:3]) + (f"; ... ({len(changes)} in all)" if len(changes) > 3 else "")
        return [
            f"{where} holds another run, with a different config ({shown}): continue that run with "
            f"resume={run_dir} and its own overrides, or choose another hydra.run.dir"
        ]
    return []


def run_dir_problems(cfg: DictConfig, run_dir: Path) -> list[str]:
    """``resume=`` must name a run directory; a new run's directory must be new, empty or a run of this config."""
    if cfg.get("resume"):
        if not is_run_directory(run_dir):
            return [f"resume={cfg.resume!r}: {run_dir} is not a run directory (no {' or '.join(RUN_MARKERS)})"]
        return []
    return run_directory_problems(run_dir, cfg)


def shipped_base(cfg: DictConfig) -> bool:
    """Whether the base ``cfg`` needs ships with minituner (installed into the cache when missing)."""
    return shipped_entry(shipped_dir(cfg), BASES, base_dir_for(cfg).name) is not None


def destination_problems(cfg: DictConfig) -> list[str]:
    """Every path problem of ``cfg``: its base, what it writes, its run directory."""
    problems = base_path_problems(cfg)
    if not OmegaConf.select(cfg, "base.path"):  # the cache entry
        cached = base_dir_for(cfg)
        if trains_base(cfg):
            problems += writable_problems(cached, "base", "paths.base_cache_dir")
        elif not cfg.base.build_if_missing and not (cached / CONFIG_FILE).is_file() and not shipped_base(cfg):
            problems.append(
                f"base.build_if_missing=false but no base checkpoint exists at {cached}: run "
                "`minituner-train regime=pretrain` first, set base.path to a base directory, or allow "
                "base.build_if_missing=true"
            )
    run_dir = output_dir(cfg)
    if run_dir is None:
        return problems
    if not trains_base(cfg):
        kind, name = ("adapter", "adapter") if cfg.regime.get("trainable") == "lora" else ("model", "model")
        problems += writable_problems(run_dir / name, kind, "paths.output_dir")
    return problems + run_dir_problems(cfg, run_dir)
