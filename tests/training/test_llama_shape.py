"""The LLaMA-shaped preset trains like any other, and its memory is predicted to the byte."""

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from minituner.config.nodes import model_preset
from minituner.model.minigpt import MiniGPT
from minituner.store.base_cache import save_base
from minituner.training.pipeline import train
from tests.helpers import QUICK, compose_config


def test_llama_small_trains_qlora_and_its_activations_and_buckets_match_the_prediction(tmp_path):
    """QLoRA on every linear: the quantized path and the adapters' names (the unit tests cover the rest)."""
    torch.manual_seed(0)
    base = tmp_path / "base"
    save_base(MiniGPT(model_preset("llama_small")), base, {})
    overrides = [*QUICK, "model=llama_small", "regime=lora", f"base.path={base}", "quant=nf4_dq"]
    cfg = compose_config([*overrides, "lora.target_modules=all_linear"], tmp_path)
    train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    tensors = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    assert any(".mlp.gate_proj.lora_A." in key for key in tensors)
    config = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert config["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    memory = json.loads((run_dir / "memory.json").read_text())
    assert all(row["equal"] for row in memory["predicted_vs_measured"].values())
    assert memory["activations"]["predicted_bytes"] == memory["activations"]["measured_bytes"] > 0
