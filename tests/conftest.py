"""Shared fixtures: compose the real Hydra config with outputs pointed at a temp directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from minituner.base_store import CONF_DIR

# Short, fast settings for end-to-end runs of the tiny preset.
QUICK = [
    "model=tiny",
    "trainer.max_steps=3",
    "trainer.max_epochs=-1",
    "trainer.val_check_interval=3",
    "trainer.check_val_every_n_epoch=null",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
]


def save_tiny_base(directory: Path, dropout: float = 0.0) -> Path:
    """An untrained base of the ``model=tiny`` shape, for tests that need its shape and hash, not its skill."""
    import torch

    from minituner.base_store import save_base
    from minituner.model import MiniGPT, MiniGPTConfig

    torch.manual_seed(0)
    save_base(MiniGPT(MiniGPTConfig(n_layer=1, n_head=2, d_model=16, d_ff=32, dropout=dropout)), directory, {})
    return directory


def compose_config(overrides: list[str], tmp_path: Path, run: str = "run") -> DictConfig:
    """The `train` config as Hydra composes it, with every output under ``tmp_path``."""
    paths = [f"paths.outputs_dir={tmp_path}/outputs", f"paths.output_dir={tmp_path}/{run}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=paths + overrides)


@pytest.fixture
def make_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    def make(*overrides: str) -> DictConfig:
        return compose_config(list(overrides), tmp_path)

    return make
