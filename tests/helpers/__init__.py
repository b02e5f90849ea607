"""What the tests share: the quick settings, composing the real config, tiny bases, and running the apps."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from minituner.apps.runner import run_app, start_app
from minituner.config.shipped import CONF_DIR
from minituner.lora.adapter_io import save_adapter
from minituner.lora.inject import LoRAConfig, inject_lora
from minituner.lora.layer import adapter_parameters, lora_layers
from minituner.model.minigpt import MiniGPT, MiniGPTConfig
from minituner.store.base_cache import save_base

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
TINY_SHAPE = {"n_layer": 1, "n_head": 2, "d_model": 16, "d_ff": 32}  # conf/model/tiny.yaml
IDX = torch.randint(0, 256, (2, 16), generator=torch.Generator().manual_seed(0))  # a fixed batch of token ids
BASE_SHA = "ab" * 32


def compose_config(overrides: list[str], tmp_path: Path, run: str = "run") -> DictConfig:
    """The `train` config as Hydra composes it, with every output under ``tmp_path``."""
    paths = [f"paths.outputs_dir={tmp_path}/outputs", f"paths.output_dir={tmp_path}/{run}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=paths + overrides)


def save_tiny_base(directory: Path, dropout: float = 0.0) -> Path:
    """An untrained base of the ``model=tiny`` shape, for tests that need its shape and hash, not its skill."""
    torch.manual_seed(0)
    save_base(MiniGPT(MiniGPTConfig(**TINY_SHAPE, dropout=dropout)), directory, {})
    return directory


def run_train(tmp_path: Path, run: str, *overrides: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``minituner-train`` in ``tmp_path/run``, with the base cache and other outputs under ``tmp_path/outputs``."""
    return run_app(
        "train", f"hydra.run.dir={tmp_path}/{run}", f"paths.outputs_dir={tmp_path}/outputs", *overrides, timeout=timeout
    )


def start_train(tmp_path: Path, run: str, *overrides: str) -> subprocess.Popen:
    """:func:`run_train` without waiting (stdout discarded, stderr piped)."""
    return start_app("train", f"hydra.run.dir={tmp_path}/{run}", f"paths.outputs_dir={tmp_path}/outputs", *overrides)


def read_metrics(directory: Path) -> dict:
    """A run directory's ``metrics.json``."""
    return json.loads((directory / "metrics.json").read_text())


def cached_bases(tmp_path: Path) -> list[Path]:
    """The base directories in the cache (not the hidden lock files beside them)."""
    cache = tmp_path / "outputs/bases"
    return [p for p in cache.iterdir() if not p.name.startswith(".")] if cache.exists() else []


def read_csv(path: Path) -> list[dict]:
    """A CSV file's rows as dicts."""
    with path.open() as handle:
        return list(csv.DictReader(handle))


def base_model() -> MiniGPT:
    """The default-shape MiniGPT with seed-0 weights, in eval mode."""
    torch.manual_seed(0)
    return MiniGPT(MiniGPTConfig()).eval()


def trained_adapter(tmp_path: Path, config: LoRAConfig | None = None, name: str = "adapter", base_sha: str = BASE_SHA):
    """An adapter on :func:`base_model` with random non-zero weights, saved to ``tmp_path/name``."""
    config = config or LoRAConfig(target_modules="attn_qv")
    model = base_model()
    inject_lora(model, config)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in adapter_parameters(model).values():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        if config.bias != "none":
            next(iter(lora_layers(model).values())).base_layer.bias.add_(0.5)
    save_adapter(model, tmp_path / name, config, "minigpt-test", base_sha)
    return model, tmp_path / name


def users_directory(path: Path) -> Path:
    """A directory of the user's that minituner must never touch: ``notes.md`` and ``sub/thesis.txt``."""
    (path / "sub").mkdir(parents=True)
    (path / "notes.md").write_text("my notes\n")
    (path / "sub" / "thesis.txt").write_text("chapter 1\n")
    return path
