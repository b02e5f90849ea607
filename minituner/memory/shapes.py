"""The block linears of a MiniGPT shape and the ones a LoRA config adapts, without building a model."""

from __future__ import annotations

from minituner.lora.inject import LoRAConfig, matches_target
from minituner.model.minigpt import MiniGPTConfig


def block_linears(config: MiniGPTConfig) -> dict[str, tuple[int, int]]:
    """Every transformer-block linear of a MiniGPT of this shape, in module order: name -> (out, in) features."""
    d, ff, kv = config.d_model, config.d_ff, config.kv_heads * config.head_dim
    attention = {"q_proj": (d, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, d)}
    if config.mlp == "swiglu":
        mlp = {"gate_proj": (ff, d), "up_proj": (ff, d), "down_proj": (d, ff)}
    else:
        mlp = {"fc_in": (ff, d), "fc_out": (d, ff)}
    shapes = {}
    for i in range(config.n_layer):
        shapes |= {f"blocks.{i}.attn.{name}": shape for name, shape in attention.items()}
        shapes |= {f"blocks.{i}.mlp.{name}": shape for name, shape in mlp.items()}
    return shapes


def norm_tensors(config: MiniGPTConfig) -> int:
    """Parameter tensors of one norm: LayerNorm's weight and bias, RMSNorm's weight."""
    return 2 if config.norm == "layernorm" else 1


def adapted_linears(config: MiniGPTConfig, lora: LoRAConfig) -> list[str]:
    """The block linears that ``lora`` adapts, chosen by the same rules as injection."""
    targets = lora.expanded_targets(config.mlp)
    return [
        name
        for name in block_linears(config)
        if matches_target(name, targets)
        and (lora.layers_to_transform is None or int(name.split(".")[1]) in lora.layers_to_transform)
    ]
