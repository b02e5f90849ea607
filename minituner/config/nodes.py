"""Typed objects built from nodes of the composed Hydra config."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from minituner.lora.inject import LoRAConfig
from minituner.model.minigpt import MiniGPTConfig


def model_config(cfg: DictConfig) -> MiniGPTConfig:
    """The ``MiniGPTConfig`` described by the ``model`` node (its ``name`` is a label only)."""
    fields = OmegaConf.to_container(cfg.model, resolve=True)
    fields.pop("name", None)
    return MiniGPTConfig(**fields)


def lora_config(cfg: DictConfig) -> LoRAConfig:
    """The ``LoRAConfig`` of the ``lora`` node, seeded with the run's seed."""
    return LoRAConfig(**OmegaConf.to_container(cfg.lora, resolve=True), seed=cfg.seed)
