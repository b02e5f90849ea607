"""``python -m minituner.apps.ship``: rebuild the shipped default base and reference adapter (``make shipped``).

Pretrains the base of the default config and trains the preview's reference LoRA adapter on it,
from scratch (the shipped copies are not used), in ``outputs/shipping/``; then copies both into
``minituner/shipped/`` with ``provenance.json``: each artifact's cache key and what it hashes,
the recipe, the files' SHA-256, and where it was made (torch version, CPU, CPU capability,
commit, date). Run it after a change that alters the default base's or the reference adapter's
key (``tests/test_shipped.py`` fails naming this command until it is run).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shutil
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from minituner.apps.runner import training_runs
from minituner.config.base_request import base_dir_for, base_identity, reference_run_name
from minituner.config.shipped import CONF_DIR
from minituner.store.artifacts import write_json_atomic
from minituner.store.provenance import git_state, host_info, package_versions
from minituner.store.shipped import (
    ADAPTER_FILES,
    BASE_FILES,
    BASES,
    PROVENANCE_FILE,
    REFERENCE_ADAPTERS,
    SHIPPED_DIR,
    copy_files,
    file_digests,
)

# metrics.json of the reference run without what only means something on the machine that ran it
LOCAL_KEYS = ("base_dir", "adapter_dir", "train_seconds")


def preview_config(outputs_dir: Path, overrides: tuple[str, ...] = ()) -> DictConfig:
    """The preview's config (the default one unless ``overrides``), outputs under ``outputs_dir``, nothing shipped."""
    overrides = [f"paths.outputs_dir={outputs_dir}", "paths.shipped_dir=null", *overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="preview", overrides=overrides)


def build(outputs_dir: Path, overrides: tuple[str, ...] = ()) -> tuple[DictConfig, Path, Path]:
    """Train the reference adapter (which pretrains the base first) as the preview would.

    Returns:
        The config, the base directory and the reference adapter's run directory.
    """
    cfg = preview_config(outputs_dir, overrides)
    run_dir = outputs_dir / REFERENCE_ADAPTERS / reference_run_name(cfg)
    children = [*overrides, "regime=lora", "quant=none", "paths.shipped_dir=null"]
    training_runs({run_dir: children}, str(outputs_dir))
    return cfg, base_dir_for(cfg), run_dir


def where_made() -> dict:
    """The torch version, CPU, CPU capability, commit and date the artifacts were made with."""
    host, git = host_info(), git_state()
    return {
        "torch": package_versions()["torch"],
        "cpu": host["cpu"],
        "cpu_capability": host["cpu_numerics"]["cpu_capability"],
        "commit": git["commit"],
        "uncommitted_changes": git["dirty"],
        "date": datetime.date.today().isoformat(),
    }


def ship(cfg: DictConfig, base_dir: Path, run_dir: Path, shipped_dir: Path = SHIPPED_DIR) -> dict:
    """Copy ``cfg``'s base and reference adapter into ``shipped_dir``, replacing what shipped before.

    ``shipped_dir`` is minituner's own (``minituner/shipped/``, or a test's stand-in): its ``bases/``
    and ``reference_adapters/`` hold only what this function wrote, and are replaced whole.
    """
    shutil.rmtree(shipped_dir / BASES, ignore_errors=True)
    shutil.rmtree(shipped_dir / REFERENCE_ADAPTERS, ignore_errors=True)
    base_copy = shipped_dir / BASES / base_dir.name
    base_copy.mkdir(parents=True)
    copy_files(base_dir, base_copy, BASE_FILES)
    adapter_copy = shipped_dir / REFERENCE_ADAPTERS / run_dir.name
    (adapter_copy / "adapter").mkdir(parents=True)
    copy_files(run_dir / "adapter", adapter_copy / "adapter", ADAPTER_FILES)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    write_json_atomic(adapter_copy / "metrics.json", {k: v for k, v in metrics.items() if k not in LOCAL_KEYS})
    identity = base_identity(cfg)
    provenance = {
        "made_by": "make shipped (python -m minituner.apps.ship)",
        "made_on": where_made(),
        "base": {
            "name": base_dir.name,
            "key": identity.key(),
            "identity": dataclasses.asdict(identity),
            "sha256": file_digests(base_copy),
        },
        "reference_adapter": {
            "name": run_dir.name,
            "lora": OmegaConf.to_container(cfg.lora, resolve=True),
            "regime": cfg.regime.name,
            "seed": cfg.seed,
            "sha256": file_digests(adapter_copy / "adapter"),
        },
    }
    write_json_atomic(shipped_dir / PROVENANCE_FILE, provenance)
    return provenance


def main() -> None:
    """Entry point of ``python -m minituner.apps.ship`` (``make shipped``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outputs-dir", type=Path, default=Path("outputs/shipping"))
    args = parser.parse_args()
    if args.outputs_dir.exists():
        raise SystemExit(f"{args.outputs_dir} exists: remove it first, so that nothing cached is reused")
    provenance = ship(*build(args.outputs_dir))
    print(json.dumps(provenance, indent=2))


if __name__ == "__main__":
    main()
