"""Which pretrained base a config trains or fine-tunes, and where it lives."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from minituner.config.identity import without_import_paths
from minituner.config.nodes import model_config
from minituner.config.shipped import load_regime
from minituner.store.base_cache import BaseIdentity, cache_entry
from minituner.store.keys import content_key

# Trainer settings that change what pre-training produces, so they enter the cache key.
KEYED_TRAINER_FIELDS = ("max_steps", "max_epochs", "fast_dev_run", "limit_train_batches")


def trains_base(cfg: DictConfig) -> bool:
    """Whether the run trains a base from scratch (``regime=pretrain`` or ``pretrain_packed``)."""
    return not cfg.regime.needs_base


def pretrain_recipe(cfg: DictConfig) -> DictConfig:
    """The pre-training regime that makes this config's base.

    A run that trains a base uses its own (possibly overridden) regime; any other regime's
    base is made with ``conf/regime/<base.recipe>.yaml`` as shipped.
    """
    if trains_base(cfg):
        return cfg.regime
    return load_regime(cfg.base.get("recipe", "pretrain"))


def base_seed(cfg: DictConfig) -> int:
    """Seed of the base: the run's seed when pretraining, ``base.seed`` otherwise."""
    return cfg.seed if trains_base(cfg) else cfg.base.seed


def base_identity(cfg: DictConfig) -> BaseIdentity:
    """What determines the weights of the base this config trains or needs."""
    recipe = pretrain_recipe(cfg)
    trainer = {k: cfg.trainer.get(k) for k in KEYED_TRAINER_FIELDS}
    if not trains_base(cfg):  # the build inherits the recipe's step limits
        trainer.update(max_steps=recipe.max_steps, max_epochs=recipe.max_epochs)
    return BaseIdentity(
        model=model_config(cfg),
        corpus=OmegaConf.to_container(cfg.data.corpus, resolve=True),
        recipe=without_import_paths(OmegaConf.to_container(recipe, resolve=True)),
        seed=base_seed(cfg),
        trainer=trainer,
    )


def base_dir_for(cfg: DictConfig) -> Path:
    """Directory of the base: ``base.path`` when set, else its cache entry."""
    if cfg.base.path:
        return Path(cfg.base.path)
    dev_run = bool(cfg.trainer.get("fast_dev_run"))
    return cache_entry(Path(cfg.paths.base_cache_dir), cfg.model.name, base_identity(cfg), dev_run)


def shipped_dir(cfg: DictConfig) -> Path | None:
    """``paths.shipped_dir``: where the shipped base and reference adapter are (None: never use them)."""
    value = OmegaConf.select(cfg, "paths.shipped_dir")
    return Path(str(value)) if value else None


# LoRA variants written into a reference adapter's key only when switched on, so that a plain LoRA
# recipe's key (and the shipped reference adapter) does not depend on them.
LORA_VARIANT_DEFAULTS = {"dora": False, "init": "default", "loftq_iters": 1}


def reference_run_name(cfg: DictConfig) -> str:
    """The preview's reference adapter run: ``<base dir name>-<key of the LoRA recipe and seed>``."""
    recipe = without_import_paths(OmegaConf.to_container(cfg.regime, resolve=True))
    lora = OmegaConf.to_container(cfg.lora, resolve=True)
    lora = {k: v for k, v in lora.items() if LORA_VARIANT_DEFAULTS.get(k, object()) != v}
    key = content_key({"lora": lora, "regime": recipe, "seed": cfg.seed})
    return f"{base_dir_for(cfg).name}-{key}"
