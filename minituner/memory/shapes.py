"""The block linears of a MiniGPT shape and the ones a LoRA config adapts, without building a model."""

from __future__ import annotations

from minituner.lora.inject import LoRAConfig, matches_target
from minituner.model.minigpt import MiniGPTConfig


def block_linears(config: MiniGPTConfig) -> dict[str, tuple[int, int]]:
    """Every transformer-block linear of a MiniGPT of this shape: name -> (out, in) features."""
    d, ff = config.d_model, config.d_ff
    shapes = {}
    for i in range(config.n_layer):
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):
            shapes[f"blocks.{i}.attn.{proj}"] = (d, d)
        shapes[f"blocks.{i}.mlp.fc_in"] = (ff, d)
        shapes[f"blocks.{i}.mlp.fc_out"] = (d, ff)
    return shapes


def adapted_linears(config: MiniGPTConfig, lora: LoRAConfig) -> list[str]:
    """The block linears that ``lora`` adapts, chosen by the same rules as injection."""
    targets = lora.expanded_targets()
    return [
        name
        for name in block_linears(config)
        if matches_target(name, targets)
        and (lora.layers_to_transform is None or int(name.split(".")[1]) in lora.layers_to_transform)
    ]
