"""Typed objects built from nodes of the composed Hydra config."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from minituner.config.shipped import CONF_DIR
from minituner.lora.inject import LoRAConfig
from minituner.memory.activations import TrainingSetup
from minituner.memory.footprint import BASE_DTYPE_BYTES
from minituner.model.minigpt import MiniGPTConfig

# Keys of the ``model`` node that are not part of the network's shape: a label and how training runs it.
MODEL_RUN_KEYS = ("name", "activation_checkpointing")


def model_shape_fields(model: DictConfig) -> dict:
    """The ``model`` node as a plain dict of ``MiniGPTConfig`` fields (``MODEL_RUN_KEYS`` left out)."""
    fields = OmegaConf.to_container(model, resolve=True)
    for key in MODEL_RUN_KEYS:
        fields.pop(key, None)
    return fields


def model_config(cfg: DictConfig) -> MiniGPTConfig:
    """The ``MiniGPTConfig`` described by the ``model`` node."""
    return MiniGPTConfig(**model_shape_fields(cfg.model))


def model_preset(name: str) -> MiniGPTConfig:
    """The shape of the shipped model preset ``conf/model/<name>.yaml``."""
    return MiniGPTConfig(**model_shape_fields(OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")))


def activation_checkpointing(cfg: DictConfig) -> bool:
    """Whether the run recomputes each block in backward (``model.activation_checkpointing``)."""
    return bool(cfg.model.get("activation_checkpointing", False))


def lora_config(cfg: DictConfig) -> LoRAConfig:
    """The ``LoRAConfig`` of the ``lora`` node, seeded with the run's seed."""
    return LoRAConfig(**OmegaConf.to_container(cfg.lora, resolve=True), seed=cfg.seed)


def training_setup(cfg: DictConfig, device: str = "cpu") -> TrainingSetup:
    """What the activation model needs to know about a training run besides the model's shape."""
    lora = cfg.regime.trainable == "lora"
    return TrainingSetup(
        lora=lora_config(cfg) if lora else None,
        quantized=lora and cfg.quant.scheme != "none",
        base_bytes=BASE_DTYPE_BYTES[cfg.base.dtype] if lora else 4,
        checkpointing=activation_checkpointing(cfg),
        device=device,
    )
