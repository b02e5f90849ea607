"""The config of the pretraining run that builds a missing base for a fine-tune."""

from __future__ import annotations

import copy
from pathlib import Path

from omegaconf import DictConfig, open_dict

from minituner.config.base_request import pretrain_recipe
from minituner.store.resume import CHECKPOINT_DIR


def base_build_config(cfg: DictConfig) -> DictConfig:
    """The ``regime=pretrain`` run that makes the base ``cfg`` fine-tunes.

    Same model, data and trainer settings; the shipped recipe (``base.recipe``) as its regime and
    ``base.seed`` as its seed; it runs in ``<run dir>/base_build`` and writes the base where the
    fine-tune looks for it (``base.path`` when set, else the cache).
    """
    build_cfg = copy.deepcopy(cfg)
    with open_dict(build_cfg):
        build_cfg.regime = pretrain_recipe(cfg)
        build_cfg.seed = cfg.base.seed
        build_cfg.quant.scheme = "none"  # a base is trained in full precision; QLoRA quantizes it after
        build_cfg.base.dtype = "float32"  # ... and a half-precision base is cast after loading
        # in one process: under DDP, rank 0 builds it before the other ranks are launched
        build_cfg.trainer.devices, build_cfg.trainer.strategy = 1, "auto"
        # The fine-tune's own step limits must not cut the base's training short.
        for key in ("max_steps", "max_epochs", "val_check_interval", "check_val_every_n_epoch"):
            build_cfg.trainer[key] = build_cfg.regime[key]
        build_cfg.paths.output_dir = str(Path(cfg.paths.output_dir) / "base_build")
        # a resumed fine-tune whose base build was cut short continues that build too
        resumable = (Path(build_cfg.paths.output_dir) / CHECKPOINT_DIR).is_dir()
        build_cfg.resume = build_cfg.paths.output_dir if cfg.get("resume") and resumable else None
    return build_cfg
