"""The default base and the reference adapter that ship with minituner, as a published checkpoint would.

Every CPU pretrains a slightly different base (float rounding differs between kernels), so a
base built on the user's machine gives other figures than anyone else's. minituner ships the base
of the default config and the reference LoRA adapter trained on it (``minituner/shipped/``, built
by ``make shipped``); a run that needs exactly that base (same cache key) installs the shipped
copy into its cache instead of pretraining, and the preview does the same for its reference
adapter. Any other key is built as always. ``provenance.json`` records how each was made.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from minituner.store.artifacts import sha256_file, write_directory_atomic, write_json_atomic

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parents[1] / "shipped"
PROVENANCE_FILE = "provenance.json"
BASES, REFERENCE_ADAPTERS = "bases", "reference_adapters"
BASE_FILES = ("model.safetensors", "config.json", "tokenizer.json")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def shipped_entry(shipped_dir: Path | None, kind: str, name: str) -> Path | None:
    """The shipped ``kind`` (``bases`` or ``reference_adapters``) called ``name``, or None when none ships."""
    if shipped_dir is None:
        return None
    entry = Path(shipped_dir) / kind / name
    return entry if entry.is_dir() else None


def copy_files(source: Path, destination: Path, names: tuple[str, ...]) -> None:
    """Copy the files ``names`` from ``source`` into the existing directory ``destination``."""
    for name in names:
        shutil.copyfile(source / name, destination / name)


def install_shipped_base(shipped_dir: Path | None, directory: Path) -> bool:
    """Copy the shipped base named like ``directory`` (``<model>-<key>``) into it; whether one ships.

    The copy is written atomically like any base; ``load_base`` then checks its weights' SHA-256.
    """
    source = shipped_entry(shipped_dir, BASES, Path(directory).name)
    if source is None:
        return False
    write_directory_atomic(Path(directory), lambda staging: copy_files(source, staging, BASE_FILES), "base")
    log.info("installed the shipped base %s into %s (no pretraining needed)", source.name, directory)
    return True


def install_shipped_reference(shipped_dir: Path | None, run_dir: Path, base_dir: Path) -> bool:
    """Install the shipped reference adapter named like ``run_dir`` there; whether one ships.

    ``run_dir`` gets ``adapter/`` and the ``metrics.json`` of the run that trained it, its paths
    pointing at this machine's copies (``base_dir``: where the shipped base was installed).
    """
    source = shipped_entry(shipped_dir, REFERENCE_ADAPTERS, Path(run_dir).name)
    if source is None:
        return False
    run_dir = Path(run_dir)
    adapter = source / "adapter"
    write_directory_atomic(run_dir / "adapter", lambda staging: copy_files(adapter, staging, ADAPTER_FILES), "adapter")
    metrics = json.loads((source / "metrics.json").read_text())
    metrics |= {"base_dir": str(base_dir), "adapter_dir": str(run_dir / "adapter")}
    write_json_atomic(run_dir / "metrics.json", metrics)
    log.info("installed the shipped reference adapter %s into %s", source.name, run_dir)
    return True


def read_provenance(shipped_dir: Path = SHIPPED_DIR) -> dict:
    """The shipped artifacts' provenance ({} when nothing ships)."""
    path = Path(shipped_dir) / PROVENANCE_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def file_digests(directory: Path) -> dict[str, str]:
    """SHA-256 of every file directly in ``directory``, by name."""
    return {p.name: sha256_file(p) for p in sorted(Path(directory).iterdir()) if p.is_file()}
